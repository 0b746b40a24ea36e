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
shutdown.

Where the ClickHouse exporter's sending queue is kept on disk (``sending_queue.storage``), so are
its evaluation results (:class:`Spool`, in the same ``file_storage`` directory, under
``evaluations_<exporter id>``): each round's rows are written to a file before the insert and the
file is deleted once the store has them. Rows the store did not take by shutdown — it was down —
stay there, and the next start writes them first; a kill loses at most the rows of the round in
progress (offered in the last ``interval``). Without a storage the buffer is in memory only.

Each round's rows get a token (a random id, kept in their file's name) that their inserts carry
(``insert_deduplication_token``): rows sent again — their reply was lost, or a kill came between
the insert and the file's deletion — are stored once, as the store remembers the last
``schema.DEDUP_WINDOW`` inserts' tokens. Rows waiting for the store are sent round by round, each
with its own token, never merged into one insert, so that what is sent again is what was sent.

Free text in a result (its explanation: often a user's own words; its other attribute values)
goes through the pipeline's processors that redact text — ``redaction`` (credentials in URLs)
and ``pii`` (personal data, by its ``action``) — on the writer's thread before it is stored, as
message content does. A sanitizer that fails leaves the text as it is (logged), as a failing
processor passes a batch on.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import re
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from lqo.collector.exporters.clickhouse.backends import StoreError
from lqo.collector.model.genai_events import Evaluation
from lqo.collector.persistentqueue import (
    Compression,
    lock_directory,
    read_arrow,
    set_aside,
    write_arrow,
)
from lqo.collector.telemetry import LogEvery

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


# <sequence>-<rows>-<token>.arrow (files of the version before tokens lack the last part)
_SPOOL_FILE = re.compile(r"^(\d{20})-(\d+)(?:-([0-9a-f]{32}))?\.arrow$")
_COMPACT_AT = 64  # files a failing store's rows may spread over before they are written as one


@dataclasses.dataclass(frozen=True)
class Segment:
    """A round's rows for one store: their spool file (None: in memory only) and their token."""

    table: pa.Table
    path: Path | None = None
    token: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)


class Spool:
    """A store's evaluation results on disk until it has them: one Arrow IPC file per write
    round (``<sequence>-<rows>-<token>.arrow``, written whole or not at all), deleted once inserted."""

    def __init__(self, directory: Path, name: str, fsync: bool = False, compression: Compression = "none",
                 max_bytes: int = 64 * 1024**2) -> None:
        self.directory = directory
        self.name = name
        self.fsync = fsync
        self.max_bytes = max_bytes  # what the set-aside folder of unreadable files keeps
        self._options = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
        self._seq = itertools.count()
        self._lock_fd: int | None = None
        self._write_failures = LogEvery(60.0)

    def open(self) -> tuple[list[Segment], int]:
        """Locks the directory; returns the rows an earlier run left, file by file, in order, and
        how many rows were in files that do not read back (set aside, for a person to look at)."""
        self._lock_fd = lock_directory(self.directory, f"{self.name}: the evaluation spool")
        found: list[tuple[int, int, Path, str | None]] = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".tmp"):  # a write a stop or a kill interrupted
                os.unlink(entry.path)
            elif match := _SPOOL_FILE.match(entry.name):
                found.append((int(match.group(1)), int(match.group(2)), Path(entry.path), match.group(3)))
        found.sort()
        self._seq = itertools.count(found[-1][0] + 1 if found else 0)
        loaded: list[Segment] = []
        unreadable = 0
        for _, rows, path, token in found:
            try:
                table = read_arrow(path, ARROW_SCHEMA, rows)
            except (OSError, pa.ArrowException, ValueError) as exc:
                aside = set_aside(path, self.name, self.max_bytes)
                unreadable += rows
                log.error("%s: dropped %d evaluation result(s): %s does not read back (%s); moved to %s",
                          self.name, rows, path.name, exc, aside)
                continue
            loaded.append(Segment(table, path, token) if token else Segment(table, path))
        if loaded:
            log.info("%s: %d evaluation result(s) kept on disk by an earlier run; writing them first",
                     self.name, sum(s.table.num_rows for s in loaded))
        return loaded, unreadable

    def write(self, segment: Segment) -> Segment:
        """``segment`` in a file of its own; as it was (in memory) where it cannot be written."""
        path = self.directory / f"{next(self._seq):020d}-{segment.table.num_rows}-{segment.token}.arrow"
        try:
            write_arrow(path, segment.table, self._options, self.fsync)
        except OSError as exc:
            if count := self._write_failures.tally():
                log.error("%s: could not write %d set(s) of evaluation results to %s (%s); kept in memory, "
                          "where a restart loses them", self.name, count, self.directory, exc.strerror or exc)
            return segment
        return dataclasses.replace(segment, path=path)

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = None


class _Pending:
    """One store's rows not yet written to it, round by round. The writer's lock guards the
    lists; file I/O happens outside it."""

    def __init__(self, store: Any, spool: Spool | None = None) -> None:
        self.store = store
        self.spool = spool
        self.segments: list[Segment] = []
        self.rows = 0
        self.bytes = 0
        self.failing = False  # since the last write that went through (one warning per outage)

    @property
    def where(self) -> str:
        return getattr(self.store.backend, "description", "the store")

    def add(self, segments: list[Segment], size: int | None = None, front: bool = False) -> None:
        if front:
            self.segments[:0] = segments
        else:
            self.segments.extend(segments)
        self.rows += sum(s.table.num_rows for s in segments)
        self.bytes += size if size is not None else sum(s.table.nbytes for s in segments)

    def take(self) -> list[Segment]:
        segments, self.segments, self.rows, self.bytes = self.segments, [], 0, 0
        return segments

    def compacted(self, segments: list[Segment]) -> list[Segment]:
        """A long outage's many small files written as one now and then, so that a start does
        not read thousands; the segments as they are otherwise. (Their rows were never stored:
        each insert failed, so the one file gets a token of its own.)"""
        if self.spool is None or len(segments) < _COMPACT_AT:
            return segments
        one = self.spool.write(Segment(pa.concat_tables([s.table for s in segments]).combine_chunks()))
        if one.path is None:
            return segments
        self.forget(segments)
        return [one]

    def forget(self, segments: list[Segment]) -> None:
        """Deletes the segments' files: their rows were written, or given up on."""
        for segment in segments:
            if segment.path is not None:
                segment.path.unlink(missing_ok=True)


class EvaluationWriter:
    def __init__(self, stores: Sequence[Any], telemetry: Any, interval: float = 1.0,
                 max_rows: int = 100_000, max_bytes: int = 64 * 1024**2, observers: Sequence[Any] = (),
                 sanitizers: Sequence[Any] = (), spools: Sequence[Spool | None] = ()) -> None:
        # ClickHouse exporters with insert_evaluations(), each with its own rows (and spool, where
        # its sending queue is on disk): one that fails does not make another write the same rows twice
        spools = list(spools) or [None] * len(stores)
        self._pending = [_Pending(store, spool) for store, spool in zip(stores, spools, strict=True)]
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
        """Opens the spools (their rows from an earlier run are written first), then the thread."""
        opened: list[Spool] = []
        try:
            for pending in self._pending:
                if pending.spool is None:
                    continue
                loaded, unreadable = pending.spool.open()
                opened.append(pending.spool)
                pending.add(loaded)
                if unreadable:
                    self._drop(pending, unreadable)
        except Exception:
            for spool in opened:
                spool.close()
            raise
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
            waiting = len(self._incoming) + max(p.rows for p in self._pending)
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
        return len(self._incoming) + max((p.rows for p in self._pending), default=0)

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
            # shared by the stores (Arrow data is immutable), with one token: each store has its own
            segment = Segment(to_arrow(incoming))
            size = sum(r.size for r in incoming)
            for pending in self._pending:
                spooled = pending.spool.write(segment) if pending.spool is not None else segment
                with self._lock:
                    pending.add([spooled], size)
        for pending in self._pending:
            with self._lock:
                segments = pending.take()
            if segments:
                self._write(pending, segments)

    def _write(self, pending: _Pending, segments: list[Segment]) -> None:
        """Inserts the segments in order, one insert each; where one fails, it and those after it
        are kept for the next round (or dropped, where the store refused them for good)."""
        stored = 0
        for at, segment in enumerate(segments):
            try:
                pending.store.insert_evaluations(segment.table, segment.token)
            except Exception as exc:
                rest = segments[at:]
                n = sum(s.table.num_rows for s in rest)
                if not isinstance(exc, StoreError):  # a bug, not the store: these rows would fail again
                    log.exception("evaluation results: writing %d row(s) to %s failed; dropped", n, pending.where)
                elif exc.permanent:
                    log.error("evaluation results: %s refused %d row(s) for good (%s); dropped", pending.where, n, exc)
                else:
                    if not pending.failing:  # once per outage, not every second
                        log.warning("evaluation results: writing %d row(s) to %s failed (%s); trying again every "
                                    "%.0f s", n, pending.where, exc, self.interval)
                    pending.failing = True
                    rest = pending.compacted(rest)
                    with self._lock:  # back in front of what came meanwhile
                        pending.add(rest, front=True)
                    break
                self._drop(pending, n)
                pending.forget(rest)
                break
            pending.forget([segment])
            stored += segment.table.num_rows
        if not stored:
            return
        if pending.failing and not pending.segments:
            pending.failing = False
            log.info("evaluation results: %s takes them again", pending.where)
        if pending is self._pending[0]:  # counted once, by the first store
            self._counted["stored"].inc(stored)

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
            segments = pending.take()
            kept = sum(s.table.num_rows for s in segments if s.path is not None)
            lost = sum(s.table.num_rows for s in segments if s.path is None)
            if kept:
                log.warning("evaluation results: %d not written to %s stay on disk in %s for the next start",
                            kept, pending.where, pending.spool.directory)  # type: ignore[union-attr]
            if lost:
                self._drop(pending, lost)
                log.warning("evaluation results: %d not written to %s: it kept failing until the collector "
                            "stopped", lost, pending.where)
            if pending.spool is not None:
                pending.spool.close()
