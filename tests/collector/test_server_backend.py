"""The http(s):// store path with clickhouse-connect's real client against a server that
speaks ClickHouse's HTTP interface (tests/chserver.py, executing on chdb)."""

from __future__ import annotations

import re
import time

import clickhouse_connect
import pyarrow as pa
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


def test_client_handshake_native_chunked_insert_arrow_insert_and_select(ch_server):
    client = clickhouse_connect.get_client(host="127.0.0.1", port=ch_server.port,
                                           autogenerate_session_id=False)
    assert client.server_version.count(".") >= 2
    table = f"{ch_server.database}.t"
    client.command(f"CREATE TABLE {table} (a UInt64, m Map(LowCardinality(String), String)) "
                   "ENGINE = MergeTree ORDER BY a")
    client.insert(table, [[1, {"k": "v"}], [2, {}]], column_names=["a", "m"])
    native = [r for r in ch_server.requests if "FORMAT Native" in str(r["sql"]) and "INSERT" in str(r["sql"])]
    assert native and native[-1]["chunked"] == "chunked"
    client.insert_arrow(table, pa.table({"a": pa.array([3], pa.uint64()),
                                         "m": pa.array([[("x", "y")]], pa.map_(pa.string(), pa.string()))}))
    assert client.query(f"SELECT a, m FROM {table} ORDER BY a").result_rows == [
        (1, {"k": "v"}), (2, {}), (3, {"x": "y"})
    ]


def _send(grpc_endpoint: str, n: int) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "remote"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=grpc_endpoint, insecure=True)))
    tracer = provider.get_tracer("t")
    for i in range(n):
        tracer.start_span(f"op{i % 3}", attributes={"i": i}).end()
    provider.shutdown()


def test_collector_fans_out_to_embedded_and_server_stores(make_collector, ch_server):
    db = ch_server.database
    c = make_collector({
        "exporters": {"clickhouse/remote": {"endpoint": ch_server.endpoint, "database": db,
                                            "batch": {"flush_interval": "100ms"}}},
        "service": {"pipelines": {"traces": {"exporters": ["clickhouse", "clickhouse/remote"]}}},
    })
    _send(c.grpc_endpoint, 120)
    assert c.wait_stored(120) == 120
    client = clickhouse_connect.get_client(host="127.0.0.1", port=ch_server.port,
                                           autogenerate_session_id=False)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        remote = client.query(f"SELECT count(), uniqExact(SpanId) FROM {db}.otel_traces").result_rows[0]
        if remote[0] >= 120:
            break
        time.sleep(0.2)
    assert remote == (120, 120)
    local = c.query("SELECT groupArray(SpanId) AS ids FROM otel_traces")[0]["ids"]
    remote_ids = client.query(f"SELECT groupArray(SpanId) FROM {db}.otel_traces").result_rows[0][0]
    assert sorted(local) == sorted(remote_ids)
    assert any("FORMAT Arrow" in str(r["sql"]) for r in ch_server.requests)


def test_lqo_query_reads_a_server_store(make_collector, ch_server):
    db = ch_server.database
    c = make_collector({
        "exporters": {"clickhouse": {"endpoint": ch_server.endpoint, "database": db}},
    })
    _send(c.grpc_endpoint, 5)
    deadline = time.monotonic() + 20
    rows = []
    while time.monotonic() < deadline and len(rows) < 5:
        rows = c.query(f"SELECT SpanName FROM {db}.otel_traces")
        time.sleep(0.2)
    assert sorted(r["SpanName"] for r in rows) == ["op0", "op0", "op1", "op1", "op2"]
    c.stop()  # the server path needs no running collector: lqo query goes straight to it
    assert len(c.query(f"SELECT SpanId FROM {db}.otel_traces")) == 5


def test_create_schema_false_requires_existing_table(make_collector, ch_server):
    c = make_collector({"exporters": {"clickhouse": {"endpoint": ch_server.endpoint,
                                                     "database": ch_server.database,
                                                     "create_schema": False}}}, start=False)
    try:
        c.start(timeout=30)
        raise AssertionError("collector started without its table")
    except RuntimeError:
        pass
    assert "otel_traces, otel_traces_trace_id_ts, otel_traces_trace_id_ts_mv" in c.log()
    assert "create_schema is false; create them with the DDL from `lqo schema" in c.log()
    assert "Traceback" not in c.log()  # a clear error, and nothing else


@pytest.mark.parametrize("limit", ["server memory", "proxy body size"])
def test_an_insert_refused_as_too_large_is_sent_in_halves(make_collector, ch_server, limit):
    from test_bad_input import good_request, grpc_export

    c = make_collector({"exporters": {"clickhouse": {
        "endpoint": ch_server.endpoint, "database": ch_server.database,
        "batch": {"max_rows": 1000, "flush_interval": "100ms"}, "compress": False}}})
    if limit == "server memory":
        ch_server.max_insert_rows = 150  # ClickHouse's MEMORY_LIMIT_EXCEEDED (241), once a permanent drop
    else:
        ch_server.max_request_bytes = 40_000  # a 413 from a proxy in front of the server
    grpc_export(c.grpc_endpoint, good_request(1000, name="x" * 100).SerializeToString())
    assert ch_server.wait_spans(1000) == (1000, 1000)
    sent = re.compile(r'^lqo_exporter_sent_spans_total\{exporter="clickhouse"\} 1000\.0$', re.M)
    deadline = time.monotonic() + 10  # counted once the last insert has answered
    while not sent.search(metrics := c.metrics()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sent.search(metrics)
    assert not re.search(r'^lqo_exporter_send_failed_spans_total\{.*\} [1-9]', metrics, re.M)
    assert "refused 1 insert(s) as too large, the latest of 1000 spans" in c.log()
    if limit == "server memory":
        assert ch_server.inserted_rows == [125] * 8  # 1000 → 500 → 250 → 125, halved no further


def test_a_span_too_large_alone_is_dropped_and_counted(make_collector, ch_server):
    from test_bad_input import good_request, grpc_export

    ch_server.max_insert_rows = 0
    c = make_collector({"exporters": {"clickhouse": {
        "endpoint": ch_server.endpoint, "database": ch_server.database,
        "batch": {"flush_interval": "100ms"}}}})
    grpc_export(c.grpc_endpoint, good_request(4).SerializeToString())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and 'reason="too_large"} 4.0' not in c.metrics():
        time.sleep(0.1)
    assert 'lqo_exporter_send_failed_spans_total{exporter="clickhouse",reason="too_large"} 4.0' in c.metrics()
    assert "dropped 1 spans (too_large)" in c.log()
