"""The ``redaction`` processor: credentials in URLs, headers and error text never reach storage."""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from lqo.collector.components import factories
from lqo.collector.model.spanbatch import SpanBatch
from lqo.processors.redaction import RedactionConfig, RedactionProcessor

from .spans import attributes, batch_of, otlp_tracer

KEY = "AIzaSyD-EXAMPLE-0123456789abcdefghijkl"  # the shape of a Google API key


def _run(batch: SpanBatch, **config: Any) -> SpanBatch:
    return RedactionProcessor(RedactionConfig(**config)).process(batch)


def _with_status(batch: SpanBatch, messages: list[str | None]) -> SpanBatch:
    i = batch.table.schema.get_field_index("StatusMessage")
    table = batch.table.set_column(i, batch.table.schema.field(i), pa.array(messages, pa.string()))
    return SpanBatch(table)


def _events(batch: SpanBatch) -> list[list[tuple[str, int, dict[str, str]]]]:
    return batch.events(np.arange(len(batch)))


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("url.full", f"https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent?key={KEY}",
     "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent?key=REDACTED"),
    ("url.full", f"https://api.example.com/v1/chat?alt=sse&API_KEY={KEY}&stream=1#part",
     "https://api.example.com/v1/chat?alt=sse&API_KEY=REDACTED&stream=1#part"),
    ("url.full", f"https://user:{KEY}@api.example.com/v1?access_token={KEY};sig={KEY}",
     "https://REDACTED:REDACTED@api.example.com/v1?access_token=REDACTED;sig=REDACTED"),
    ("url.query", f"key={KEY}&x=1", "key=REDACTED&x=1"),
    ("http.url", f"https://s3.amazonaws.com/b/o?X-Amz-Signature={KEY}&X-Amz-Credential={KEY}",
     "https://s3.amazonaws.com/b/o?X-Amz-Signature=REDACTED&X-Amz-Credential=REDACTED"),
    ("http.target", f"/v1beta/models/gemini:streamGenerateContent?alt=sse&key={KEY}",
     "/v1beta/models/gemini:streamGenerateContent?alt=sse&key=REDACTED"),
    ("url.original", f"http://{KEY}@localhost:8080/", "http://REDACTED:REDACTED@localhost:8080/"),
])
def test_secrets_in_url_attributes_are_replaced_and_the_rest_kept(key: str, value: str, expected: str) -> None:
    out = attributes(_run(batch_of([{key: value, "http.request.method": "POST"}, {"other": "x"}])))
    assert out == [{key: expected, "http.request.method": "POST"}, {"other": "x"}]


@pytest.mark.parametrize("value", [
    "https://api.example.com/v1/models?limit=10&monkey=banana&keys=3",  # names that only contain a secret's name
    "https://api.example.com/search?q=key%3Dvalue",  # an encoded '=' is the value's, not a parameter
    "https://api.example.com/v1?key=",  # nothing to hide
    "https://api.example.com/v1?key=REDACTED",  # already done
    "https://REDACTED:REDACTED@api.example.com/",
    "not a url ?? && ==",
    "",
])
def test_urls_without_a_secret_and_other_spans_leave_the_batch_as_it_was(value: str) -> None:
    batch = batch_of([{"url.full": value}, {"gen_ai.input.messages": f"see https://x.io/?key={KEY}"}])
    assert _run(batch) is batch  # message content is the pii processor's, not this one's


def test_credential_headers_are_replaced_whole_and_others_kept() -> None:
    spans = [{"http.request.header.authorization": json.dumps([f"Bearer {KEY}"]),
              "http.request.header.x-api-key": KEY,
              "http.response.header.set-cookie": json.dumps([f"session={KEY}", "theme=dark"]),
              "http.request.header.content-type": '["application/json"]',
              "http.request.header.x-goog-api-key": '["REDACTED"]'},
             {"url.full": "https://api.example.com/"}]
    out = attributes(_run(batch_of(spans)))
    assert out[0] == {"http.request.header.authorization": '["REDACTED"]', "http.request.header.x-api-key": "REDACTED",
                      "http.response.header.set-cookie": '["REDACTED"]',
                      "http.request.header.content-type": '["application/json"]',
                      "http.request.header.x-goog-api-key": '["REDACTED"]'}
    assert out[1] == spans[1]


def test_urls_quoted_in_status_messages_and_exception_events_are_redacted() -> None:
    url = f"https://generativelanguage.googleapis.com/v1beta/models/gemini:generateContent?key={KEY}"
    message = f"Client error '400 Bad Request' for url '{url}'"
    trace = f'Traceback (most recent call last):\n  ...\nhttpx.HTTPStatusError: {message}\n'
    content = {"gen_ai.event.content": f"the user pasted {url}"}
    events = [[("exception", 1, {"exception.type": "httpx.HTTPStatusError", "exception.message": message,
                                 "exception.stacktrace": trace}),
               ("gen_ai.user.message", 2, content)],
              [],
              [("exception", 3, {"exception.message": "no url here", "exception.type": "ValueError"})],
              [("exception", 4, {"exception.message": f"connect to https://bob:{KEY}@proxy.internal:3128 failed"})]]
    batch = _with_status(batch_of([{}, {}, {}, {}], events),
                         [f"HTTPStatusError: {message}", None, "ValueError: no url here", ""])
    # Two export requests in one batch: the event and status columns come in chunks.
    batch = SpanBatch.concat([batch.slice(0, 1), batch.slice(1, 3)])
    out = _run(batch)
    redacted = message.replace(KEY, "REDACTED")
    assert out.table.column("StatusMessage").to_pylist() == [f"HTTPStatusError: {redacted}", None,
                                                             "ValueError: no url here", ""]
    got = _events(out)
    assert got[0][0][2] == {"exception.type": "httpx.HTTPStatusError", "exception.message": redacted,
                            "exception.stacktrace": trace.replace(KEY, "REDACTED")}
    assert got[0][1][2] == content  # not an exception attribute: left to the pii processor
    assert got[1:3] == _events(batch)[1:3]
    assert got[3][0][2] == {"exception.message": "connect to https://REDACTED:REDACTED@proxy.internal:3128 failed"}
    assert [e[:2] for evs in got for e in evs] == [e[:2] for evs in _events(batch) for e in evs]


def test_config_chooses_what_is_redacted() -> None:
    spans = [{"url.full": f"https://u:p@h/?key={KEY}&session={KEY}", "my.url": f"https://h/?token={KEY}",
              "http.request.header.x-tenant-secret": KEY}]
    out = attributes(_run(batch_of(spans), query_params=["session"], url_attributes=["url.full", "my.url"],
                          headers=["X-Tenant-Secret"], userinfo=False))
    assert out == [{"url.full": f"https://u:p@h/?key={KEY}&session=REDACTED", "my.url": f"https://h/?token={KEY}",
                    "http.request.header.x-tenant-secret": "REDACTED"}]
    batch = _with_status(batch_of([{}]), [f"GET https://h/?key={KEY} failed"])
    assert _run(batch, error_text=False) is batch
    assert _run(batch, query_params=[], userinfo=False) is batch


@pytest.mark.parametrize(("config", "message"), [
    ({"query_params": ["key=1"]}, "redaction.query_params: 'key=1' is not a parameter or header name"),
    ({"headers": [""]}, "redaction.headers: '' is not a parameter or header name"),
    ({"userinfo": "sometimes"}, "userinfo"),
    ({"secrets": []}, "secrets"),
])
def test_config_errors_name_the_key(config: dict[str, Any], message: str) -> None:
    from lqo.collector.config import format_validation_error

    with pytest.raises(ValidationError) as err:
        RedactionConfig(**config)
    assert message in format_validation_error("processors.redaction", err.value, RedactionConfig)


def test_registered_and_first_in_the_default_pipeline() -> None:
    from lqo.collector.config import default_config

    assert factories("processors")["redaction"].config_model is RedactionConfig
    assert default_config({})["service"]["pipelines"]["traces"]["processors"][0] == "redaction"


def test_hostile_values_are_survived() -> None:
    huge = "https://h/?" + "&".join(f"p{i}=v" for i in range(50_000)) + f"&key={KEY}"
    spans = [{"url.full": huge}, {"url.full": "?" * 100_000 + f"key={KEY}"}, {"url.query": "key=\x00\n\u2028é" * 1000},
             {"url.full": "https://h/?key=" + "a" * 1_000_000}, {"url.full": "://@@@?;;;&&&key=&key=x"}]
    out = attributes(_run(batch_of(spans)))
    assert out[0]["url.full"].endswith("&key=REDACTED") and out[0]["url.full"].count("=v") == 50_000
    assert out[1]["url.full"] == "?" * 100_000 + "key=REDACTED"
    assert KEY not in json.dumps(out)
    assert out[2]["url.query"].startswith("key=REDACTED")
    assert out[3]["url.full"] == "https://h/?key=REDACTED"
    assert out[4]["url.full"] == "://@@@?;;;&&&key=&key=REDACTED"


def test_the_quick_byte_test_passes_every_value_a_rewrite_changes() -> None:
    """Only values the numpy test picks are read into Python: it must never miss one."""
    rng = random.Random(7)
    parts = ["key", "KEY", "Api_Key", "monkey", "q", "Ab", "sig", "page", "x-amz-signature", "token", "tokens",
             "=", "==", "&", "?", ";", "#", "@", "://", "https://", "u:p@", " ", "'", "é", "REDACTED", "v", "42"]
    values = ["".join(rng.choice(parts) for _ in range(rng.randrange(0, 12))) for _ in range(3000)]
    array = pa.array(["padding", *values]).slice(1)  # sliced: its offsets do not start at 0
    for config in (RedactionConfig(), RedactionConfig(query_params=["q", "Ab"]), RedactionConfig(userinfo=False),
                   RedactionConfig(query_params=[])):
        processor = RedactionProcessor(config)
        picked = processor._candidates(array)
        changed = [processor._patterns.url(v) != v or processor._patterns.text(v) != v for v in values]
        assert not [v for v, c, p in zip(values, changed, picked, strict=True) if c and not p], config
        assert sum(changed) > 0 or not config.query_params
        assert picked.sum() < len(values) / 2  # and it does pick


class _Gemini(BaseHTTPRequestHandler):
    """A provider that refuses the key (the error quotes nothing; httpx's message quotes the URL)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b'{"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}'
        self.send_response(400)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_a_key_in_a_url_reaches_no_stored_column(make_collector: Any) -> None:
    """The real OTel httpx instrumentation and SDK, OTLP/HTTP into the collector: the key in the
    URL, its error message, and a captured header are all stored redacted."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.trace import Status, StatusCode

    col = make_collector({"processors": {"redaction": {}},
                          "service": {"pipelines": {"traces": {"processors": ["redaction"]}}}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gemini)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    provider, tracer = otlp_tracer(col.http_url, "redaction-e2e")
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    url = f"http://127.0.0.1:{server.server_port}/v1beta/models/gemini-2.0-flash:generateContent?key={KEY}"
    try:
        with tracer.start_as_current_span("summarize") as span, httpx.Client() as client:
            span.set_attribute("http.request.header.x-goog-api-key", [KEY])
            try:
                client.post(url, json={"contents": []}).raise_for_status()
            except httpx.HTTPStatusError as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
        server.shutdown()
    col.wait_stored(2)
    rows = col.query("SELECT SpanName, SpanAttributes, StatusMessage, Events.Attributes AS events FROM otel_traces")
    stored = json.dumps(rows)
    assert len(rows) == 2
    assert KEY not in stored
    by_name = {r["SpanName"]: r for r in rows}
    client_attrs = by_name["POST"]["SpanAttributes"]  # the old conventions' http.url unless opted in
    assert (client_attrs.get("url.full") or client_attrs["http.url"]).endswith(":generateContent?key=REDACTED")
    parent = by_name["summarize"]
    assert parent["SpanAttributes"]["http.request.header.x-goog-api-key"] == '["REDACTED"]'
    assert "generateContent?key=REDACTED'" in parent["StatusMessage"]
    assert "generateContent?key=REDACTED'" in parent["events"][0]["exception.message"]
    assert "generateContent?key=REDACTED'" in parent["events"][0]["exception.stacktrace"]
