"""GenAI evaluation results sent as OTLP log records (``gen_ai.evaluation.result``): a user's
feedback or an evaluator's score, usually sent after the call and often from another request,
stored in ``otel_traces_genai_evaluations`` whatever came first, named by their span or by the
call's response id. The real Python SDK's Logs API and OTLP exporters (HTTP and gRPC)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import LQO
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord as PbLogRecord
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, set_span_in_context
from test_bad_input import post
from test_persistent_queue import _storage_overrides

from lqo.collector.evaluations import _COMPACT_AT, EvaluationWriter, Spool
from lqo.collector.exporters.clickhouse.backends import StoreError
from lqo.collector.model.genai_events import MAX_EVALUATION_TEXT, Evaluation, decode_logs
from lqo.collector.persistentqueue import QueueDirectoryInUse

EVALUATION = "gen_ai.evaluation.result"
PROCESSED = {"processors": {"genai_normalize": {}, "cost": {}},
             "service": {"pipelines": {"traces": {"processors": ["genai_normalize", "cost"]}}}}


def _providers(collector: Any, grpc: bool = False) -> tuple[TracerProvider, LoggerProvider]:
    resource = Resource.create({"service.name": "support-bot"})
    tracer = TracerProvider(resource=resource)
    tracer.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{collector.http_url}/v1/traces")))
    logs = LoggerProvider(resource=resource)
    exporter = (GrpcLogExporter(endpoint=collector.grpc_endpoint, insecure=True) if grpc
                else OTLPLogExporter(endpoint=f"{collector.http_url}/v1/logs"))
    logs.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    return tracer, logs


def _rows(collector: Any) -> list[dict[str, Any]]:
    return collector.query("SELECT TraceId, SpanId, ResponseId, ServiceName, Name, ScoreValue, ScoreLabel, "
                           "Explanation, Attributes FROM otel_traces_genai_evaluations ORDER BY Timestamp, ResponseId")


def _wait_rows(collector: Any, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    rows = _rows(collector)
    while len(rows) < n and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = _rows(collector)
    return rows


@pytest.mark.parametrize("grpc", [False, True], ids=["http", "grpc"])
def test_feedback_after_the_call_is_stored_and_joins_it(make_collector: Any, grpc: bool) -> None:
    collector = make_collector(PROCESSED)
    tracer_provider, log_provider = _providers(collector, grpc)
    tracer, logger = tracer_provider.get_tracer("app"), log_provider.get_logger("app")
    span = tracer.start_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes={
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.response.id": "chatcmpl-77", "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5})
    span.end()
    assert collector.wait_stored(1, table="otel_traces_genai") == 1  # the call is stored: feedback comes later

    # the user's thumbs-down, in the call's span context (the app kept it)
    logger.emit(event_name=EVALUATION, context=set_span_in_context(span), attributes={
        "gen_ai.evaluation.name": "user_feedback", "gen_ai.evaluation.score.label": "thumbs_down",
        "gen_ai.evaluation.score.value": 0.0, "gen_ai.evaluation.explanation": "wrong order number",
        "app.feedback.channel": "web"})
    # an offline judge that knows only the response id, later still, in no span
    logger.emit(event_name=EVALUATION, attributes={
        "gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.82,
        "gen_ai.response.id": "chatcmpl-77"})
    # and one about a call this store never saw
    logger.emit(event_name=EVALUATION, attributes={
        "gen_ai.evaluation.name": "relevance", "gen_ai.evaluation.score.value": 0.25,
        "gen_ai.response.id": "chatcmpl-elsewhere"})
    log_provider.shutdown()
    tracer_provider.shutdown()

    feedback, judge, _ = _wait_rows(collector, 3)
    ids = span.get_span_context()
    assert (feedback["TraceId"], feedback["SpanId"]) == (f"{ids.trace_id:032x}", f"{ids.span_id:016x}")
    assert (feedback["Name"], feedback["ScoreValue"], feedback["ScoreLabel"]) == ("user_feedback", 0, "thumbs_down")
    assert (feedback["Explanation"], feedback["ServiceName"]) == ("wrong order number", "support-bot")
    assert feedback["Attributes"] == {"app.feedback.channel": "web"}
    assert (judge["TraceId"], judge["SpanId"], judge["ResponseId"]) == ("", "", "chatcmpl-77")
    assert (judge["Name"], judge["ScoreValue"], judge["ScoreLabel"]) == ("relevance", 0.82, "")
    # each joins its call: by the response id it names, else by its span
    joined = collector.query(
        "SELECT e.Name AS name, g.RequestModel AS model FROM otel_traces_genai_evaluations AS e "
        "INNER JOIN otel_traces_genai AS g ON (e.ResponseId != '' AND e.ResponseId = g.ResponseId) "
        "OR (e.ResponseId = '' AND e.SpanId != '' AND e.SpanId = g.SpanId) ORDER BY name")
    assert joined == [{"name": "relevance", "model": "gpt-4o"}, {"name": "user_feedback", "model": "gpt-4o"}]
    metrics = collector.metrics()
    assert 'lqo_genai_evaluations_total{outcome="stored"} 3.0' in metrics
    transport = "grpc" if grpc else "http"
    assert f'lqo_receiver_log_records_total{{kind="evaluation",receiver="otlp",transport="{transport}"}} 3.0' in metrics

    # lqo report --evaluations: per evaluation and model, from each result's call
    out = subprocess.run([LQO, "report", "--evaluations", "--config", str(collector.config_path), "--format", "json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {(r["evaluation"], r["model"]): r for r in map(json.loads, out.stdout.splitlines())}
    assert set(rows) == {("relevance", "gpt-4o"), ("relevance", "-"), ("user_feedback", "gpt-4o")}
    relevance, orphan, thumbs = rows["relevance", "gpt-4o"], rows["relevance", "-"], rows["user_feedback", "gpt-4o"]
    assert (relevance["service"], relevance["provider"], relevance["results"], relevance["mean_score"]) == (
        "support-bot", "openai", 1, 0.82)
    assert (orphan["service"], orphan["mean_score"], orphan["labels"]) == ("-", 0.25, "- 1")
    assert (thumbs["min_score"], thumbs["labels"]) == (0, "thumbs_down 1")
    by_user = subprocess.run([LQO, "report", "--evaluations", "--by", "user", "--config", str(collector.config_path),
                              "--format", "json"], capture_output=True, text=True, timeout=120)
    assert sorted((r["evaluation"], r["user"], r["results"]) for r in map(json.loads, by_user.stdout.splitlines())) == [
        ("relevance", "-", 2), ("user_feedback", "-", 1)]
    assert 'kind="genai_event"' not in metrics  # none waited for a span


def test_a_users_comment_is_redacted_as_message_text_is(make_collector: Any) -> None:
    """An explanation is often a user's own words: it goes through the pipeline's redaction and
    pii processors (real Presidio) before it is stored, like a prompt."""
    collector = make_collector({"processors": {"redaction": {}, "pii": {}},
                                "service": {"pipelines": {"traces": {"processors": ["redaction", "pii"]}}}})
    _, log_provider = _providers(collector)
    log_provider.get_logger("app").emit(event_name=EVALUATION, attributes={
        "gen_ai.evaluation.name": "user_feedback", "gen_ai.evaluation.score.label": "thumbs_down",
        "gen_ai.response.id": "chatcmpl-5",
        "gen_ai.evaluation.explanation": "Wrong! Call me at 415-555-0132, the page was "
                                         "https://shop.example/orders?key=sk-live-123 not that.",
        "app.comment": "reach me at 415-555-0132"})
    log_provider.shutdown()
    [row] = _wait_rows(collector, 1)
    assert "415-555-0132" not in json.dumps(row) and "sk-live-123" not in json.dumps(row)
    assert "<PHONE_NUMBER>" in row["Explanation"] and "?key=REDACTED" in row["Explanation"]
    assert row["Attributes"] == {"app.comment": "reach me at <PHONE_NUMBER>"}
    assert (row["Name"], row["ScoreLabel"], row["ResponseId"]) == ("user_feedback", "thumbs_down", "chatcmpl-5")


def _record(**kw: Any) -> PbLogRecord:
    attrs = kw.pop("attrs", {})
    return PbLogRecord(event_name=EVALUATION, time_unix_nano=1_700_000_000_000_000_000, attributes=[
        KeyValue(key=k, value=AnyValue(string_value=v) if isinstance(v, str) else AnyValue(double_value=v))
        for k, v in attrs.items()], **kw)


def test_records_that_name_no_evaluation_or_no_call_are_counted_not_stored(collector: Any) -> None:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    records.extend([
        _record(attrs={"gen_ai.evaluation.score.value": 1.0, "gen_ai.response.id": "r-1"}),  # no name
        _record(attrs={"gen_ai.evaluation.name": "x"}),  # no span, no response id
        _record(trace_id=bytes(16), span_id=b"12345678", attrs={"gen_ai.evaluation.name": "x"}),  # an invalid trace id
        _record(attrs={"gen_ai.evaluation.name": "n" * 300, "gen_ai.response.id": "r-1"}),  # a name too long
        _record(attrs={"gen_ai.evaluation.name": "ok", "gen_ai.response.id": "r-2",
                       "gen_ai.evaluation.score.value": "not a number",
                       "gen_ai.evaluation.explanation": "é" * (MAX_EVALUATION_TEXT + 10)}),
        _record(attrs={"gen_ai.evaluation.name": "inf", "gen_ai.response.id": "r-3",
                       "gen_ai.evaluation.score.value": float("inf")}),
    ])
    status, _, _ = post(f"{collector.http_url}/v1/logs", request.SerializeToString(), "application/x-protobuf")
    assert status == 200
    ok, inf = _wait_rows(collector, 2)
    assert (ok["Name"], ok["ScoreValue"], ok["ResponseId"]) == ("ok", None, "r-2")
    assert ok["Explanation"] == "é" * MAX_EVALUATION_TEXT + "…[truncated]"
    assert (inf["Name"], inf["ScoreValue"]) == ("inf", None)
    assert 'kind="invalid",receiver="otlp",transport="http"} 4.0' in collector.metrics()
    # the JSON encoding too
    body = json.dumps({"resourceLogs": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": "judge"}}]}, "scopeLogs": [{"logRecords": [
            {"eventName": EVALUATION, "attributes": [
                {"key": "gen_ai.evaluation.name", "value": {"stringValue": "faithfulness"}},
                {"key": "gen_ai.evaluation.score.value", "value": {"doubleValue": 0.5}},
                {"key": "gen_ai.response.id", "value": {"stringValue": "r-9"}}]}]}]}]}).encode()
    status, _, _ = post(f"{collector.http_url}/v1/logs", body, "application/json")
    assert status == 200
    assert _wait_rows(collector, 3)[-1]["ServiceName"] == "judge"


def test_decode_keeps_evaluations_apart_from_events_that_wait() -> None:
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    records.extend([
        _record(trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9)), attrs={"gen_ai.evaluation.name": "a"}),
        PbLogRecord(event_name="gen_ai.user.message", trace_id=bytes(range(1, 17)), span_id=bytes(range(1, 9))),
    ])
    out = decode_logs(request)
    assert [e.name for e in out.events] == ["gen_ai.user.message"]
    [evaluation] = out.evaluations
    assert (evaluation.name, evaluation.span_id, evaluation.service) == ("a", bytes(range(1, 9)).hex(),
                                                                        "unknown_service")


class _Telemetry:
    """The collector's own counter, as the writer uses it."""

    def __init__(self) -> None:
        from lqo.collector.telemetry import SelfTelemetry

        self.real = SelfTelemetry()
        self.genai_evaluations = self.real.genai_evaluations

    def count(self, outcome: str) -> float:
        return self.genai_evaluations.labels(outcome)._value.get()


class _FlakyStore:
    """A ClickHouse exporter whose store is down for the first ``failures`` writes."""

    def __init__(self, inner: Any, failures: int, permanent: bool = False) -> None:
        self.inner, self.failures, self.permanent, self.backend = inner, failures, permanent, inner.backend

    def insert_evaluations(self, table: Any, token: str) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreError("down for a moment", permanent=self.permanent)
        self.inner.insert_evaluations(table, token)


def _evaluation(i: int) -> Evaluation:
    return Evaluation(1_700_000_000_000_000_000 + i, "", "", f"r-{i}", "svc", "user_feedback", 1.0, "up", "", {})


@contextlib.contextmanager
def _server_exporter(ch_server: Any) -> Iterator[Any]:
    """A ClickHouse exporter started on the test server's database, shut down after."""
    from lqo.collector.exporters.clickhouse.factory import (
        ClickHouseExporter,
        ClickHouseExporterConfig,
    )

    exporter = ClickHouseExporter(ClickHouseExporterConfig(endpoint=ch_server.endpoint, database=ch_server.database))
    exporter.start()
    try:
        yield exporter
    finally:
        exporter.shutdown()


def test_the_writer_retries_bounds_and_drops_counted(ch_server: Any) -> None:
    table = f"{ch_server.database}.otel_traces_genai_evaluations"

    def stored() -> int:
        return int(ch_server.reader.query(f"SELECT count() FROM {table}", "TSVRaw").bytes())

    with _server_exporter(ch_server) as exporter:
        telemetry = _Telemetry()
        flaky = _FlakyStore(exporter, failures=1)
        writer = EvaluationWriter([flaky], telemetry, max_rows=3)
        assert writer.offer([_evaluation(0), _evaluation(1)])
        writer.flush()  # the store is down: kept
        assert len(writer) == 2 and stored() == 0
        assert writer.offer([_evaluation(2)])
        assert not writer.offer([_evaluation(3)])  # full: the receiver answers 503, the SDK retries
        writer.flush()
        assert len(writer) == 0 and stored() == 3 and telemetry.count("stored") == 3
        gone = EvaluationWriter([_FlakyStore(exporter, failures=1, permanent=True)], telemetry)
        assert gone.offer([_evaluation(4)])
        gone.flush()
        assert telemetry.count("dropped") == 1 and stored() == 3
        down = EvaluationWriter([_FlakyStore(exporter, failures=99)], telemetry)
        down.start()
        assert down.offer([_evaluation(5)])
        down.shutdown(timeout=2)  # still down at the end: dropped, counted, not lost silently
        assert telemetry.count("dropped") == 2 and not down.offer([_evaluation(6)])
        nowhere = EvaluationWriter([], telemetry)
        assert nowhere.offer([_evaluation(7)]) and telemetry.count("dropped") == 3

        class Broken:  # a text-redacting processor that fails: the text is stored as it came
            def redact_texts(self, texts: list[str]) -> list[str]:
                raise RuntimeError("model not loaded")

        class Upper:
            def redact_texts(self, texts: list[str]) -> list[str]:
                return [t.upper() for t in texts]

        from lqo.collector.pipeline import NamedProcessor

        sanitized = EvaluationWriter([exporter], telemetry, sanitizers=[NamedProcessor("broken", Broken()),
                                                                        NamedProcessor("upper", Upper())])
        commented = dataclasses.replace(_evaluation(8), explanation="too long", attributes={"note": "see above"})
        assert sanitized.offer([commented])
        sanitized.flush()
        [row] = ch_server.reader.query(f"SELECT Explanation, Attributes FROM {table} WHERE ResponseId = 'r-8'",
                                       "JSONEachRow").bytes().decode().splitlines()
        assert json.loads(row) == {"Explanation": "TOO LONG", "Attributes": {"note": "SEE ABOVE"}}


def test_an_empty_report_says_so(collector: Any) -> None:
    for args, says in ((["--evaluations"], "no evaluation results stored in the last 24h"),
                       (["--evaluations", "--since", "7d", "--by", "user"], "in the last 7d")):
        out = subprocess.run([LQO, "report", *args, "--config", str(collector.config_path)],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout == "" and says in out.stderr, (out.stdout, out.stderr)
    as_json = subprocess.run([LQO, "report", "--evaluations", "--format", "json", "--config",
                              str(collector.config_path)], capture_output=True, text=True, timeout=120)
    assert as_json.returncode == 0 and as_json.stdout == "" and as_json.stderr == ""  # machine formats: nothing


def _spooled(directory: Any) -> list[str]:
    return sorted(p.name for p in directory.glob("*.arrow"))


def test_the_spool_keeps_what_the_store_did_not_take_and_sets_aside_what_does_not_read_back(
        ch_server: Any, tmp_path: Any, caplog: Any) -> None:
    """With the exporter's sending queue on disk, evaluation results wait for the store there:
    a stop while it is down keeps them for the next start; a damaged file is set aside and
    counted; a long outage's files are written as one now and then; a spool that cannot be
    written keeps the rows in memory."""
    table = f"{ch_server.database}.otel_traces_genai_evaluations"
    directory = tmp_path / "evaluations_clickhouse"
    caplog.set_level(logging.INFO, logger="lqo.collector.evaluations")

    def stored() -> list[str]:
        return ch_server.reader.query(f"SELECT ResponseId FROM {table} ORDER BY Timestamp",
                                      "TSVRaw").bytes().decode().split()

    def writer(store: Any, telemetry: _Telemetry, spool_dir: Any = directory) -> EvaluationWriter:
        w = EvaluationWriter([store], telemetry, interval=3600, spools=[Spool(spool_dir, "exporter/clickhouse")])
        w.start()
        return w

    with _server_exporter(ch_server) as exporter:
        telemetry = _Telemetry()
        down = writer(_FlakyStore(exporter, failures=99), telemetry)
        for i in range(3):
            assert down.offer([_evaluation(i)])
            down.flush()
        assert len(_spooled(directory)) == 3 and len(down) == 3
        with pytest.raises(QueueDirectoryInUse, match="in use by another running collector"):
            Spool(directory, "exporter/other").open()
        down.shutdown(timeout=2)
        assert "3 not written to" in caplog.text and "stay on disk" in caplog.text
        assert telemetry.count("dropped") == 0 and len(_spooled(directory)) == 3

        torn = directory / _spooled(directory)[1]
        torn.write_bytes(torn.read_bytes()[:100])
        older = directory / _spooled(directory)[2]  # as the version before tokens named its files
        older.rename(directory / ("-".join(older.name.split("-")[:2]) + ".arrow"))
        assert _spooled(directory)[2] == "00000000000000000002-1.arrow"
        (directory / "00000000000000000009-1.arrow.tmp").write_bytes(b"half a write")
        up = writer(exporter, telemetry)
        assert telemetry.count("dropped") == 1  # the torn file's row
        assert "kept on disk by an earlier run" in caplog.text
        up.flush()
        assert stored() == ["r-0", "r-2"] and telemetry.count("stored") == 2
        assert _spooled(directory) == [] and not list(directory.glob("*.tmp"))
        assert [p.name for p in (directory / "unreadable").iterdir()] == [torn.name]
        up.shutdown(timeout=2)

        long_outage = writer(_FlakyStore(exporter, failures=_COMPACT_AT + 5), telemetry)
        for i in range(10, 10 + _COMPACT_AT + 5):
            assert long_outage.offer([_evaluation(i)])
            long_outage.flush()
        assert len(_spooled(directory)) == 6  # 64 files became one; 5 more since
        assert stored() == ["r-0", "r-2"]
        assert long_outage.offer([_evaluation(99)])
        long_outage.flush()  # the store is back: every row once, in order, and nothing left on disk
        assert stored() == ["r-0", "r-2", *(f"r-{i}" for i in range(10, 10 + _COMPACT_AT + 5)), "r-99"]
        assert _spooled(directory) == []
        long_outage.shutdown(timeout=2)

        unwritable = tmp_path / "gone"
        lost = writer(_FlakyStore(exporter, failures=99), telemetry, unwritable)
        shutil.rmtree(unwritable)  # the volume went away under it
        assert lost.offer([_evaluation(100)])
        lost.flush()
        assert "could not write 1 set(s) of evaluation results" in caplog.text and len(lost) == 1
        lost.shutdown(timeout=2)  # in memory only, and the store still down: dropped, counted
        assert telemetry.count("dropped") == 2


def test_results_sent_again_are_stored_once(ch_server: Any, tmp_path: Any) -> None:
    """The store took the rows but its reply was lost (or a kill came before their file was
    deleted): sent again, with their round's token, they are stored once — from the spool after a
    restart, and from memory. Identical results a producer sends twice are two results."""
    table = f"{ch_server.database}.otel_traces_genai_evaluations"
    directory = tmp_path / "evaluations_clickhouse"

    def stored() -> list[str]:
        return sorted(ch_server.reader.query(f"SELECT ResponseId FROM {table}", "TSVRaw").bytes().decode().split())

    def writer(telemetry: _Telemetry, spool: bool = True) -> EvaluationWriter:
        w = EvaluationWriter([exporter], telemetry, interval=3600,
                             spools=[Spool(directory, "exporter/clickhouse")] if spool else ())
        w.start()
        return w

    with _server_exporter(ch_server) as exporter:
        telemetry = _Telemetry()
        first = writer(telemetry)
        ch_server.lose_insert_replies = True
        assert first.offer([_evaluation(0), _evaluation(1)])
        first.flush()  # taken, but the reply is lost: kept, and sent again at the next round
        assert stored() == ["r-0", "r-1"] and len(first) == 2 and len(_spooled(directory)) == 1
        first.flush()
        assert stored() == ["r-0", "r-1"] and telemetry.count("stored") == 0
        first.shutdown(timeout=2)  # the file stays for the next start
        assert len(_spooled(directory)) == 1

        ch_server.lose_insert_replies = False
        second = writer(telemetry)
        second.flush()
        assert stored() == ["r-0", "r-1"] and _spooled(directory) == [] and telemetry.count("stored") == 2
        second.shutdown(timeout=2)

        in_memory = writer(telemetry, spool=False)
        ch_server.lose_insert_replies = True
        assert in_memory.offer([_evaluation(2)])
        in_memory.flush()
        ch_server.lose_insert_replies = False
        in_memory.flush()
        assert stored() == ["r-0", "r-1", "r-2"] and telemetry.count("stored") == 3

        assert in_memory.offer([_evaluation(3)])
        in_memory.flush()
        assert in_memory.offer([_evaluation(3)])  # the same result again, from its producer
        in_memory.flush()
        assert stored() == ["r-0", "r-1", "r-2", "r-3", "r-3"]
        in_memory.shutdown(timeout=2)


def test_an_older_evaluations_table_learns_to_store_rows_sent_again_once(ch_server: Any) -> None:
    """A table made by the version before tokens gets the setting by which it remembers them."""
    from lqo.collector.evaluations import to_arrow
    from lqo.collector.exporters.clickhouse.schema import SchemaSpec

    spec = SchemaSpec(database=ch_server.database)
    [ddl] = [s for s in spec.statements() if s.startswith("CREATE TABLE") and "_genai_evaluations`" in s]
    older = ddl.replace(", non_replicated_deduplication_window = 1000", "")
    assert older != ddl
    ch_server.writer.query(f"CREATE DATABASE IF NOT EXISTS {ch_server.database}")
    ch_server.writer.query(older)
    with _server_exporter(ch_server) as exporter:
        engine = ch_server.reader.query(
            f"SELECT engine_full FROM system.tables WHERE database = '{ch_server.database}' "
            "AND name = 'otel_traces_genai_evaluations'", "TSVRaw").bytes().decode()
        assert "non_replicated_deduplication_window = 1000" in engine
        rows = to_arrow([_evaluation(0)])
        for token in ("a" * 32, "a" * 32, "b" * 32):
            exporter.insert_evaluations(rows, token)
        count = ch_server.reader.query(f"SELECT count() FROM {ch_server.database}.otel_traces_genai_evaluations",
                                       "TSVRaw").bytes().decode().strip()
        assert count == "2"


def test_the_embedded_store_stores_rows_sent_again_once(tmp_path: Any) -> None:
    """The same on the embedded engine (its own process: chdb opens one store per process)."""
    script = (
        "import sys\n"
        "from lqo.collector.evaluations import to_arrow\n"
        "from lqo.collector.exporters.clickhouse.factory import ClickHouseExporter, ClickHouseExporterConfig\n"
        "from lqo.collector.model.genai_events import Evaluation\n"
        "e = ClickHouseExporter(ClickHouseExporterConfig(endpoint='embedded://' + sys.argv[1]))\n"
        "e.start()\n"
        "rows = to_arrow([Evaluation(1, '', '', 'r-0', 'svc', 'user_feedback', 1.0, 'up', '', {})])\n"
        "for token in ('a' * 32, 'a' * 32, 'b' * 32):\n"
        "    e.insert_evaluations(rows, token)\n"
        "print(e.backend.query('SELECT count() FROM otel_traces_genai_evaluations', 'TSVRaw').decode())\n"
        "e.shutdown()\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "store")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
def test_results_sent_while_the_store_is_down_survive_a_restart(make_collector: Any, ch_server: Any,
                                                                tmp_path: Any, stop: str) -> None:
    """The collector, with the ClickHouse exporter's queue on disk: feedback sent while the store
    is down is stored, each once, after a stop (or a kill) and a start."""
    directory = tmp_path / "storage"
    ch_server.fail_inserts = True
    c = make_collector(_storage_overrides(ch_server, directory))
    spool = directory / "evaluations_clickhouse"
    for n in range(3):
        request = ExportLogsServiceRequest()
        request.resource_logs.add().scope_logs.add().log_records.extend(
            _record(attrs={"gen_ai.evaluation.name": "user_feedback", "gen_ai.response.id": f"chatcmpl-{n}-{i}",
                           "gen_ai.evaluation.score.value": 1.0}) for i in range(10))
        assert post(f"{c.http_url}/v1/logs", request.SerializeToString(), "application/x-protobuf")[0] == 200
    deadline = time.monotonic() + 30
    while sum(int(name.split("-")[1].split(".")[0]) for name in _spooled(spool)) < 30 and time.monotonic() < deadline:
        time.sleep(0.05)
    if stop == "sigterm":
        assert c.stop() == 0
        assert "30 not written to" in c.log() and "dropped" not in c.log()
    else:
        c.proc.send_signal(signal.SIGKILL)
        c.proc.wait(30)
    assert sum(int(name.split("-")[1].split(".")[0]) for name in _spooled(spool)) == 30

    ch_server.fail_inserts = False
    c.start()
    table = f"{ch_server.database}.otel_traces_genai_evaluations"
    deadline = time.monotonic() + 30
    ids: list[str] = []
    while len(ids) < 30 and time.monotonic() < deadline:
        time.sleep(0.1)
        ids = ch_server.reader.query(f"SELECT ResponseId FROM {table}", "TSVRaw").bytes().decode().split()
    assert sorted(ids) == sorted(f"chatcmpl-{n}-{i}" for n in range(3) for i in range(10))  # each once
    assert "30 evaluation result(s) kept on disk by an earlier run" in c.log()
    deadline = time.monotonic() + 10
    while _spooled(spool) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _spooled(spool) == []
