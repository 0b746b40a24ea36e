"""GenAI events sent as OTLP log records are added to their spans (``/v1/logs``,
``LogsService/Export``; ``lqo.collector.model.genai_events``): the receivers' answers to good,
foreign and hostile log payloads, and the buffer's bounds. The real producers (Node's
instrumentation-openai, Python's openai-v2) are in test_node_producer.py and
tests/processors/test_genai_log_events.py."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import grpc
import pyarrow as pa
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from test_bad_input import good_request, post

from lqo.collector.model.genai_events import Event, EventBuffer, decode_logs
from lqo.collector.model.spanbatch import SCHEMA, SpanBatch

TRACE, SPAN = bytes(range(1, 17)), bytes(range(1, 9))
PROTOBUF, JSON = "application/x-protobuf", "application/json"


def _str(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _user_message(text: str, trace: bytes = TRACE, span: bytes = SPAN, **kw: Any) -> LogRecord:
    """A ``gen_ai.user.message`` event as the OpenTelemetry SDKs emit it: the name in
    ``event_name``, the message in a map body."""
    return LogRecord(time_unix_nano=1_700_000_000_123_456_789, trace_id=trace, span_id=span,
                     event_name="gen_ai.user.message", attributes=[_str("gen_ai.system", "openai")],
                     body=AnyValue(kvlist_value=KeyValueList(values=[_str("content", text)])), **kw)


def _request(*records: LogRecord) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    request.resource_logs.add().scope_logs.add().log_records.extend(records)
    return request


def test_the_genai_events_of_spans_are_kept_and_the_rest_counted() -> None:
    old_style = LogRecord(trace_id=TRACE, span_id=SPAN, attributes=[_str("event.name", "gen_ai.choice")],
                          body=AnyValue(kvlist_value=KeyValueList(values=[
                              KeyValue(key="index", value=AnyValue(int_value=0)),
                              KeyValue(key="message", value=AnyValue(kvlist_value=KeyValueList(values=[
                                  _str("content", "hello")])))])))
    result = decode_logs(_request(
        _user_message("hi"), old_style,
        LogRecord(trace_id=TRACE, span_id=SPAN, body=AnyValue(string_value="GET /health 200")),  # an app log
        _user_message("no span", span=bytes(8)),  # no span to go to
        _user_message("no trace", trace=bytes(16)),
        _user_message("short id", trace=b"\x01\x02"),
    ))
    assert result.ignored == 4
    first, second = result.events
    assert (first.key, first.name, first.time_ns) == (TRACE.hex() + SPAN.hex(), "gen_ai.user.message",
                                                      1_700_000_000_123_456_789)
    assert first.attributes == {"gen_ai.system": "openai", "content": "hi"}
    assert second.name == "gen_ai.choice"  # named by the older event.name attribute
    assert second.attributes == {"index": "0", "message": '{"content":"hello"}'}


def _span_row(trace: str, span: str, events: list[tuple[str, int]] = ()) -> dict[str, Any]:
    row: dict[str, Any] = {n: [] if n.startswith(("Events.", "Links.")) else None for n in SCHEMA.names}
    row.update(Timestamp=datetime(2026, 12, 7, 1, 2, 3), TraceId=trace, SpanId=span, SpanName="chat",
               SpanAttributes=[("gen_ai.operation.name", "chat")],
               **{"Events.Name": [n for n, _ in events], "Events.Timestamp": [t for _, t in events],
                  "Events.Attributes": [[] for _ in events]})
    return row


def _batch(*rows: dict[str, Any]) -> SpanBatch:
    table = pa.Table.from_pylist([{**r, "Events.Timestamp": []} for r in rows], schema=SCHEMA)
    stamps = pa.array([[t for _, t in zip(r["Events.Name"], r["Events.Timestamp"], strict=True)] for r in rows],
                      pa.list_(pa.int64())).cast(SCHEMA.field("Events.Timestamp").type)
    table = table.set_column(SCHEMA.get_field_index("Events.Timestamp"), SCHEMA.field("Events.Timestamp"), stamps)
    exact = pa.array([1_765_069_323_123_456_789 + i for i in range(len(rows))], pa.int64())
    return SpanBatch(table.set_column(0, SCHEMA.field("Timestamp"), exact.cast(SCHEMA.field("Timestamp").type)))


class _Count:
    def __init__(self) -> None:
        self.n = 0

    def inc(self, n: int = 1) -> None:
        self.n += n


def test_events_join_their_span_after_its_own_events_and_nothing_else_changes() -> None:
    counted = {o: _Count() for o in EventBuffer.OUTCOMES}
    buffer = EventBuffer(counted=counted)
    key = "a" * 32 + "b" * 16
    buffer.add([Event(key, "gen_ai.choice", 300, {"message": "{}"}),
                Event(key, "gen_ai.user.message", 200, {"content": "hi"}),
                Event("c" * 48, "gen_ai.user.message", 5, {})])  # another span's: waits on
    batch = _batch(_span_row("a" * 32, "b" * 16, [("exception", 100)]), _span_row("d" * 32, "e" * 16))
    out = buffer.attach(batch)
    assert len(out) == 2 and counted["attached"].n == 2 and len(buffer) == 1
    rows = {r["SpanId"]: r for r in out.table.to_pylist()}
    assert rows["b" * 16]["Events.Name"] == ["exception", "gen_ai.user.message", "gen_ai.choice"]
    assert out.table.column("Events.Timestamp").cast(pa.list_(pa.int64())).to_pylist()[
        [r["SpanId"] for r in out.table.to_pylist()].index("b" * 16)] == [100, 200, 300]
    assert rows["b" * 16]["Events.Attributes"][1] == [("content", "hi")]
    assert rows["e" * 16]["Events.Name"] == []
    # every span's own columns unchanged, to the nanosecond
    stamps = dict(zip(out.table.column("SpanId").to_pylist(),
                      out.table.column("Timestamp").cast(pa.int64()).to_pylist(), strict=True))
    assert stamps == {"b" * 16: 1_765_069_323_123_456_789, "e" * 16: 1_765_069_323_123_456_790}
    assert buffer.attach(batch) is batch  # taken once


def test_the_buffer_is_bounded_in_age_and_count(monkeypatch: pytest.MonkeyPatch) -> None:
    counted = {o: _Count() for o in EventBuffer.OUTCOMES}
    buffer = EventBuffer(max_events=3, ttl=60, counted=counted)
    clock = [1000.0]
    monkeypatch.setattr("lqo.collector.model.genai_events.time.monotonic", lambda: clock[0])
    buffer.add([Event(f"{i:048d}", "gen_ai.user.message", i, {}) for i in range(5)])
    assert len(buffer) == 3 and counted["dropped"].n == 2  # the oldest spans' events go first
    clock[0] += 61
    buffer.attach(_batch(_span_row("x" * 32, "y" * 16)))
    assert len(buffer) == 0 and counted["expired"].n == 3
    small = EventBuffer(max_bytes=10_000, counted=counted)
    small.add([Event(f"{i:048d}", "gen_ai.user.message", i, {"content": "x" * 4000}) for i in range(4)])
    assert len(small) == 2 and counted["dropped"].n == 4  # bounded in bytes too


@pytest.fixture
def events_collector(make_collector: Any) -> Any:
    return make_collector({"receivers": {"otlp": {"protocols": {"http": {"max_request_body_size": 65536}}}}})


def test_events_and_their_span_over_http_json_and_grpc(events_collector: Any) -> None:
    col = events_collector
    logs = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"traceId": TRACE.hex(), "spanId": SPAN.hex(), "eventName": "gen_ai.user.message",
         "timeUnixNano": "1700000000000000001", "body": {"kvlistValue": {"values": [
             {"key": "content", "value": {"stringValue": "hello over JSON"}}]}}},
        {"body": {"stringValue": "an app log line"}},
    ]}]}]}).encode()
    status, _, body = post(f"{col.http_url}/v1/logs", logs, JSON)
    assert status == 200 and json.loads(body) == {}
    with grpc.insecure_channel(col.grpc_endpoint) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
        export(_request(_user_message("hello over gRPC")).SerializeToString(), timeout=30)
    request = good_request(1, "chat")
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.trace_id, span.span_id = TRACE, SPAN
    span.attributes.append(_str("gen_ai.operation.name", "chat"))  # only GenAI spans are looked up
    status, _, _ = post(f"{col.http_url}/v1/traces", request.SerializeToString(), PROTOBUF)
    assert status == 200
    assert col.wait_stored(1) == 1
    [row] = col.query("SELECT `Events.Name` AS names, `Events.Attributes` AS attrs FROM otel_traces")
    assert row["names"] == ["gen_ai.user.message", "gen_ai.user.message"]
    assert [a["content"] for a in row["attrs"]] == ["hello over JSON", "hello over gRPC"]
    metrics = col.metrics()
    assert 'lqo_receiver_log_records_total{kind="ignored",receiver="otlp",transport="http"} 1.0' in metrics
    assert 'lqo_receiver_log_records_total{kind="genai_event",receiver="otlp",transport="grpc"} 1.0' in metrics
    assert 'lqo_genai_events_total{outcome="attached"} 2.0' in metrics


@pytest.mark.parametrize(("body", "content_type", "status"), [
    (b"\xff\xfe not protobuf", PROTOBUF, 400),
    (b"{not json", JSON, 400),
    (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "zz"}]}]}]}', JSON, 400),
    (b"[" * 30_000 + b"]" * 30_000, JSON, 400),  # nested past the parser's depth
    (b"x" * 70_000, PROTOBUF, 413),
    (b"hello", "text/plain", 415),
])
def test_hostile_log_payloads_get_clear_answers_and_lose_nothing(events_collector: Any, body: bytes,
                                                                 content_type: str, status: int) -> None:
    col = events_collector
    got, _, answer = post(f"{col.http_url}/v1/logs", body, content_type)
    assert got == status
    if content_type == PROTOBUF:
        assert status_pb2.Status.FromString(answer).message
    else:
        assert json.loads(answer)["message"]
    with grpc.insecure_channel(col.grpc_endpoint) as channel, pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")(b"\xff\xfe", timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert post(f"{col.http_url}/v1/traces", good_request().SerializeToString(), PROTOBUF)[0] == 200
    assert col.wait_stored(1) == 1


def test_the_logs_endpoint_can_be_turned_off(make_collector: Any) -> None:
    col = make_collector({"receivers": {"otlp": {"protocols": {"http": {"logs_url_path": ""}}}}})
    assert post(f"{col.http_url}/v1/logs", _request(_user_message("x")).SerializeToString(), PROTOBUF)[0] == 404


def test_the_logs_endpoint_asks_for_the_receivers_credentials(make_collector: Any) -> None:
    col = make_collector({
        "extensions": {"bearertokenauth": {"token": "sender-token"}},
        "receivers": {"otlp": {"protocols": {"http": {"auth": {"authenticator": "bearertokenauth"}}}}},
        "service": {"extensions": ["bearertokenauth"]},
    })
    body = _request(_user_message("x")).SerializeToString()
    status, headers, answer = post(f"{col.http_url}/v1/logs", body, PROTOBUF)
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert "credentials" in status_pb2.Status.FromString(answer).message  # OTLP's error body, not JSON


@pytest.mark.parametrize("hold", ["3s", "0s"])
def test_events_that_come_after_their_span_are_attached_while_it_is_held(make_collector: Any, hold: str) -> None:
    """A span exported before its events (an app that flushes spans first; a log exporter on a
    slower schedule): the span of a scope known to send GenAI events, without messages, waits up
    to ``service.queue.hold_for_events`` for them. Off (0s), the late event misses its span."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import set_span_in_context

    col = make_collector({"processors": {"genai_normalize": {}},
                          "service": {"queue": {"hold_for_events": hold},
                                      "pipelines": {"traces": {"processors": ["genai_normalize"]}}}})
    resource = Resource.create({"service.name": "late-events"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{col.http_url}/v1/traces")))
    log_provider = LoggerProvider(resource=resource)
    log_provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{col.http_url}/v1/logs")))
    tracer, logger = tracer_provider.get_tracer("genai-app"), log_provider.get_logger("genai-app")
    chat = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}

    def ask(span: Any, text: str) -> None:
        logger.emit(event_name="gen_ai.user.message", context=set_span_in_context(span), body={"content": text})

    first = tracer.start_span("chat gpt-4o", attributes=chat)
    ask(first, "first question")  # the usual order: the event, then the span
    first.end()
    assert col.wait_stored(1) == 1
    late = tracer.start_span("chat gpt-4o", attributes=chat)
    late.end()  # the span first …
    time.sleep(1.0)  # … well past the pipeline's gathering (200 ms) …
    ask(late, "a late question")  # … then its event
    never = tracer.start_span("chat gpt-4o", attributes=chat)  # a call whose events never come
    never.end()
    tracer_provider.get_tracer("plain-http").start_span("GET /health").end()  # a scope that sends none
    assert col.wait_stored(4, timeout=30) == 4
    rows = {r["SpanId"]: r for r in col.query(
        "SELECT SpanId, `Events.Name` AS events, SpanAttributes['gen_ai.input.messages'] AS asked FROM otel_traces")}
    spans = {name: f"{s.get_span_context().span_id:016x}" for name, s in (("first", first), ("late", late),
                                                                          ("never", never))}
    assert json.loads(rows[spans["first"]]["asked"])[0]["parts"][0]["content"] == "first question"
    assert rows[spans["never"]]["events"] == []
    metrics = col.metrics()
    if hold == "3s":
        assert rows[spans["late"]]["events"] == ["gen_ai.user.message"]
        assert json.loads(rows[spans["late"]]["asked"])[0]["parts"][0]["content"] == "a late question"
        assert 'lqo_pipeline_held_spans_total{outcome="attached"} 1.0' in metrics
        assert 'lqo_pipeline_held_spans_total{outcome="timed_out"} 1.0' in metrics  # never's: not plain-http's
    else:
        assert rows[spans["late"]]["events"] == [] and rows[spans["late"]]["asked"] == ""
        assert 'lqo_pipeline_held_spans_total{outcome="attached"} 0.0' in metrics
    log_provider.shutdown()
    tracer_provider.shutdown()
