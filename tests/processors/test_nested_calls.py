"""One LLM call recorded by nested spans counts once (genai_normalize's ``mark_nested_calls``).

Hand-made batches pin the rule in every arrival order; then real instrumentations — OpenLLMetry's
and OpenInference's openai instrumentors around lqo's, in one process, replaying recorded
exchanges — go over OTLP through ``lqo collector``: every span is stored, and the GenAI table,
its roll-ups (``lqo report``) and the Prometheus metrics count each call once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from conftest import LQO, CollectorProcess, start_collector

from lqo.collector.model.spanbatch import SCHEMA, SpanBatch
from lqo.processors.normalize import NormalizeConfig, NormalizeProcessor, calls

DUP = "lqo.genai.duplicate_of"
CHAT = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}
PRODUCER = Path(__file__).parent / "apps" / "producer.py"
CASSETTES = [
    "openai__test_chat_completion_with_content.yaml",
    "openai__test_chat_completion_streaming.yaml",
    "openai__test_embeddings_with_content.yaml",
]


def _batch(*spans: tuple[str, str, dict[str, str]], trace: str = "t1") -> SpanBatch:
    """Spans as (span id, parent span id, attributes), all in ``trace``."""
    rows = []
    for span_id, parent, attrs in spans:
        row: dict[str, Any] = {n: [] if n.startswith(("Events.", "Links.")) else None for n in SCHEMA.names}
        row.update(Timestamp=datetime(2026, 12, 1), SpanName="s", TraceId=trace, SpanId=span_id,
                   ParentSpanId=parent, SpanAttributes=list(attrs.items()))
        rows.append(row)
    return SpanBatch(pa.Table.from_pylist(rows, schema=SCHEMA))


def _marks(processor: NormalizeProcessor, batch: SpanBatch) -> dict[str, str]:
    """Span id → what it is marked a duplicate of, for the marked spans of the processed batch."""
    out = processor.process(batch).table
    return {s: a[DUP] for s, a in zip(out.column("SpanId").to_pylist(),
                                     (dict(kv) for kv in out.column("SpanAttributes").to_pylist()), strict=True)
            if DUP in a}


@pytest.fixture
def proc() -> NormalizeProcessor:
    return NormalizeProcessor(NormalizeConfig())


# framework (F) → SDK instrumentation (S) → lqo (L): one call; L, nearest the wire, counts
def test_a_chain_in_one_batch_counts_its_innermost(proc: NormalizeProcessor) -> None:
    assert _marks(proc, _batch(("F", "app", CHAT), ("S", "F", CHAT), ("L", "S", CHAT), ("app", "", {}))) \
        == {"F": "L", "S": "L"}


def test_children_first_across_batches(proc: NormalizeProcessor) -> None:
    assert _marks(proc, _batch(("L", "S", CHAT))) == {}
    assert _marks(proc, _batch(("S", "F", CHAT))) == {"S": "L"}
    assert _marks(proc, _batch(("F", "app", CHAT))) == {"F": "L"}


def test_parent_first_marks_what_comes_after(proc: NormalizeProcessor) -> None:
    """lqo's span is exported after the SDK instrumentation's around it: too late to mark that
    one, so the late chain is marked as its duplicate instead."""
    assert _marks(proc, _batch(("F", "app", CHAT))) == {}
    assert _marks(proc, _batch(("S", "F", CHAT), ("L", "S", CHAT))) == {"S": "F", "L": "F"}


def test_mixed_orders_still_count_once(proc: NormalizeProcessor) -> None:
    assert _marks(proc, _batch(("S", "F", CHAT))) == {}
    assert _marks(proc, _batch(("F", "app", CHAT))) == {"F": "S"}
    assert _marks(proc, _batch(("L", "S", CHAT))) == {"L": "S"}


def test_a_span_around_two_calls_counts_them_both(proc: NormalizeProcessor) -> None:
    """A framework's model call that retried: two calls on the wire, the framework span is neither."""
    assert _marks(proc, _batch(("F", "app", CHAT), ("A", "F", CHAT), ("B", "F", CHAT))) == {"F": "A"}


@pytest.mark.parametrize("outer", [
    {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "helper"},
    {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"},
    {"http.route": "/ask"},
])
def test_agents_tools_and_other_parents_are_not_calls(proc: NormalizeProcessor, outer: dict[str, str]) -> None:
    assert _marks(proc, _batch(("P", "", outer), ("A", "P", CHAT), ("B", "P", CHAT))) == {}


@pytest.mark.parametrize("legacy", [
    {"llm.request.type": "chat", "gen_ai.system": "openai", "llm.request.model": "gpt-4o"},  # OpenLLMetry
    {"openinference.span.kind": "LLM", "llm.provider": "openai", "llm.model_name": "gpt-4o"},  # OpenInference
])
def test_other_producers_conventions_are_normalized_first(proc: NormalizeProcessor, legacy: dict[str, str]) -> None:
    assert _marks(proc, _batch(("F", "app", legacy), ("L", "F", CHAT))) == {"F": "L"}


def test_traces_are_apart(proc: NormalizeProcessor) -> None:
    assert _marks(proc, _batch(("F", "", CHAT), trace="t1")) == {}
    assert _marks(proc, _batch(("L", "F", CHAT), trace="t2")) == {}  # same ids, another trace
    assert _marks(proc, _batch(("F", "", CHAT), ("L", "F", CHAT), trace="t3")) == {"F": "L"}
    # one batch, two traces, the same span ids: each trace's pair is its own
    two = SpanBatch.concat([_batch(("F", "", CHAT), ("L", "F", CHAT), trace="t4"),
                            _batch(("F", "", CHAT), ("M", "F", CHAT), trace="t5")])
    out = proc.process(two).table
    marked = [(t, dict(a).get(DUP)) for t, a in zip(out.column("TraceId").to_pylist(),
                                                    out.column("SpanAttributes").to_pylist(), strict=True)]
    assert marked == [("t4", "L"), ("t4", None), ("t5", "M"), ("t5", None)]


def test_marks_from_upstream_are_kept_and_switch_off(proc: NormalizeProcessor) -> None:
    assert _marks(proc, _batch(("F", "", {**CHAT, DUP: "X"}), ("L", "F", CHAT))) == {"F": "X"}
    off = NormalizeProcessor(NormalizeConfig(mark_nested_calls=False))
    assert _marks(off, _batch(("F", "", CHAT), ("L", "F", CHAT))) == {}


def test_memory_is_bounded(proc: NormalizeProcessor, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calls, "MEMORY", 4)
    assert _marks(proc, _batch(("L", "S", CHAT))) == {}
    for i in range(8):  # up to twice MEMORY before a trim to the newest MEMORY
        _marks(proc, _batch((f"x{i}", f"app{i}", CHAT)))
    assert _marks(proc, _batch(("S", "", CHAT))) == {}  # its child is forgotten: counted too
    nested = proc._calls
    assert nested is not None
    assert len(nested._counted) <= 8 and len(nested._inner) <= 8


@pytest.mark.parametrize("spans", [
    [("A", "A", CHAT)],  # its own parent
    [("A", "B", CHAT), ("B", "A", CHAT)],  # a cycle
    [("", "", CHAT), ("", "", CHAT)],  # no ids
    [("A", "", {"gen_ai.operation.name": "x" * 100_000})],
])
def test_hostile_parentage_never_fails(proc: NormalizeProcessor, spans: list[tuple[str, str, dict[str, str]]]) -> None:
    assert len(proc.process(_batch(*spans))) == len(spans)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    col = start_collector(tmp_path_factory.mktemp("nested"), {
        "processors": {"genai_normalize": {}, "cost": {}},
        "exporters": {"prometheus": {}},
        "service": {"pipelines": {"traces": {"processors": ["genai_normalize", "cost"],
                                             "exporters": ["clickhouse", "prometheus"]}}},
    })
    for mode in ("openllmetry+lqo", "openinference+lqo"):
        run = subprocess.run([sys.executable, str(PRODUCER), mode, col.http_url, *CASSETTES],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
    # per cassette and producer: the parent, the SDK instrumentation's span and lqo's
    col.wait_stored(3 * len(CASSETTES) * 2)
    yield col
    col.stop()


@pytest.mark.parametrize("producer", ["openllmetry", "openinference"])
def test_every_record_is_stored_and_each_call_counted_once(store: CollectorProcess, producer: str) -> None:
    service = f"producer-{producer}+lqo"
    rows = store.query(
        "SELECT c.ScopeName AS scope, c.SpanId AS id, c.SpanAttributes AS a, p.SpanName AS call "
        "FROM otel_traces c JOIN otel_traces p ON c.ParentSpanId = p.SpanId AND c.TraceId = p.TraceId "
        f"WHERE c.ServiceName = '{service}' AND c.ScopeName != 'lqo.instrumentation.httpx'")
    lqo = {r["parent"]: r for r in store.query(
        "SELECT SpanId AS id, SpanAttributes AS a, ParentSpanId AS parent FROM otel_traces "
        f"WHERE ServiceName = '{service}' AND ScopeName = 'lqo.instrumentation.httpx'")}
    outer = {r["call"]: r for r in rows if r["call"] in {Path(c).stem for c in CASSETTES}}
    assert len(outer) == len(CASSETTES)
    marked = 0
    for sdk in outer.values():
        inner = lqo[sdk["id"]]  # lqo's span is the child of the SDK instrumentation's
        # exactly one of the two records is marked, naming the other
        pair = [(sdk["a"].get(DUP), inner["id"]), (inner["a"].get(DUP), sdk["id"])]
        assert [dup for dup, _ in pair].count(None) == 1, pair
        assert all(dup in (None, other) for dup, other in pair)
        marked += 1
    assert marked == len(CASSETTES)
    counted = store.query(f"SELECT count() AS c FROM otel_traces_genai WHERE ServiceName = '{service}'")
    assert int(counted[0]["c"]) == len(CASSETTES)
    rollup = store.query(f"SELECT sum(Calls) AS c FROM otel_traces_genai_1m WHERE ServiceName = '{service}'")
    assert int(rollup[0]["c"]) == len(CASSETTES)


def test_the_report_and_the_metrics_count_each_call_once(store: CollectorProcess) -> None:
    report = subprocess.run([LQO, "report", "--config", str(store.config_path), "--by", "service",
                             "--format", "json"], cwd=store.workdir, capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    calls = {row["service"]: int(row["calls"]) for row in map(json.loads, report.stdout.splitlines())}
    assert calls["producer-openllmetry+lqo"] == calls["producer-openinference+lqo"] == len(CASSETTES)
    metrics = store.metrics()
    for producer in ("openllmetry", "openinference"):
        counts = re.findall(r'^gen_ai_client_operation_duration_seconds_count\{[^}]*'
                            rf'service_name="producer-{re.escape(producer)}\+lqo"[^}}]*\}} (\S+)$', metrics, re.M)
        assert sum(float(c) for c in counts) == len(CASSETTES), (producer, counts)
