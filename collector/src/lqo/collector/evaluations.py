"""GenAI evaluation results (``gen_ai.evaluation.result`` log records) into the store.

The receivers decode them (``model.genai_events``); :class:`EvaluationWriter` keeps them in a
bounded buffer and, on a thread of its own, writes what has gathered every ``interval`` into
``<table>_genai_evaluations`` of each ClickHouse exporter's store. They do not go through the
span pipeline: there is nothing for the processors in them, and the call they judge may have
been stored long ago.

Flow control as for spans: when the buffer is full (``max_rows`` or ``max_bytes``: the store is
down or slow), :meth:`offer` says no and the receiver answers 503 / ``UNAVAILABLE``, which the
SDKs' exporters retry. A write that fails for a reason that may pass is tried again at the next
round; one the store refuses for good (a table dropped by hand, …) drops the rows, counted
(``lqo_genai_evaluations_total{outcome="dropped"}``) and logged. What is buffered is written at
shutdown. The buffer is in memory only: the persistent sending queue holds spans.

Free text in a result (its explanation: often a user's own words; its other attribute values)
goes through the pipeline's processors that redact text — ``redaction`` (credentials in URLs)
and ``pii`` (personal data, by its ``action``) — on the writer's thread before it is stored, as
message content does. A sanitizer that fails leaves the text as it is (logged), as a failing
processor passes a batch on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from lqo.collector.exporters.clickhouse.backends import StoreError
from lqo.collector.model.genai_events import Evaluation

log = logging.getLogger(__name__)

ARROW_SCHEMA = pa.schema([
    ("Timestamp", pa.timestamp("ns")),
    ("TraceId", pa.string()),
    ("SpanId", pa.string()),
    ("ResponseId", pa.string()),
    ("ServiceName", pa.string()),
    ("Name", pa.string()),
    ("ScoreValue", pa.float64()),
    ("ScoreLabel", pa.string()),
    ("Explanation", pa.string()),
    ("Attributes", pa.map_(pa.string(), pa.string())),
])


def to_arrow(rows: Sequence[Evaluation]) -> pa.Table:
    return pa.Table.from_pydict({
        "Timestamp": [r.time_ns for r in rows],
        "TraceId": [r.trace_id for r in rows],
        "SpanId": [r.span_id for r in rows],
        "ResponseId": [r.response_id for r in rows],
        "ServiceName": [r.service for r in rows],
        "Name": [r.name for r in rows],
        "ScoreValue": [r.score for r in rows],
        "ScoreLabel": [r.label for r in rows],
        "Explanation": [r.explanation for r in rows],
        "Attributes": [list(r.attributes.items()) for r in rows],
    }, schema=ARROW_SCHEMA)


class _Pending:
    """One store's rows not yet written to it."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.rows: list[Evaluation] = []
        self.bytes = 0
        self.failing = False  # since the last write that went through (one warning per outage)


class EvaluationWriter:
    def __init__(self, stores: Sequence[Any], telemetry: Any, interval: float = 1.0,
                 max_rows: int = 100_000, max_bytes: int = 64 * 1024**2, observers: Sequence[Any] = (),
                 sanitizers: Sequence[Any] = ()) -> None:
        # ClickHouse exporters with insert_evaluations(), each with its own rows: one that fails
        # does not make another write the same rows twice
        self._pending = [_Pending(store) for store in stores]
        self._observers = list(observers)  # exporters with record_evaluations() (prometheus): told at once
        # the pipeline's NamedProcessors with redact_texts() (redaction, pii), in pipeline order
        self._sanitizers = list(sanitizers)
        self._incoming: list[Evaluation] = []  # offered, not yet sanitized and handed to the stores
        self._incoming_bytes = 0
        self.interval = interval
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self._counted = {o: telemetry.genai_evaluations.labels(o) for o in ("stored", "dropped")}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="lqo-evaluations", daemon=True)

    def start(self) -> None:
        if self._pending or self._observers:
            self._thread.start()

    def offer(self, rows: list[Evaluation]) -> bool:
        """Keeps ``rows`` for the next write; False (none kept) when a store's buffer is full."""
        if not rows:
            return True
        if not self._pending:  # nowhere to write them (no ClickHouse exporter)
            self._counted["dropped"].inc(len(rows))
            self._observe(rows)
            return True
        size = sum(r.size for r in rows)
        with self._lock:
            waiting = len(self._incoming) + max(len(p.rows) for p in self._pending)
            waiting_bytes = self._incoming_bytes + max(p.bytes for p in self._pending)
            if self._stopped or (waiting and (waiting + len(rows) > self.max_rows
                                              or waiting_bytes + size > self.max_bytes)):
                return False
            self._incoming.extend(rows)
            self._incoming_bytes += size
        self._observe(rows)
        return True

    def _sanitize(self, rows: list[Evaluation]) -> list[Evaluation]:
        """The rows with their free text through each sanitizer (under its lock, as the pipeline
        calls it)."""
        texts = [r.explanation for r in rows]
        slots = [(i, k) for i, r in enumerate(rows) for k in r.attributes]
        texts += [rows[i].attributes[k] for i, k in slots]
        if not any(texts):
            return rows
        for named in self._sanitizers:
            try:
                with named.lock:
                    texts = named.processor.redact_texts(texts)
            except Exception:
                log.exception("evaluation results: %s failed on their text; stored as they came", named.component_id)
        out = []
        attributes = [dict(r.attributes) for r in rows]
        for (i, k), text in zip(slots, texts[len(rows):], strict=True):
            attributes[i][k] = text
        for r, explanation, attrs in zip(rows, texts[:len(rows)], attributes, strict=True):
            out.append(r if (explanation, attrs) == (r.explanation, r.attributes)
                       else dataclasses.replace(r, explanation=explanation, attributes=attrs))
        return out

    def _observe(self, rows: list[Evaluation]) -> None:
        for observer in self._observers:
            try:
                observer.record_evaluations(rows)
            except Exception:  # metrics must not cost the rows
                log.exception("counting evaluation results in %s failed", type(observer).__name__)

    def __len__(self) -> int:
        return len(self._incoming) + max((len(p.rows) for p in self._pending), default=0)

    def _loop(self) -> None:
        while not self._stopped:
            self._wake.wait(self.interval)
            try:
                self.flush()
            except Exception:  # the thread must live on: what is pending is tried again
                log.exception("evaluation results: a write round failed")
            self._observe([])  # a tick: results that came before their call are matched or let go

    def flush(self) -> None:
        """Writes what each store has pending; kept for the next round where it may take it later."""
        with self._lock:
            incoming, self._incoming, self._incoming_bytes = self._incoming, [], 0
        if incoming:
            incoming = self._sanitize(incoming)
            size = sum(r.size for r in incoming)
            with self._lock:
                for p in self._pending:
                    p.rows.extend(incoming)
                    p.bytes += size
        for pending in self._pending:
            with self._lock:
                rows, pending.rows, pending.bytes = pending.rows, [], 0
            if not rows:
                continue
            where = getattr(pending.store.backend, "description", "the store")
            try:
                pending.store.insert_evaluations(to_arrow(rows))
            except StoreError as exc:
                if exc.permanent:
                    log.error("evaluation results: %s refused %d row(s) for good (%s); dropped", where, len(rows), exc)
                    self._drop(pending, len(rows))
                    continue
                if not pending.failing:  # once per outage, not every second
                    log.warning("evaluation results: writing %d row(s) to %s failed (%s); trying again every "
                                "%.0f s", len(rows), where, exc, self.interval)
                pending.failing = True
                with self._lock:  # back in front of what came meanwhile
                    pending.rows[:0] = rows
                    pending.bytes += sum(r.size for r in rows)
                continue
            except Exception:  # a bug, not the store: these rows would fail again
                log.exception("evaluation results: writing %d row(s) to %s failed; dropped", len(rows), where)
                self._drop(pending, len(rows))
                continue
            if pending.failing:
                pending.failing = False
                log.info("evaluation results: %s takes them again", where)
            if pending is self._pending[0]:  # counted once, by the first store
                self._counted["stored"].inc(len(rows))

    def _drop(self, pending: _Pending, n: int) -> None:
        if pending is self._pending[0]:  # counted once, as stored ones are
            self._counted["dropped"].inc(n)

    def shutdown(self, timeout: float = 10.0) -> None:
        with self._lock:
            self._stopped = True
        self._wake.set()
        if self._thread.ident is not None:
            self._thread.join(timeout)
        self.flush()
        for pending in self._pending:
            if pending.rows:
                if pending is self._pending[0]:
                    self._counted["dropped"].inc(len(pending.rows))
                log.warning("evaluation results: %d not written to %s: it kept failing until the collector "
                            "stopped", len(pending.rows), getattr(pending.store.backend, "description", "the store"))
                pending.rows = []
