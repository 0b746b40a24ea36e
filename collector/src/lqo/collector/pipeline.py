"""The traces pipeline: receivers → bounded queue → processors → exporters (fan-out).

Receivers call :meth:`Pipeline.offer`; a False answer means "full, tell the client to
retry" and the receiver answers 503/UNAVAILABLE. A worker thread runs the processor chain
and hands the result to each exporter's :class:`QueuedExporter`, waiting for room there: a
slow exporter slows the pipeline until receivers refuse, rather than losing spans.

Processors are plain Python and share the GIL, so one thread runs them all — except after a
processor that declares ``offloads = True`` (its time goes to worker processes or native code
that releases the GIL, as PII analysis and model inference do): the chain is cut there into
stages, one thread each, joined by hand-offs of one batch, so the next batch's other
processors run while it waits. Batches keep their order; at most one batch per stage and one
per hand-off is in flight.

:meth:`Pipeline.evaluate` runs a processor chain on one small batch for ``POST /v1/evaluate``
from an HTTP thread; each processor's lock keeps it to one caller at a time, as the component
model requires.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lqo.collector.components import Processor
from lqo.collector.evaluations import EvaluationWriter, Spool
from lqo.collector.exporterhelper import QueuedExporter
from lqo.collector.model.genai_events import EventBuffer
from lqo.collector.model.spanbatch import SpanBatch
from lqo.collector.queue import BoundedBatchQueue
from lqo.collector.telemetry import SelfTelemetry

log = logging.getLogger(__name__)

MAX_BATCH_SPANS = 20_000
MAX_BATCH_BYTES = 64 * 1024**2
MAX_HELD_SPANS = 50_000  # GenAI spans held for their events (hold_for_events), at most
# A span holds its messages if it carries these (or any gen_ai.* event): nothing to wait for.
_MESSAGE_KEYS = ("gen_ai.input.messages", "gen_ai.output.messages")


@dataclass
class _Held:
    """GenAI spans waiting a moment for events their producer sends as log records."""

    deadline: float
    batch: SpanBatch
    keys: list[str]  # trace id + span id, hex, per span


@dataclass
class NamedProcessor:
    component_id: str
    processor: Processor
    # Held around every process() call: the pipeline's stage thread and /v1/evaluate share the
    # processor, which may only be called by one thread at a time.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def _split(batch: SpanBatch, mask: np.ndarray) -> tuple[SpanBatch, SpanBatch]:
    """(the rows ``mask`` picks, the rest), each with its share of the batch's bytes."""
    picked = pa.array(mask)
    chosen, rest = batch.table.filter(picked), batch.table.filter(pc.invert(picked))
    share = batch.approx_bytes * chosen.num_rows // max(1, len(batch))
    return SpanBatch(chosen, share), SpanBatch(rest, batch.approx_bytes - share)


def stages_of(processors: Sequence[NamedProcessor]) -> list[list[NamedProcessor]]:
    """The chain cut after each processor that offloads its work (see the module docstring)."""
    stages: list[list[NamedProcessor]] = [[]]
    for named in processors:
        stages[-1].append(named)
        if getattr(named.processor, "offloads", False) and named is not processors[-1]:
            stages.append([])
    return [s for s in stages if s]


_END = None  # what a stage hands on when the pipeline is shut down


def _spool(queued: QueuedExporter) -> Spool | None:
    """Where an exporter's sending queue is on disk, its evaluation results are too."""
    storage = queued.storage
    if storage is None:
        return None
    return Spool(storage.directory_for("evaluations", queued.exporter_id), f"exporter/{queued.exporter_id}",
                 fsync=storage.config.fsync, compression=storage.config.compression,
                 max_bytes=queued.queue.max_bytes)


class Pipeline:
    def __init__(
        self,
        name: str,
        processors: list[NamedProcessor],
        exporters: list[QueuedExporter],
        telemetry: SelfTelemetry,
        queue_spans: int,
        queue_bytes: int,
        min_batch_spans: int = 8192,
        batch_timeout: float = 0.2,
        hold_for_events: float = 2.0,
    ) -> None:
        self.name = name
        self.processors = processors
        self.exporters = exporters
        self.telemetry = telemetry
        self.queue = BoundedBatchQueue(f"pipeline/{name}", queue_spans, queue_bytes, telemetry)
        # GenAI events the receivers took as log records, added to their spans before the processors
        self.events = EventBuffer(counted={o: telemetry.genai_events.labels(o) for o in EventBuffer.OUTCOMES})
        # GenAI evaluation results the receivers took as log records, written beside the spans
        stores = [q for q in exporters if getattr(getattr(q.exporter, "schema", None), "genai", False)
                  and hasattr(q.exporter, "insert_evaluations")]
        self.evaluations = EvaluationWriter(
            [q.exporter for q in stores], telemetry,
            observers=[q.exporter for q in exporters if hasattr(q.exporter, "record_evaluations")],
            sanitizers=[named for named in processors if hasattr(named.processor, "redact_texts")],
            spools=[_spool(q) for q in stores])
        self.stages = stages_of(processors) or [[]]
        # handoffs[i] carries stage i's output to stage i + 1.
        self._handoffs: list[queue.Queue[SpanBatch | None]] = [queue.Queue(maxsize=1) for _ in self.stages[1:]]
        self._threads = [threading.Thread(target=self._run, name=f"lqo-pipeline-{name}", daemon=True)]
        self._threads += [threading.Thread(target=self._run_stage, args=(i,), name=f"lqo-pipeline-{name}-{i}",
                                           daemon=True) for i in range(1, len(self.stages))]
        self.accepting = False
        # Gather small requests into batches first where each batch has a fixed cost: processors
        # (their Arrow kernel calls), and a persistent sending queue (a file per batch).
        self.gather = bool(processors) or any(e.persistent for e in exporters)
        self.min_batch_spans = min_batch_spans
        self.batch_timeout = batch_timeout
        self.hold_for_events = hold_for_events
        self._held: list[_Held] = []  # only the first stage's thread touches it
        self._held_counted = {o: telemetry.held_spans.labels(o) for o in ("attached", "timed_out", "full")}

    def start(self) -> None:
        for exporter in self.exporters:
            exporter.start()
        for p in self.processors:
            p.processor.start()
            # Exported as 0 from the start, so the first failure is an increase alerts can see.
            self.telemetry.processor_failed.labels(p.component_id)
        for thread in self._threads:
            thread.start()
        self.evaluations.start()
        self.accepting = True

    def offer(self, batch: SpanBatch) -> bool:
        """Queue a decoded batch; False when the pipeline is full or shutting down."""
        if not self.accepting:
            return False
        if not len(batch):
            return True
        return self.queue.offer(batch)

    def _run(self) -> None:
        try:
            while True:
                parts = self.queue.take(max_spans=MAX_BATCH_SPANS, max_bytes=MAX_BATCH_BYTES, wait=0.2)
                released = self._release(closing=self.queue.closed and not parts)
                if not parts and not released:
                    if self.queue.closed and not self._held:
                        return
                    continue
                if parts and self.gather:
                    parts = self._fill(parts)
                batch = self._hold(self._with_events(SpanBatch.concat(parts))) if parts else SpanBatch.empty()
                if released:  # their events, where they came meanwhile
                    batch = SpanBatch.concat([batch, *(self._with_events(b) for b in released)])
                if len(batch):
                    self._hand_on(0, self._process(self.stages[0], batch))
        finally:
            if self._handoffs:
                self._handoffs[0].put(_END)

    def _run_stage(self, index: int) -> None:
        while (batch := self._handoffs[index - 1].get()) is not _END:
            self._hand_on(index, self._process(self.stages[index], batch))
        if index < len(self._handoffs):
            self._handoffs[index].put(_END)

    def _hand_on(self, index: int, batch: SpanBatch) -> None:
        if index < len(self._handoffs):
            self._handoffs[index].put(batch)
            return
        for exporter in self.exporters:
            while not exporter.enqueue(batch, timeout=1.0):
                if exporter.queue.closed:
                    break

    def _hold(self, batch: SpanBatch) -> SpanBatch:
        """``batch`` without the GenAI spans that may still get events, which wait in ``_held``:
        spans of an instrumentation scope that has sent GenAI events, carrying neither messages nor
        a ``gen_ai.*`` event. An SDK exports spans and log records on their own schedules (or an
        application flushes its spans first), so a span's events can come after it; held for
        ``hold_for_events``, it goes on when they come or when the time is up."""
        scopes = self.events.scopes
        if self.hold_for_events <= 0 or not scopes or not len(batch):
            return batch
        mask = batch.genai_mask() & pc.is_in(batch.table.column("ScopeName"), pa.array(list(scopes), pa.string())
                                             ).to_numpy(zero_copy_only=False)
        if not mask.any():
            return batch
        mask &= ~batch.rows_with_keys(_MESSAGE_KEYS)
        names = [n for n in batch.event_names() if n.startswith("gen_ai.")]
        if names:
            mask &= ~batch.rows_with_events(names)
        n = int(mask.sum())
        if not n:
            return batch
        if sum(len(h.batch) for h in self._held) + n > MAX_HELD_SPANS:
            self._held_counted["full"].inc(n)
            return batch
        held, rest = _split(batch, mask)
        keys = pc.binary_join_element_wise(held.table.column("TraceId"), held.table.column("SpanId"), "")
        self._held.append(_Held(time.monotonic() + self.hold_for_events, held, keys.to_pylist()))
        return rest

    def _release(self, closing: bool) -> list[SpanBatch]:
        """The held spans whose events came, whose time is up, or all when ``closing``."""
        if not self._held:
            return []
        now, out, keep = time.monotonic(), [], []
        for held in self._held:
            if closing or now >= held.deadline:
                self._held_counted["timed_out"].inc(len(held.batch))
                out.append(held.batch)
                continue
            came = self.events.waiting(held.keys)
            if not came.any():
                keep.append(held)
                continue
            self._held_counted["attached"].inc(int(came.sum()))
            ready, rest = _split(held.batch, came)
            out.append(ready)
            if len(rest):
                keep.append(_Held(held.deadline, rest, [k for k, c in zip(held.keys, came, strict=True) if not c]))
        self._held = keep
        return out

    def _with_events(self, batch: SpanBatch) -> SpanBatch:
        try:
            return self.events.attach(batch)
        except Exception:  # the spans go on without their events rather than not at all
            log.exception("adding GenAI events to their spans failed; the batch goes on without them")
            return batch

    def _fill(self, parts: list[SpanBatch]) -> list[SpanBatch]:
        """Wait up to ``batch_timeout`` for ``min_batch_spans``: processors work on columns, and
        their fixed cost per batch (tens of Arrow kernel calls) is paid once per batch, not once
        per export request (the OTel Collector's batch processor, in front of the processors)."""
        spans = sum(len(p) for p in parts)
        nbytes = sum(p.approx_bytes for p in parts)
        deadline = time.monotonic() + self.batch_timeout
        while spans < self.min_batch_spans and not self.queue.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            more = self.queue.take(max_spans=MAX_BATCH_SPANS - spans, max_bytes=max(1, MAX_BATCH_BYTES - nbytes),
                                   wait=remaining)
            parts.extend(more)
            spans += sum(len(p) for p in more)
            nbytes += sum(p.approx_bytes for p in more)
        return parts

    def _process(self, processors: list[NamedProcessor], batch: SpanBatch,
                 failed: list[str] | None = None) -> SpanBatch:
        for named in processors:
            before = len(batch)
            started = time.thread_time()
            try:
                with named.lock:
                    batch = named.processor.process(batch)
            except Exception:
                # A failing processor must not lose the data: pass the batch on unprocessed.
                log.exception("processor %s failed; batch passed on unprocessed", named.component_id)
                self.telemetry.processor_failed.labels(named.component_id).inc()
                if failed is not None:
                    failed.append(named.component_id)
                continue
            finally:
                self.telemetry.processor_cpu.labels(named.component_id).inc(time.thread_time() - started)
                self.telemetry.processor_spans.labels(named.component_id).inc(before)
                self.telemetry.processor_batches.labels(named.component_id).inc()
            if len(batch) < before:
                self.telemetry.processor_dropped.labels(named.component_id, "filtered").inc(
                    before - len(batch)
                )
        return batch

    def evaluate(self, batch: SpanBatch, processors: list[NamedProcessor] | None = None
                 ) -> tuple[SpanBatch, list[str]]:
        """``batch`` through ``processors`` (default: the pipeline's) in order, on the caller's
        thread, counted in the processors' metrics like any batch; also the ids of the
        processors that raised."""
        failed: list[str] = []
        return self._process(self.processors if processors is None else processors, batch, failed), failed

    def export_processed(self, batch: SpanBatch, timeout: float) -> bool:
        """Hand an already processed batch to the exporters; False if one had no room in time."""
        if not self.accepting:
            return False
        # A list, not a generator: every exporter gets its chance, whatever an earlier one answered.
        return all([exporter.enqueue(batch, timeout=timeout) for exporter in self.exporters])

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, process what is queued, flush exporters, stop everything."""
        self.accepting = False
        deadline = time.monotonic() + timeout
        self.queue.close()
        for thread in self._threads:
            if thread.ident is not None:  # not started when an exporter failed to start
                thread.join(max(0.1, deadline - time.monotonic()))
        lost = sum(len(b) for b in self.queue.drain())
        for handoff in self._handoffs:
            while True:
                try:
                    batch = handoff.get_nowait()
                except queue.Empty:
                    break
                lost += len(batch) if batch is not None else 0
        if lost:
            log.error("pipeline %s: shutdown timed out with %d spans unprocessed", self.name, lost)
            self.telemetry.processor_dropped.labels("pipeline", "shutdown").inc(lost)
        # before the processors stop: its last write runs their text redaction
        self.evaluations.shutdown(max(1.0, min(10.0, deadline - time.monotonic())))
        for p in self.processors:
            p.processor.shutdown()
        for exporter in self.exporters:
            exporter.shutdown(max(1.0, deadline - time.monotonic()))
