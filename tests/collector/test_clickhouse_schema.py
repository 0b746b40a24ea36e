"""Acceptance 2: the stored tables are column-for-column the OpenTelemetry Collector
contrib ClickHouse exporter's; plus the cluster and TTL renderings of the same DDL."""

from __future__ import annotations

from lqo.collector.exporters.clickhouse.schema import SchemaSpec, ttl_expr

# Transcribed from opentelemetry-collector-contrib exporter/clickhouseexporter/internal/
# sqltemplates/traces_table.sql and traces_id_ts_lookup_table.sql, as DESCRIBE TABLE
# reports them (Nested columns appear as Array sub-columns).
CONTRIB_OTEL_TRACES = [
    ("Timestamp", "DateTime64(9)"),
    ("TraceId", "String"),
    ("SpanId", "String"),
    ("ParentSpanId", "String"),
    ("TraceState", "String"),
    ("SpanName", "LowCardinality(String)"),
    ("SpanKind", "LowCardinality(String)"),
    ("ServiceName", "LowCardinality(String)"),
    ("ResourceAttributes", "Map(LowCardinality(String), String)"),
    ("ScopeName", "String"),
    ("ScopeVersion", "String"),
    ("SpanAttributes", "Map(LowCardinality(String), String)"),
    ("Duration", "UInt64"),
    ("StatusCode", "LowCardinality(String)"),
    ("StatusMessage", "String"),
    ("Events.Timestamp", "Array(DateTime64(9))"),
    ("Events.Name", "Array(LowCardinality(String))"),
    ("Events.Attributes", "Array(Map(LowCardinality(String), String))"),
    ("Links.TraceId", "Array(String)"),
    ("Links.SpanId", "Array(String)"),
    ("Links.TraceState", "Array(String)"),
    ("Links.Attributes", "Array(Map(LowCardinality(String), String))"),
    ("ResourceAttributeItems", "Array(String)"),
    ("SpanAttributeItems", "Array(String)"),
]
CONTRIB_TRACE_ID_TS = [
    ("TraceId", "String"),
    ("Start", "SimpleAggregateFunction(min, DateTime)"),
    ("End", "SimpleAggregateFunction(max, DateTime)"),
]


def _describe(collector, table):
    rows = collector.query(f"DESCRIBE TABLE {table}")
    return [(r["name"], r["type"]) for r in rows]


def test_describe_matches_contrib_exporter(collector):
    assert _describe(collector, "otel_traces") == CONTRIB_OTEL_TRACES
    assert _describe(collector, "otel_traces_trace_id_ts") == CONTRIB_TRACE_ID_TS
    (view,) = collector.query(
        "SELECT engine, as_select FROM system.tables WHERE name = 'otel_traces_trace_id_ts_mv'"
    )
    assert view["engine"] == "MaterializedView"
    assert "min(Timestamp)" in view["as_select"] and "GROUP BY TraceId" in view["as_select"]
    (table,) = collector.query(
        "SELECT engine, sorting_key, partition_key FROM system.tables WHERE name = 'otel_traces'"
    )
    assert table == {
        "engine": "MergeTree",
        "sorting_key": "ServiceName, SpanName, toDateTime(Timestamp), Timestamp",
        "partition_key": "toDate(Timestamp)",
    }


def test_ttl_clause_uses_largest_whole_unit():
    assert ttl_expr(0, "toDateTime(Timestamp)") == ""
    assert ttl_expr(72 * 3600, "toDateTime(Timestamp)") == "TTL toDateTime(Timestamp) + toIntervalDay(3)"
    assert ttl_expr(5 * 3600, "x") == "TTL x + toIntervalHour(5)"
    assert ttl_expr(90, "x") == "TTL x + toIntervalSecond(90)"


def test_ttl_and_ttl_only_drop_parts_land_in_the_table(make_collector):
    c = make_collector({"exporters": {"clickhouse": {"ttl": "72h"}}})
    (row,) = c.query("SELECT create_table_query AS q FROM system.tables WHERE name = 'otel_traces'")
    assert "TTL toDateTime(Timestamp) + toIntervalDay(3)" in row["q"]
    assert "ttl_only_drop_parts = 1" in row["q"]


def test_cluster_rendering_is_valid_clickhouse_sql(chdb_store):
    writer, _ = chdb_store
    statements = SchemaSpec("otel", "otel_traces", 7 * 86400, "prod").statements()
    # database, spans, trace-id lookup and its view; GenAI table, roll-up, evaluations, the roll-up's
    # view, the GenAI view
    engines = ["", "ReplicatedMergeTree", "ReplicatedAggregatingMergeTree", "", "ReplicatedMergeTree",
               "ReplicatedAggregatingMergeTree", "ReplicatedMergeTree", "", ""]
    for sql, engine in zip(statements, engines, strict=True):
        assert "ON CLUSTER `prod`" in sql
        escaped = sql.replace("\\", "\\\\").replace("'", "\\'")
        formatted = writer.query(f"SELECT formatQuery('{escaped}')", "TSVRaw").bytes().decode()
        assert "ON CLUSTER prod" in formatted
        if engine:
            assert f"ENGINE = {engine}" in formatted
    assert "FROM `otel`.`otel_traces`\n" in statements[-1] and "TO `otel`.`otel_traces_genai`\n" in statements[-1]
    assert SchemaSpec(genai=False).statements() == SchemaSpec().statements()[:4]
    # the upgrades of an older version's GenAI tables and views, on the cluster too
    spec = SchemaSpec("otel", "otel_traces", 0, "prod")
    upgrades = [spec.add_columns_statement(spec.genai_table, spec.columns(spec.genai_table)[-2:]),
                *spec.update_view_statements(spec.genai_view, spec.genai_select()),
                *(spec.dedup_window_statement(table) for table in spec.token_tables())]
    assert len(upgrades) == 8
    for sql in upgrades:
        escaped = sql.replace("\\", "\\\\").replace("'", "\\'")
        formatted = writer.query(f"SELECT formatQuery('{escaped}')", "TSVRaw").bytes().decode()
        assert formatted.startswith("ALTER TABLE otel.otel_traces") and "ON CLUSTER prod" in formatted


def test_inserts_are_written_as_compact_parts(collector):
    """A collector batch (~1 KB a span, tens of thousands of spans) is written as one Compact part
    (a single data file) rather than Wide (a file and a compression buffer per column stream),
    which halves chdb's insert CPU (bench/BENCHMARKS.md); merges past 128 MiB make Wide parts."""
    import urllib.request

    from workload import make_request

    body = make_request(12_000, seed=3).SerializeToString()  # ~13 MB, one request
    request = urllib.request.Request(f"{collector.http_url}/v1/traces", data=body,
                                     headers={"Content-Type": "application/x-protobuf"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 200
    assert collector.wait_stored(12_000) == 12_000
    (row,) = collector.query("SELECT create_table_query AS q FROM system.tables WHERE name = 'otel_traces'")
    assert "min_bytes_for_wide_part = 134217728" in row["q"]
    parts = collector.query("SELECT part_type, data_uncompressed_bytes AS b FROM system.parts "
                            "WHERE table = 'otel_traces' AND active")
    assert {p["part_type"] for p in parts} == {"Compact"}
    assert max(int(p["b"]) for p in parts) > 10 * 2**20  # Wide under ClickHouse's default (10 MiB)
