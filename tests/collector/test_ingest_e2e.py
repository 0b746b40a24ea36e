"""Acceptance 1: spans sent with the real OTel SDK (gRPC, HTTP/protobuf) and raw OTLP/JSON
are stored exactly once, every column right, and read back through `lqo query`."""

from __future__ import annotations

import base64
import json
import urllib.request

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

T0 = 1_760_000_000_123_456_789  # ns, deliberately not a round number
LINKED = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                     trace_flags=TraceFlags(1))


def _send_with_sdk(exporter, service: str) -> list[dict]:
    provider = TracerProvider(resource=Resource.create({"service.name": service, "team": "ml"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("lqo.tests", "3.1.4")
    expected = []
    root = tracer.start_span(
        "root", kind=SpanKind.SERVER, start_time=T0,
        attributes={
            "str": "héllo", "int": -42, "float": 0.25, "bool": True,
            "strs": ["a", "b"], "ints": [1, 2], "floats": [1.5, 2.0], "bools": [True, False],
        },
        links=[Link(LINKED, {"link.kind": "follows"})],
    )
    root.add_event("cache.miss", {"key": "user:1", "n": 3}, timestamp=T0 + 1_000)
    root.set_status(Status(StatusCode.ERROR, "upstream timeout"))
    ctx = root.get_span_context()
    from opentelemetry.trace import set_span_in_context

    child = tracer.start_span("chat gpt-4o", kind=SpanKind.CLIENT, start_time=T0 + 5_000,
                              context=set_span_in_context(root))
    child.set_attribute("gen_ai.request.model", "gpt-4o")
    child.set_status(Status(StatusCode.OK))
    child.end(end_time=T0 + 2_000_005_000)
    root.end(end_time=T0 + 3_000_000_000)
    provider.shutdown()
    expected.append({"SpanId": f"{ctx.span_id:016x}", "TraceId": f"{ctx.trace_id:032x}"})
    expected.append({"SpanId": f"{child.get_span_context().span_id:016x}",
                     "TraceId": f"{ctx.trace_id:032x}", "ParentSpanId": f"{ctx.span_id:016x}"})
    return expected


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_spans_stored_exactly_once_with_every_column(collector, transport):
    if transport == "grpc":
        exporter = GrpcExporter(endpoint=collector.grpc_endpoint, insecure=True)
    else:
        exporter = HttpExporter(endpoint=f"{collector.http_url}/v1/traces")
    service = f"svc-{transport}"
    ids = _send_with_sdk(exporter, service)
    assert collector.wait_stored(2) == 2

    rows = collector.query(
        "SELECT Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, "
        "ServiceName, ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, "
        "StatusCode, StatusMessage, Events.Timestamp, Events.Name, Events.Attributes, "
        "Links.TraceId, Links.SpanId, Links.TraceState, Links.Attributes "
        "FROM otel_traces ORDER BY Timestamp"
    )
    assert [r["SpanId"] for r in rows] == [ids[0]["SpanId"], ids[1]["SpanId"]]
    root, child = rows
    assert root["TraceId"] == ids[0]["TraceId"] and len(root["TraceId"]) == 32
    assert root["TraceId"] == root["TraceId"].lower()
    assert root["ParentSpanId"] == ""
    assert child["ParentSpanId"] == ids[1]["ParentSpanId"]
    assert root["Timestamp"] == "2025-10-09 08:53:20.123456789"
    assert root["Duration"] == 3_000_000_000
    assert child["Duration"] == 2_000_000_000
    assert (root["SpanKind"], child["SpanKind"]) == ("Server", "Client")
    assert (root["StatusCode"], root["StatusMessage"]) == ("Error", "upstream timeout")
    assert child["StatusCode"] == "Ok"
    assert root["ServiceName"] == service
    assert root["ResourceAttributes"]["service.name"] == service
    assert root["ResourceAttributes"]["team"] == "ml"
    assert root["ResourceAttributes"]["telemetry.sdk.language"] == "python"
    assert (root["ScopeName"], root["ScopeVersion"]) == ("lqo.tests", "3.1.4")
    assert root["SpanAttributes"] == {
        "str": "héllo", "int": "-42", "float": "0.25", "bool": "true",
        "strs": '["a","b"]', "ints": "[1,2]", "floats": "[1.5,2.0]", "bools": "[true,false]",
    }
    assert root["Events.Name"] == ["cache.miss"]
    assert root["Events.Timestamp"] == ["2025-10-09 08:53:20.123457789"]
    assert root["Events.Attributes"] == [{"key": "user:1", "n": "3"}]
    assert root["Links.TraceId"] == ["0af7651916cd43dd8448eb211c80319c"]
    assert root["Links.SpanId"] == ["b7ad6b7169203331"]
    assert root["Links.TraceState"] == [""]
    assert root["Links.Attributes"] == [{"link.kind": "follows"}]
    assert child["SpanAttributes"] == {"gen_ai.request.model": "gpt-4o"}
    assert child["Events.Name"] == [] and child["Links.SpanId"] == []

    lookup = collector.query("SELECT TraceId, Start, End FROM otel_traces_trace_id_ts")
    assert [r["TraceId"] for r in lookup] == [ids[0]["TraceId"]]
    assert lookup[0]["Start"] == "2025-10-09 08:53:20"

    metrics = collector.metrics()
    assert f'lqo_receiver_accepted_spans_total{{receiver="otlp",transport="{transport}"}} 2.0' in metrics
    assert 'lqo_exporter_sent_spans_total{exporter="clickhouse"} 2.0' in metrics


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def test_raw_otlp_json_with_every_value_type(collector):
    trace_id, span_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    body = {
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}}]},
            "scopeSpans": [{
                "scope": {"name": "raw", "version": "9"},
                "spans": [{
                    "traceId": trace_id, "spanId": span_id, "parentSpanId": "",
                    "traceState": "vendor=x",
                    "name": "raw-span", "kind": 4,
                    "startTimeUnixNano": "1760000000000000000",
                    "endTimeUnixNano": "1760000000000001000",
                    "attributes": [
                        {"key": "s", "value": {"stringValue": "v"}},
                        {"key": "i", "value": {"intValue": "9007199254740993"}},
                        {"key": "d", "value": {"doubleValue": 1e-7}},
                        {"key": "b", "value": {"boolValue": False}},
                        {"key": "bytes", "value": {"bytesValue": base64.b64encode(b"\x00\xff").decode()}},
                        {"key": "arr", "value": {"arrayValue": {"values": [
                            {"stringValue": "x"}, {"intValue": "2"}]}}},
                        {"key": "kv", "value": {"kvlistValue": {"values": [
                            {"key": "z", "value": {"boolValue": True}},
                            {"key": "a", "value": {"doubleValue": 2.5}}]}}},
                        {"key": "empty", "value": {}},
                        {"key": "unknown-field-ignored", "value": {"stringValue": "ok"}, "extra": 1},
                    ],
                    "events": [{"timeUnixNano": "1760000000000000500", "name": "e1"}],
                    "status": {"code": 2, "message": "boom"},
                }],
            }],
        }]
    }
    request = urllib.request.Request(
        f"{collector.http_url}/v1/traces", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/json")
        assert json.loads(response.read()) == {}
    assert collector.wait_stored(1) == 1
    (row,) = collector.query(
        "SELECT TraceId, SpanId, TraceState, SpanKind, SpanAttributes, StatusCode, StatusMessage, "
        "Duration, ScopeName, Events.Name FROM otel_traces"
    )
    assert (row["TraceId"], row["SpanId"], row["TraceState"]) == (trace_id, span_id, "vendor=x")
    assert row["SpanKind"] == "Producer"
    assert (row["StatusCode"], row["StatusMessage"]) == ("Error", "boom")
    assert row["Duration"] == 1000
    assert row["SpanAttributes"] == {
        "s": "v", "i": "9007199254740993", "d": "0.0000001", "b": "false",
        "bytes": "AP8=", "arr": '["x",2]', "kv": '{"a":2.5,"z":true}', "empty": "",
        "unknown-field-ignored": "ok",
    }
    assert row["Events.Name"] == ["e1"]
