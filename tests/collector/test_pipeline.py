"""The processor chain and fan-out, in-process: processors registered by name run in
order, drops are counted, a failing processor passes data on unprocessed; and server
credentials come from the environment without reaching the logs."""

from __future__ import annotations

import base64
import time

import pyarrow.compute as pc
import pytest
from conftest import free_port, on_free_ports
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from pydantic import BaseModel

from lqo.collector.components import Factory, register
from lqo.collector.evaluate import EvaluateRequest, build_span, read_verdicts
from lqo.collector.model.spanbatch import SpanBatch
from lqo.collector.service import Collector


class DropConfig(BaseModel):
    prefix: str


class DropByName:
    def __init__(self, config: DropConfig) -> None:
        self.prefix = config.prefix

    def start(self) -> None: ...
    def shutdown(self) -> None: ...

    def process(self, batch: SpanBatch) -> SpanBatch:
        keep = pc.invert(pc.starts_with(batch.table.column("SpanName"), self.prefix))
        return SpanBatch(batch.table.filter(keep), batch.approx_bytes)


class UpperConfig(BaseModel):
    pass


class UpperName:
    def start(self) -> None: ...
    def shutdown(self) -> None: ...

    def process(self, batch: SpanBatch) -> SpanBatch:
        names = pc.utf8_upper(batch.table.column("SpanName"))
        table = batch.table.set_column(batch.table.schema.get_field_index("SpanName"), "SpanName", names)
        return SpanBatch(table, batch.approx_bytes)


class Broken:
    def start(self) -> None: ...
    def shutdown(self) -> None: ...

    def process(self, batch: SpanBatch) -> SpanBatch:
        raise RuntimeError("bug in a processor")


register("processors", Factory("test_drop", DropConfig, lambda c, ctx: DropByName(c)))
register("processors", Factory("test_upper", UpperConfig, lambda c, ctx: UpperName()))
register("processors", Factory("test_broken", UpperConfig, lambda c, ctx: Broken()))


@pytest.fixture
def in_process(ch_server):
    made = []

    def make(processors: dict, order: list[str], exporter_extra: dict | None = None) -> Collector:
        def attempt() -> Collector:
            grpc_port = free_port()
            config = {
                "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"127.0.0.1:{grpc_port}"}}}},
                "processors": processors,
                "exporters": {"clickhouse": {"endpoint": ch_server.endpoint, "database": ch_server.database,
                                             "batch": {"flush_interval": "50ms"}, **(exporter_extra or {})}},
                "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": order,
                                                     "exporters": ["clickhouse"]}},
                            "telemetry": {"metrics": {"address": f"127.0.0.1:{free_port()}"}}},
            }
            collector = Collector(config)
            collector.start()
            collector.grpc_port = grpc_port
            return collector

        collector = on_free_ports(attempt)
        made.append(collector)
        return collector

    yield make
    for c in made:
        c.shutdown()


def _send(port: int, names: list[str]) -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)))
    for name in names:
        provider.get_tracer("t").start_span(name).end()
    provider.shutdown()


def _stored_names(ch_server, expected: int) -> list[str]:
    deadline = time.monotonic() + 20
    rows: list[str] = []
    while time.monotonic() < deadline:
        rows = ch_server.reader.query(
            f"SELECT SpanName FROM {ch_server.database}.otel_traces ORDER BY SpanName", "TSV"
        ).bytes().decode().splitlines()
        if len(rows) >= expected:
            break
        time.sleep(0.1)
    return rows


def _metric(collector: Collector, name: str, **labels: str) -> float:
    return collector.telemetry.registry.get_sample_value(name, labels) or 0.0


def test_processors_run_in_order_and_drops_are_counted(in_process, ch_server):
    c = in_process({"test_drop/health": {"prefix": "health"}, "test_upper": {}},
                   ["test_drop/health", "test_upper"])
    _send(c.grpc_port, ["checkout", "healthz", "search", "health-probe"])
    assert _stored_names(ch_server, 2) == ["CHECKOUT", "SEARCH"]
    assert _metric(c, "lqo_processor_dropped_spans_total",
                   processor="test_drop/health", reason="filtered") == 2
    assert _metric(c, "lqo_receiver_accepted_spans_total", receiver="otlp", transport="grpc") == 4
    assert _metric(c, "lqo_exporter_sent_spans_total", exporter="clickhouse") == 2


def test_a_failing_processor_passes_data_on(in_process, ch_server, caplog):
    c = in_process({"test_broken": {}, "test_upper": {}}, ["test_broken", "test_upper"])
    _send(c.grpc_port, ["a", "b"])
    assert _stored_names(ch_server, 2) == ["A", "B"]
    assert "processor test_broken failed" in caplog.text
    # counted, so the LQOProcessorFailing alert (deploy/prometheus) can see it
    assert _metric(c, "lqo_processor_failed_batches_total", processor="test_broken") >= 1
    assert _metric(c, "lqo_processor_failed_batches_total", processor="test_upper") == 0


def test_evaluate_runs_the_chain_on_the_callers_thread_and_names_failures(in_process, ch_server):
    """Pipeline.evaluate (POST /v1/evaluate) with the collector's evaluation processors (own
    instances, not the pipeline's): every processor in order; a failing one is named and
    counted, the rest still run; a span dropped by a filter comes back as nothing."""
    c = in_process({"test_broken": {}, "test_upper": {}, "test_drop/health": {"prefix": "HEALTH"}},
                   ["test_broken", "test_upper", "test_drop/health"])
    own = c.evaluation_processors()
    assert own is c.evaluation_processors()  # built once, on first use
    assert [n.component_id for n in own] == [n.component_id for n in c.pipeline.processors]
    assert not {id(n.processor) for n in own} & {id(n.processor) for n in c.pipeline.processors}
    batch, failed = c.pipeline.evaluate(build_span(EvaluateRequest(input="hi", operation="chat", model="m")), own)
    assert failed == ["test_broken"] and batch.table.column("SpanName").to_pylist() == ["CHAT M"]
    assert _metric(c, "lqo_processor_failed_batches_total", processor="test_broken") == 1
    dropped, failed = c.pipeline.evaluate(build_span(EvaluateRequest(input="hi", operation="health")), own)
    assert len(dropped) == 0 and failed == ["test_broken"]
    assert read_verdicts(dropped, failed, False).dropped


def test_processor_config_is_validated_by_its_model(ch_server):
    from lqo.collector.config import ConfigError

    with pytest.raises(ConfigError, match=r"processors\.test_drop\.prefix: required but not set"):
        Collector({
            "receivers": {"otlp": {}}, "processors": {"test_drop": {}},
            "exporters": {"clickhouse": {"endpoint": ch_server.endpoint}},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["test_drop"],
                                                 "exporters": ["clickhouse"]}}},
        })


def test_server_credentials_come_from_env_and_never_reach_logs(in_process, ch_server, monkeypatch, caplog):
    secret = "s3cr3t-Pa55"
    monkeypatch.setenv("LQO_CLICKHOUSE_USERNAME", "writer")
    monkeypatch.setenv("LQO_CLICKHOUSE_PASSWORD", secret)
    caplog.set_level("DEBUG")
    c = in_process({}, [])
    _send(c.grpc_port, ["x"])
    assert _stored_names(ch_server, 1) == ["x"]
    sent = [r for r in ch_server.requests if r["user"] or r["authorization"]]
    assert sent, "no credentials were sent"
    creds = {(r["user"], r["key"]) for r in sent if r["user"]} | {
        tuple(base64.b64decode(r["authorization"].split()[1]).decode().split(":", 1))
        for r in sent if r["authorization"]}
    assert creds == {("writer", secret)}
    assert secret not in caplog.text
    assert secret not in repr(c.config.components["exporters"]["clickhouse"])


def test_with_processors_small_requests_are_gathered_into_one_batch():
    """Processors pay a fixed cost per batch: the pipeline gathers export requests (up to
    min_batch_spans or batch_timeout) before running them, and never holds a lone one longer."""
    from workload import make_request

    from lqo.collector.model.otlp import decode_protobuf
    from lqo.collector.pipeline import NamedProcessor, Pipeline
    from lqo.collector.telemetry import SelfTelemetry

    seen: list[int] = []

    class Recorder:
        def start(self): pass
        def shutdown(self): pass
        def process(self, batch):
            seen.append(len(batch))
            return batch

    pipe = Pipeline("traces", [NamedProcessor("rec", Recorder())], [], SelfTelemetry(), 100_000, 256 * 1024**2,
                    min_batch_spans=1000, batch_timeout=2.0)
    pipe.start()
    try:
        for i in range(10):
            assert pipe.offer(decode_protobuf(make_request(100, seed=i).SerializeToString()).batch)
        deadline = time.monotonic() + 10
        while sum(seen) < 1000 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [1000]
        started = time.monotonic()
        assert pipe.offer(decode_protobuf(make_request(5, seed=99).SerializeToString()).batch)
        while sum(seen) < 1005 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen == [1000, 5]
        assert 1.5 < time.monotonic() - started < 5.0  # held for batch_timeout, then processed
    finally:
        pipe.shutdown(5)


def _batches(n: int, spans: int = 50) -> list[SpanBatch]:
    from workload import make_request

    from lqo.collector.model.otlp import decode_protobuf

    return [decode_protobuf(make_request(spans, seed=i).SerializeToString()).batch for i in range(n)]


class _Step:
    """A processor that records the batches it sees (by their first span id)."""

    def __init__(self, offloads: bool = False) -> None:
        self.offloads = offloads
        self.seen: list[str] = []

    def start(self) -> None: ...
    def shutdown(self) -> None: ...

    def process(self, batch: SpanBatch) -> SpanBatch:
        self.seen.append(batch.table.column("SpanId")[0].as_py())
        return batch


def test_the_chain_is_cut_into_stages_after_processors_that_offload():
    from lqo.collector.pipeline import NamedProcessor, stages_of

    a, b, c, d = (NamedProcessor(n, _Step(offloads=n in "bd")) for n in "abcd")
    assert stages_of([a, b, c, d]) == [[a, b], [c, d]]
    assert stages_of([b, c]) == [[b], [c]]
    assert stages_of([a, c]) == [[a, c]]
    assert stages_of([]) == []


def test_stages_overlap_keep_batch_order_and_drain_on_shutdown():
    """While the stage after an offloading processor works on one batch, that processor
    already works on the next; every batch reaches the end, in order, also at shutdown."""
    import threading

    from lqo.collector.pipeline import MAX_BATCH_SPANS, NamedProcessor, Pipeline
    from lqo.collector.telemetry import SelfTelemetry

    second_batch_started = threading.Event()

    class Offloading(_Step):
        def process(self, batch: SpanBatch) -> SpanBatch:
            if self.seen:
                second_batch_started.set()
            return super().process(batch)

    class After(_Step):
        overlapped: bool | None = None

        def process(self, batch: SpanBatch) -> SpanBatch:
            if self.overlapped is None:  # holds the first batch until the stage before has the next
                self.overlapped = second_batch_started.wait(10)
            return super().process(batch)

    first, after, last = Offloading(offloads=True), After(), _Step()
    pipe = Pipeline("traces", [NamedProcessor("first", first), NamedProcessor("after", after),
                               NamedProcessor("last", last)], [], SelfTelemetry(), 100_000, 256 * 1024**2,
                    min_batch_spans=1, batch_timeout=0.0)
    assert [[n.component_id for n in s] for s in pipe.stages] == [["first"], ["after", "last"]]
    batches = _batches(6, spans=MAX_BATCH_SPANS // 2 + 1)  # one request per processor batch
    sent = [b.table.column("SpanId")[0].as_py() for b in batches]
    pipe.start()
    for batch in batches:
        assert pipe.offer(batch)
    pipe.shutdown(30)
    assert after.overlapped is True
    assert first.seen == after.seen == last.seen == sent
