"""Erasing a user's or a conversation's stored data (``lqo erase``, ``POST /api/v1/erase``): every
trace that names them goes whole, from every table that holds its rows; nothing else goes; the
identifier is never logged; hostile identifiers and requests get clear answers."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
from conftest import LQO
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, set_span_in_context
from test_bad_input import post

from lqo.collector.erase import CHUNK, EraseRefused, Selector, literal, traces_sql
from lqo.collector.exporters.clickhouse.schema import SchemaSpec

JSON = "application/json"
PROCESSED = {"processors": {"genai_normalize": {}, "cost": {}},
             "service": {"pipelines": {"traces": {"processors": ["genai_normalize", "cost"]}}}}
ASKED = '[{"role":"user","parts":[{"type":"text","content":"My card is 4111 1111 1111 1111"}]}]'


def _chat(tracer: Any, **attributes: Any) -> Any:
    span = tracer.start_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 20, **attributes})
    span.end()
    return span


def _feedback(logger: Any, label: str, extra: dict[str, str] | None = None, **kw: Any) -> None:
    attributes = {"gen_ai.evaluation.name": "user_feedback", "gen_ai.evaluation.score.label": label, **(extra or {})}
    if "response_id" in kw:
        attributes["gen_ai.response.id"] = kw.pop("response_id")
    logger.emit(event_name="gen_ai.evaluation.result", attributes=attributes, **kw)


def send_traces(url: str) -> dict[str, str]:
    """Five traces, by what names whom, and feedback on three calls; the traces' ids."""
    provider = TracerProvider(resource=Resource.create({"service.name": "support"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces")))
    tracer = provider.get_tracer("app")
    logs = LoggerProvider(resource=Resource.create({"service.name": "support"}))
    logs.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{url}/v1/logs")))
    logger = logs.get_logger("feedback")
    ids: dict[str, str] = {}
    # ann's request: the server span names her (enduser.id); the call under it too; a tool span
    # carries the prompt without naming anyone
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER, attributes={"enduser.id": "ann"}) as root:
        call = _chat(tracer, **{"user.id": "ann", "gen_ai.input.messages": ASKED, "gen_ai.response.id": "resp-ann"})
        tracer.start_span("execute_tool lookup", attributes={"gen_ai.operation.name": "execute_tool",
                                                             "gen_ai.tool.call.arguments": '{"card": "4111"}'}).end()
        ids["ann_request"] = f"{root.get_span_context().trace_id:032x}"
    with tracer.start_as_current_span("nightly digest") as root:  # named only on a non-GenAI span
        tracer.start_span("GET /profile", attributes={"user.id": "ann"}).end()
        ids["ann_job"] = f"{root.get_span_context().trace_id:032x}"
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER) as root:
        _chat(tracer, **{"user.id": "bob", "gen_ai.conversation.id": "conv-9", "gen_ai.response.id": "resp-bob"})
        ids["bob"] = f"{root.get_span_context().trace_id:032x}"
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER) as root:
        _chat(tracer, **{"session.id": "conv-9"})  # OpenInference's name: genai_normalize renames it
        ids["conv_9"] = f"{root.get_span_context().trace_id:032x}"
    with tracer.start_as_current_span("POST /chat", kind=SpanKind.SERVER) as root:
        _chat(tracer, **{"user.id": "x' OR 1=1 --"})
        ids["odd"] = f"{root.get_span_context().trace_id:032x}"
    # ann's feedback, in her call's span context and by its response id; bob's, by his
    _feedback(logger, "thumbs_down", context=set_span_in_context(call))
    _feedback(logger, "thumbs_down", response_id="resp-ann")
    _feedback(logger, "meh", context=set_span_in_context(call), response_id="resp-ann")  # both: counted once
    _feedback(logger, "thumbs_down", {"user.id": "ann"}, response_id="resp-never-stored")  # names her itself
    _feedback(logger, "thumbs_up", response_id="resp-bob")
    provider.shutdown()
    logs.shutdown()
    return ids


def _lqo_erase(collector: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LQO, "erase", "--config", str(collector.config_path), *args],
                          capture_output=True, text=True, timeout=300, cwd=collector.workdir)


def _traces(collector: Any, table: str = "otel_traces") -> dict[str, int]:
    return {r["TraceId"]: int(r["n"]) for r in collector.query(f"SELECT TraceId, count() AS n FROM {table} GROUP BY 1")}


def _rollup_calls(collector: Any) -> int:
    return int(collector.query("SELECT sum(Calls) AS n FROM otel_traces_genai_1m")[0]["n"])


def test_erasing_a_user_takes_every_trace_that_names_them_and_nothing_else(make_collector: Any) -> None:
    collector = make_collector(PROCESSED)
    ids = send_traces(collector.http_url)
    assert collector.wait_stored(11) == 11 and collector.wait_stored(5, table="otel_traces_genai") == 5
    assert collector.wait_stored(5, table="otel_traces_genai_evaluations") == 5
    before, calls_before = _traces(collector), _rollup_calls(collector)
    ann = {ids["ann_request"], ids["ann_job"]}
    ann_spans = sum(n for t, n in before.items() if t in ann)

    counted = _lqo_erase(collector, "--user", "ann", "--format", "json")
    assert counted.returncode == 0, counted.stderr
    assert json.loads(counted.stdout) == {"kind": "user", "traces": 2, "spans": ann_spans, "genai_rows": 2,
                                          "evaluations": 4, "erased": False}
    assert "run again with --yes" in _lqo_erase(collector, "--user", "ann").stdout
    assert _traces(collector) == before  # counting erases nothing

    done = _lqo_erase(collector, "--user", "ann", "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"erased 2 trace(s): {ann_spans} span(s), 2 GenAI row(s), 4 evaluation result(s)"
    after = _traces(collector)
    assert after == {t: n for t, n in before.items() if t not in ann}  # the others, whole
    assert not ann & set(_traces(collector, "otel_traces_genai"))
    assert not ann & set(_traces(collector, "otel_traces_trace_id_ts"))
    assert [r["ResponseId"] for r in collector.query("SELECT ResponseId FROM otel_traces_genai_evaluations")] == [
        "resp-bob"]  # ann's feedback went: with her call (by span, by response id) and naming her; bob's stays
    assert not collector.query("SELECT count() AS n FROM otel_traces WHERE SpanAttributes['gen_ai.tool.call.arguments'] "
                               "!= '' OR SpanAttributes['gen_ai.input.messages'] LIKE '%4111%'")[0]["n"]
    assert _rollup_calls(collector) == calls_before  # counts only, no identifier: kept
    log = collector.log()
    assert "erased 2 trace(s) (5 spans, 2 GenAI rows, 4 evaluation results)" in log and "named by a user identifier" in log
    assert not re.search(r"\bann\b", log)  # never the identifier (as a word: "cannot" holds it too)
    again = _lqo_erase(collector, "--user", "ann", "--yes")
    assert again.returncode == 0 and again.stdout.strip() == "nothing stored names this user"

    # a conversation, by either name producers give it; then one trace by its id
    out = _lqo_erase(collector, "--conversation", "conv-9", "--yes", "--format", "json")
    assert json.loads(out.stdout)["traces"] == 2
    out = _lqo_erase(collector, "--trace", ids["odd"].upper(), "--yes", "--format", "json")
    assert json.loads(out.stdout) == {"kind": "trace", "traces": 1, "spans": 2, "genai_rows": 1, "evaluations": 0,
                                      "erased": True}
    assert _traces(collector) == {}

    # the store opened directly when no collector holds it
    collector.stop()
    assert _lqo_erase(collector, "--user", "bob").stdout.strip() == "nothing stored names this user"


def test_erasing_from_a_server_store(make_collector: Any, ch_server: Any) -> None:
    """With a ClickHouse server as the store, lqo erase goes straight to it (clickhouse-connect)."""
    db = ch_server.database
    collector = make_collector({**PROCESSED, "exporters": {"clickhouse": {"endpoint": ch_server.endpoint,
                                                                          "database": db}}})
    ids = send_traces(collector.http_url)
    table = f"{db}.otel_traces"
    assert collector.wait_stored(11, table=table) == 11
    assert collector.wait_stored(5, table=f"{db}.otel_traces_genai_evaluations") == 5
    done = _lqo_erase(collector, "--user", "ann", "--yes", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"kind": "user", "traces": 2, "spans": 5, "genai_rows": 2, "evaluations": 4,
                                        "erased": True}
    assert set(_traces(collector, table)) == {ids["bob"], ids["conv_9"], ids["odd"]}
    assert set(_traces(collector, f"{db}.otel_traces_genai")) == {ids["bob"], ids["conv_9"], ids["odd"]}
    assert any("ALTER TABLE" in str(r["sql"]) and "DELETE WHERE TraceId IN" in str(r["sql"]) for r in ch_server.requests)


def test_hostile_identifiers_name_only_themselves(make_collector: Any) -> None:
    collector = make_collector(PROCESSED)
    ids = send_traces(collector.http_url)
    assert collector.wait_stored(11) == 11
    for value in ("' OR 1=1 --", "ann\\", "ann' OR '1'='1", "%", "*", "ann\x00"):
        status, _, body = post(f"{collector.http_url}/api/v1/erase", json.dumps({"user": value, "confirm": True}).encode(),
                               JSON)
        assert status == 200, body
        assert json.loads(body)["traces"] == 0, value
    status, _, body = post(f"{collector.http_url}/api/v1/erase", json.dumps({"user": "x' OR 1=1 --",
                                                                            "confirm": True}).encode(), JSON)
    assert json.loads(body)["traces"] == 1  # the user whose id it is, and only them
    assert ids["odd"] not in _traces(collector) and len(_traces(collector)) == 4


@pytest.mark.parametrize(("payload", "status", "says"), [
    (b'{"user": "a", "trace": "b"}', 400, "exactly one of user, conversation, trace"),
    (b'{"confirm": true}', 400, "exactly one of"),
    (b'{"trace": "not-hex", "confirm": true}', 400, "32 hexadecimal digits"),
    (b'{"user": "   "}', 400, "empty"),
    (json.dumps({"user": "u" * 2000}).encode(), 400, "user"),
    (b'{"user": "a", "confirm": "yes please"}', 400, "confirm"),
    (b"{not json", 400, "body"),
    (b'{"user": "' + b"a" * 20_000 + b'"}', 413, "16 KiB"),
])
def test_bad_erase_requests_get_clear_answers(collector: Any, payload: bytes, status: int, says: str) -> None:
    got, _, body = post(f"{collector.http_url}/api/v1/erase", payload, JSON)
    assert got == status and says in json.loads(body)["error"], body


def test_the_sql_names_the_identifier_as_a_literal() -> None:
    spec = SchemaSpec()
    sql = traces_sql(spec, Selector("user", "o'brien\\"))
    assert "SpanAttributes['user.id'] = 'o\\'brien\\\\'" in sql and "SpanAttributes['enduser.id']" in sql
    assert literal("a'b\\c") == "'a\\'b\\\\c'"
    with pytest.raises(EraseRefused):
        Selector("email", "x")
    assert CHUNK * len(literal("0" * 32) + ", ") < 256 * 1024  # each statement under max_query_size


def test_finding_a_users_traces_reads_only_the_granules_the_values_index_lets_through(chdb_store: Any) -> None:
    """The spans table's bloom filter on its attribute values (the contrib exporter's
    ``idx_span_attr_value``) serves ``SpanAttributes['user.id'] = …``: an erase reads the
    granules that may hold the identifier, not the whole table."""
    writer, reader = chdb_store
    spec = SchemaSpec(database="erase_index")
    for statement in spec.statements():
        writer.query(statement)
    try:
        writer.query("INSERT INTO erase_index.otel_traces (Timestamp, TraceId, SpanId, ServiceName, SpanName, "
                     "SpanAttributes) SELECT now64(9) - number, hex(number), hex(number), 'svc', 'chat', "
                     "map('user.id', concat('u-', toString(number % 50000)), 'enduser.id', 'x') FROM numbers(120000)")
        plan = reader.query("EXPLAIN indexes = 1 " + traces_sql(spec, Selector("user", "u-42")), "TSVRaw").bytes().decode()
        after = plan.split("Name: idx_span_attr_value", 1)[1]
        read, total = (int(n) for n in after.split("Granules: ", 1)[1].split()[0].split("/"))
        assert total >= 14 and read <= total // 2, plan
        found = reader.query(traces_sql(spec, Selector("user", "u-42")), "TSVRaw").bytes().decode().split()
        assert sorted(int(trace, 16) for trace in found) == [42, 50042, 100042]
    finally:
        writer.query("DROP DATABASE erase_index")


def test_lqo_erase_needs_one_identifier() -> None:
    out = subprocess.run([LQO, "erase", "--yes"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "one of the arguments --user --conversation --trace is required" in out.stderr
    bad = subprocess.run([LQO, "erase", "--trace", "12"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "32 hexadecimal digits" in bad.stderr
