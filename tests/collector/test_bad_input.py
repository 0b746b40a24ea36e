"""Acceptance 3: every bad-input case gets its documented status, and the collector keeps
accepting good data afterwards."""

from __future__ import annotations

import gzip
import json
import os
import time
import urllib.error
import urllib.request

import grpc
import pytest
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LIMIT = 64 * 1024


def good_request(n: int = 1, name: str = "good") -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    spans = req.resource_spans.add().scope_spans.add().spans
    for _ in range(n):
        spans.add(trace_id=os.urandom(16), span_id=os.urandom(8), name=name,
                  start_time_unix_nano=1, end_time_unix_nano=2)
    return req


def post(url: str, body: bytes, content_type: str, encoding: str | None = None):
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def grpc_export(endpoint: str, body: bytes) -> bytes:
    with grpc.insecure_channel(endpoint) as channel:
        return channel.unary_unary(EXPORT)(body, timeout=30)


_sent_good = {}


def assert_still_accepts(collector) -> None:
    """A fresh good span over each transport is accepted and stored."""
    before = _sent_good.get(id(collector), 0)
    status, _, _ = post(f"{collector.http_url}/v1/traces",
                        good_request().SerializeToString(), "application/x-protobuf")
    assert status == 200
    grpc_export(collector.grpc_endpoint, good_request().SerializeToString())
    _sent_good[id(collector)] = before + 2
    assert collector.wait_stored(before + 2) >= before + 2


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """One collector with small limits shared by the stateless bad-input cases."""
    from conftest import start_collector
    proc = start_collector(tmp_path_factory.mktemp("limited"), {"receivers": {"otlp": {"protocols": {
        "grpc": {"max_recv_msg_size": LIMIT}, "http": {"max_request_body_size": LIMIT}}}}})
    yield proc
    proc.stop()


def test_http_undecodable_protobuf_is_400_with_status(limited):
    status, _, body = post(f"{limited.http_url}/v1/traces", b"\xff\xff\xff garbage",
                                 "application/x-protobuf")
    assert status == 400
    st = status_pb2.Status.FromString(body)
    assert st.code == 3 and "cannot decode protobuf" in st.message
    assert_still_accepts(limited)


@pytest.mark.parametrize("payload", [b"{not json", b"[1,2]", b'{"resourceSpans": 5}',
                                     b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}',
                                     b"[" * 100_000 + b"]" * 100_000])
def test_http_bad_json_is_400_with_message(limited, payload):
    status, _, body = post(f"{limited.http_url}/v1/traces", payload, "application/json")
    assert status in (400, 413)
    assert json.loads(body)["message"]
    assert_still_accepts(limited)


def test_http_unsupported_content_type_is_415(limited):
    status, _, body = post(f"{limited.http_url}/v1/traces", b"hello", "text/plain")
    assert status == 415
    assert "application/x-protobuf" in json.loads(body)["message"]
    assert_still_accepts(limited)


def test_http_body_over_limit_is_413(limited):
    big = good_request(200, name="x" * 400).SerializeToString()
    assert len(big) > LIMIT
    status, _, body = post(f"{limited.http_url}/v1/traces", big, "application/x-protobuf")
    assert status == 413
    assert "limit" in status_pb2.Status.FromString(body).message
    assert_still_accepts(limited)


def test_http_gzip_bomb_is_413_without_inflating(limited):
    bomb = gzip.compress(b"\x00" * (50 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < LIMIT  # small on the wire, 50 MiB inflated
    status, _, _ = post(f"{limited.http_url}/v1/traces", bomb, "application/x-protobuf", "gzip")
    assert status == 413
    assert "lqo_receiver_refused_spans_total" in limited.metrics()
    assert_still_accepts(limited)


def test_http_clients_that_hang_up_mid_body_cost_nothing(limited):
    """A client that closes the connection halfway through its body, on OTLP, /v1/evaluate and
    /api/v1/query: nothing is stored from it, nothing is logged as an error, the next works."""
    import http.client

    port = int(limited.http_url.rsplit(":", 1)[1])
    for path, content_type in (("/v1/traces", "application/x-protobuf"), ("/v1/evaluate", "application/json"),
                               ("/api/v1/query", "application/json")):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", content_type)
        conn.putheader("Content-Length", "5000")
        conn.endheaders()
        conn.send(b"\x0a\x80")
        time.sleep(0.2)
        conn.close()
    time.sleep(0.5)
    log = limited.log()
    assert "Traceback" not in log and "ClientDisconnect" not in log, log[-2000:]
    assert_still_accepts(limited)


def test_http_query_bodies_are_read_with_a_limit(limited):
    """/api/v1/query reads at most its limit (it used to buffer any body whole), and takes gzip."""
    from lqo.collector.query import MAX_SQL_BYTES

    status, _, body = post(f"{limited.http_url}/api/v1/query", b"x" * (MAX_SQL_BYTES + 2048), "application/json")
    assert status == 413 and "query request over" in json.loads(body)["error"]
    bomb = gzip.compress(b" " * (64 * 1024 * 1024), compresslevel=9)
    status, _, body = post(f"{limited.http_url}/api/v1/query", bomb, "application/json", "gzip")
    assert status == 413
    query = gzip.compress(json.dumps({"sql": "SELECT 1 AS one"}).encode())
    status, _, body = post(f"{limited.http_url}/api/v1/query", query, "application/json", "gzip")
    assert status == 200 and json.loads(body.splitlines()[0]) == {"one": 1}
    assert_still_accepts(limited)


def test_http_gzip_body_within_limit_is_accepted(limited):
    body = gzip.compress(good_request(3).SerializeToString())
    status, _, _ = post(f"{limited.http_url}/v1/traces", body, "application/x-protobuf", "gzip")
    assert status == 200
    assert_still_accepts(limited)


@pytest.mark.parametrize("encoding,body", [("gzip", b"not gzip at all"), ("br", b"x"),
                                           ("gzip", gzip.compress(b"abc")[:-6])])
def test_http_bad_content_encoding_is_400(limited, encoding, body):
    status, _, resp = post(f"{limited.http_url}/v1/traces", body, "application/x-protobuf", encoding)
    assert status == 400
    assert status_pb2.Status.FromString(resp).message
    assert_still_accepts(limited)


def test_grpc_undecodable_is_invalid_argument(limited):
    with pytest.raises(grpc.RpcError) as err:
        grpc_export(limited.grpc_endpoint, b"\xff\xff\xff garbage")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode" in err.value.details()
    assert_still_accepts(limited)


def test_grpc_message_over_limit_is_resource_exhausted(limited):
    big = good_request(200, name="x" * 400).SerializeToString()
    with pytest.raises(grpc.RpcError) as err:
        grpc_export(limited.grpc_endpoint, big)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_still_accepts(limited)


def _with_invalid_ids() -> ExportTraceServiceRequest:
    req = good_request(3, name="valid")
    spans = req.resource_spans[0].scope_spans[0].spans
    spans.add(trace_id=b"\x01" * 15, span_id=os.urandom(8), name="short-trace-id")
    spans.add(trace_id=os.urandom(16), span_id=b"", name="no-span-id")
    return req


def test_partial_success_over_http_and_grpc(collector):
    status, _, body = post(f"{collector.http_url}/v1/traces", _with_invalid_ids().SerializeToString(),
                           "application/x-protobuf")
    assert status == 200
    resp = ExportTraceServiceResponse.FromString(body)
    assert resp.partial_success.rejected_spans == 2
    assert "invalid trace or span id" in resp.partial_success.error_message
    resp = ExportTraceServiceResponse.FromString(
        grpc_export(collector.grpc_endpoint, _with_invalid_ids().SerializeToString()))
    assert resp.partial_success.rejected_spans == 2
    assert collector.wait_stored(6) == 6
    names = {r["SpanName"] for r in collector.query("SELECT DISTINCT SpanName FROM otel_traces")}
    assert names == {"valid"}
    assert 'reason="invalid_span"' in collector.metrics()


def test_backpressure_refuses_with_retry_after_then_recovers_without_loss(make_collector, ch_server):
    ch_server.fail_inserts = True
    c = make_collector({
        "exporters": {"clickhouse": {
            "endpoint": ch_server.endpoint, "database": ch_server.database,
            "sending_queue": {"queue_size": 50},
            "batch": {"max_rows": 50, "flush_interval": "50ms"},
            "retry_on_failure": {"initial_interval": "100ms", "max_interval": "200ms"},
        }},
        "service": {"queue": {"queue_size": 50}},
    })
    accepted = 0
    refused_http = refused_grpc = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (refused_http is None or refused_grpc is None):
        status, headers, _ = post(f"{c.http_url}/v1/traces", good_request(25).SerializeToString(),
                                  "application/x-protobuf")
        if status == 200:
            accepted += 25
        elif refused_http is None:
            refused_http = (status, headers)
        try:
            grpc_export(c.grpc_endpoint, good_request(25).SerializeToString())
            accepted += 25
        except grpc.RpcError as exc:
            refused_grpc = exc.code()
    assert refused_http is not None and refused_http[0] == 503
    assert refused_http[1]["retry-after"] == "1"
    assert refused_grpc == grpc.StatusCode.UNAVAILABLE
    assert 'reason="queue_full"' in c.metrics()

    ch_server.fail_inserts = False
    table = f"{ch_server.database}.otel_traces"
    deadline = time.monotonic() + 30
    stored = 0
    while time.monotonic() < deadline and stored < accepted:
        stored = int(c.query(f"SELECT count() AS n FROM {table}")[0]["n"])
        time.sleep(0.2)
    assert stored == accepted  # everything acknowledged was written, nothing twice
    status, _, _ = post(f"{c.http_url}/v1/traces", good_request(1).SerializeToString(),
                        "application/x-protobuf")
    assert status == 200
    # written before the test ends: the store stops first at teardown, and the collector would
    # then spend its 30 s shutdown_timeout retrying this span
    while time.monotonic() < deadline and stored <= accepted:
        stored = int(c.query(f"SELECT count() AS n FROM {table}")[0]["n"])
        time.sleep(0.1)
    assert stored == accepted + 1
