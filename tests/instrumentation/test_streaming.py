"""Acceptance 2: a streamed call's span ends exactly once — exhausted, broken mid-stream, closed
early, abandoned, async — with the usage the stream carried. Plus metrics, parenting of the HTTP
span, uninstrument, and instrumentation faults never reaching the application."""

from __future__ import annotations

import asyncio
import gc
import json
import subprocess
import sys
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.trace import StatusCode

from lqo.instrumentation.httpx import _streams

from .expected import expected_for
from .forking import in_forked_child
from .replay import RECORDINGS, Exchange, ReplayServer, load_cassette

CHAT_STREAM = RECORDINGS / "openai" / "openai__test_chat_completion_streaming.yaml"
ANTHROPIC_STREAM = RECORDINGS / "anthropic" / "anthropic__test_anthropic_prompt_caching_stream_legacy.yaml"
OLLAMA_STREAM = RECORDINGS / "ollama" / "ollama__test_ollama_streaming_chat_legacy.yaml"
CHAT_PLAIN = RECORDINGS / "openai" / "openai__test_chat_completion_no_content.yaml"
ARGS = {"model": "gpt-4", "messages": [{"role": "user", "content": "Say this is a test"}],
        "stream": True, "stream_options": {"include_usage": True}}


def _client(url: str, is_async: bool = False) -> Any:
    cls = openai.AsyncOpenAI if is_async else openai.OpenAI
    return cls(base_url=url + "/v1", api_key="k", max_retries=0)


def _one_span(inst: Any) -> Any:
    spans = inst.genai_spans()
    assert len(spans) == 1, spans
    return spans[0]


def test_exhausted_stream_ends_once_with_usage(instrument: Any) -> None:
    inst = instrument()
    with ReplayServer(load_cassette(CHAT_STREAM)) as srv:
        stream = _client(srv.url).chat.completions.create(**ARGS)
        assert inst.genai_spans() == []  # still open while the app reads
        chunks = list(stream)
        stream.close()  # closing after exhaustion must not end it again
    assert type(stream).__name__ == "Stream" and chunks  # the SDK's own types are untouched
    span = _one_span(inst)
    exp = expected_for(load_cassette(CHAT_STREAM)[0])
    assert span.attributes["gen_ai.usage.input_tokens"] == exp.input_tokens
    assert span.attributes["gen_ai.usage.output_tokens"] == exp.output_tokens
    assert span.status.status_code is StatusCode.UNSET


def test_broken_mid_stream_ends_once_with_error(instrument: Any) -> None:
    inst = instrument()
    with ReplayServer(load_cassette(CHAT_STREAM), break_after=3) as srv:
        stream = _client(srv.url).chat.completions.create(**ARGS)
        with pytest.raises(openai.APIError):
            list(stream)
        del stream
        gc.collect()
    span = _one_span(inst)
    assert span.status.status_code is StatusCode.ERROR
    # The transport's exception, as the byte stream saw it (before the SDK wrapped it).
    assert span.attributes["error.type"] == "RemoteProtocolError"
    assert "gen_ai.usage.input_tokens" not in span.attributes  # usage comes in the last chunk
    assert span.attributes["gen_ai.response.model"] == "gpt-4-0613"  # from the chunks that arrived


def test_closed_early_ends_once(instrument: Any) -> None:
    inst = instrument()
    with ReplayServer(load_cassette(CHAT_STREAM)) as srv:
        stream = _client(srv.url).chat.completions.create(**ARGS)
        next(iter(stream))
        stream.close()
        assert len(inst.genai_spans()) == 1
        stream.close()
        del stream
        gc.collect()
    span = _one_span(inst)
    assert span.status.status_code is StatusCode.UNSET
    assert "gen_ai.usage.output_tokens" not in span.attributes
    assert span.attributes["gen_ai.response.time_to_first_chunk"] > 0


def test_abandoned_stream_ends_once_when_collected(instrument: Any) -> None:
    inst = instrument()
    with ReplayServer(load_cassette(CHAT_STREAM)) as srv:
        stream = _client(srv.url).chat.completions.create(**ARGS)
        next(iter(stream))
        assert inst.genai_spans() == []
        del stream  # dropped without close()
        gc.collect()
        assert len(inst.genai_spans()) == 1
    _one_span(inst)


_OPEN_AT_EXIT = """
import json, sys
import openai
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from lqo.instrumentation.httpx import HttpxGenAIInstrumentor

class Printer(SpanExporter):
    def export(self, spans):
        for s in spans:
            print("SPAN", json.dumps({"name": s.name, **dict(s.attributes)}), flush=True)
        return SpanExportResult.SUCCESS

tp = TracerProvider()  # its exit shutdown is registered first, so it runs last
tp.add_span_processor(BatchSpanProcessor(Printer()))
HttpxGenAIInstrumentor().instrument(tracer_provider=tp)
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="k", max_retries=0)
stream = client.chat.completions.create(**json.loads(sys.argv[2]))
print("READ", next(iter(stream)).id, flush=True)
# exits here, the stream still referenced and never closed
"""


def test_stream_still_open_at_exit_ends_and_is_exported(tmp_path: Any) -> None:
    """A script that stops reading a stream and quits: the span ends at exit, exported."""
    app = tmp_path / "app.py"
    app.write_text(_OPEN_AT_EXIT)
    with ReplayServer(load_cassette(CHAT_STREAM)) as srv:
        out = subprocess.run([sys.executable, str(app), srv.url, json.dumps(ARGS)],
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (read,) = [line.split(" ", 1)[1] for line in out.stdout.splitlines() if line.startswith("READ ")]
    spans = [json.loads(line.split(" ", 1)[1]) for line in out.stdout.splitlines() if line.startswith("SPAN ")]
    assert len(spans) == 1, out.stdout
    assert spans[0]["name"] == "chat gpt-4" and spans[0]["gen_ai.response.id"] == read
    assert "Exception ignored" not in out.stderr


def test_forked_child_does_not_end_the_parents_open_stream(instrument: Any) -> None:
    """The child inherits the parent's open stream as a copy; at the child's exit it must not
    end (and export) the parent's call, which the parent still reads and ends itself."""
    inst = instrument()
    with ReplayServer(load_cassette(CHAT_STREAM)) as srv:
        stream = _client(srv.url).chat.completions.create(**ARGS)
        chunks = iter(stream)
        next(chunks)

        def child() -> str:  # what its exit would do, then the spans it made
            inst.exporter.clear()
            _streams.end_open_streams()
            return str(len(inst.genai_spans()))

        seen = in_forked_child(child)
        for _ in chunks:
            pass
    assert seen == "0"
    assert _one_span(inst).attributes["gen_ai.usage.output_tokens"] == 5


@pytest.mark.parametrize("how", ["exhausted", "closed_early", "broken", "abandoned"])
def test_async_stream_ends_once(how: str, instrument: Any) -> None:
    inst = instrument()

    async def main(url: str) -> None:
        client = _client(url, is_async=True)
        stream = await client.chat.completions.create(**ARGS)
        if how == "exhausted":
            async for _ in stream:
                pass
        elif how == "closed_early":
            async for _ in stream:
                break
            await stream.close()
        elif how == "abandoned":  # one chunk read, then dropped without close()
            await stream.__anext__()
            del stream
            gc.collect()
            return
        else:
            with pytest.raises(openai.APIError):
                async for _ in stream:
                    pass
        await stream.close()

    with ReplayServer(load_cassette(CHAT_STREAM), break_after=3 if how == "broken" else None) as srv:
        asyncio.run(main(srv.url))
        gc.collect()
    span = _one_span(inst)
    if how == "exhausted":
        assert span.attributes["gen_ai.usage.output_tokens"] == 5
    if how == "broken":
        assert span.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("cassette", [ANTHROPIC_STREAM, OLLAMA_STREAM], ids=["anthropic_sse", "ollama_ndjson"])
def test_other_stream_formats_closed_early(cassette: Any, instrument: Any) -> None:
    inst = instrument()
    ex = load_cassette(cassette)[0]
    with (
        ReplayServer([ex]) as srv,
        httpx.Client(base_url=srv.url) as client,
        client.stream("POST", ex.path, content=ex.request_body, headers={"content-type": "application/json"}) as resp,
    ):
        next(resp.iter_bytes())
    _one_span(inst)


def test_metrics_follow_semconv(instrument: Any) -> None:
    inst = instrument()
    with ReplayServer(load_cassette(CHAT_STREAM)) as srv:
        list(_client(srv.url).chat.completions.create(**ARGS))
    metrics = inst.metrics()
    usage = metrics["gen_ai.client.token.usage"]
    by_type = {p.attributes["gen_ai.token.type"]: p for p in usage}
    assert by_type["input"].sum == 12 and by_type["output"].sum == 5
    assert list(by_type["input"].explicit_bounds)[:3] == [1, 4, 16]
    duration = metrics["gen_ai.client.operation.duration"][0]
    assert duration.count == 1 and list(duration.explicit_bounds)[:2] == [0.01, 0.02]
    assert duration.attributes["gen_ai.request.model"] == "gpt-4"
    assert duration.attributes["gen_ai.response.model"] == "gpt-4-0613"
    assert metrics["gen_ai.client.operation.time_to_first_chunk"][0].count == 1


def test_genai_span_is_parent_of_the_http_span(instrument: Any) -> None:
    from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor

    inst = instrument()
    http = HTTPX2ClientInstrumentor()
    http.instrument(tracer_provider=inst.tracer_provider)
    try:
        with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
            _client(srv.url).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    finally:
        http.uninstrument()
    spans = inst.exporter.get_finished_spans()
    genai = _one_span(inst)
    children = [s for s in spans if s.parent is not None and s.parent.span_id == genai.context.span_id]
    assert [s.name for s in children] == ["POST"]


def test_uninstrument_restores_everything(instrument: Any) -> None:
    import httpx2

    originals = (httpx.Client.send, httpx.AsyncClient.send, httpx2.Client.send, httpx2.AsyncClient.send)
    inst = instrument()
    assert httpx2.Client.send is not originals[2]
    inst.instrumentor.uninstrument()
    assert (httpx.Client.send, httpx.AsyncClient.send, httpx2.Client.send, httpx2.AsyncClient.send) == originals
    with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
        _client(srv.url).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert inst.genai_spans() == []
    inst.instrumentor.instrument(tracer_provider=inst.tracer_provider)  # the fixture uninstruments


def test_instrumentation_faults_never_reach_the_app(instrument: Any, monkeypatch: Any, caplog: Any) -> None:
    from lqo.instrumentation.httpx.decoders import openai_chat

    inst = instrument()

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret prompt text")

    monkeypatch.setattr(openai_chat.ChatCompletions, "response", broken)
    monkeypatch.setattr(openai_chat.ChatStream, "event", broken)
    with ReplayServer((load_cassette(CHAT_PLAIN) + load_cassette(CHAT_STREAM)) * 2) as srv:
        client = _client(srv.url)
        for _ in range(2):
            reply = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
            assert reply.choices[0].message.content
            assert "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(**ARGS) if c.choices)
    assert len(inst.genai_spans()) == 4  # every span still ends
    warnings = [r for r in caplog.records if r.name.startswith("lqo.instrumentation")]
    assert len(warnings) == 1  # logged once per site, not per call
    assert "secret" not in caplog.text  # exception messages may quote content: never logged


def test_non_llm_requests_are_untouched(instrument: Any) -> None:
    inst = instrument()
    ex = load_cassette(CHAT_PLAIN)[0]
    with ReplayServer([ex]) as srv, httpx.Client(base_url=srv.url) as client:
        client.get("/v1/models")
        client.post("/v1/chat/completions", content=b"not json", headers={"content-type": "text/plain"})
    assert inst.genai_spans() == []


def test_malformed_request_body_is_ignored(instrument: Any, caplog: Any) -> None:
    inst = instrument()
    ex = load_cassette(CHAT_PLAIN)[0]
    with ReplayServer([ex]) as srv, httpx.Client(base_url=srv.url) as client:
        r = client.post("/v1/chat/completions", content=b"{broken", headers={"content-type": "application/json"})
    assert r.status_code == 200
    assert inst.genai_spans() == []


def _cyclic_garbage(run: Any) -> int:
    """Objects only a garbage collection frees (reference cycles) that ``run`` leaves behind."""
    gc.collect()
    gc.disable()
    try:
        run()
        return gc.collect()
    finally:
        gc.enable()


def test_calls_leave_no_reference_cycles(instrument: Any) -> None:
    """What a call makes is freed by reference counting when it ends: cycles would leave it to
    the garbage collector, whose collections then land on the application's threads. Before
    the fix a stream's call, parser and stream decoder (holding the call's bound methods) were a
    cycle: ~25 objects a stream. Plain calls, streams exhausted and closed early, an error
    status, with content captured, against the same calls uninstrumented."""
    error = Exchange("POST", "/v1/chat/completions", None, 429, [("content-type", "application/json")],
                     b'{"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}')
    exchanges = [load_cassette(CHAT_PLAIN)[0], *[load_cassette(CHAT_STREAM)[0]] * 2, error] * 5
    plain = {k: v for k, v in ARGS.items() if k not in ("stream", "stream_options")}
    with ReplayServer(exchanges) as srv:
        client = _client(srv.url)

        def calls() -> None:
            for _ in range(5):
                client.chat.completions.create(**plain)
                for _chunk in client.chat.completions.create(**ARGS):
                    pass
                stream = client.chat.completions.create(**ARGS)
                next(iter(stream))
                stream.close()
                with pytest.raises(openai.RateLimitError):
                    client.chat.completions.create(**plain)

        calls()  # warm: imports, pools, caches
        baseline = _cyclic_garbage(calls)
        inst = instrument(capture_mode="SPAN_ONLY")
        calls()
        inst.genai_spans()
        instrumented = _cyclic_garbage(lambda: (calls(), inst.genai_spans()))
    assert len(inst.genai_spans()) == 40
    assert instrumented <= baseline, (instrumented, baseline)
