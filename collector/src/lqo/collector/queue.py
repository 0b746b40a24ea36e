"""A bounded queue of span batches, measured in spans and bytes.

Every queue in the collector is one of these: a producer that finds it full gets a
refusal (``offer`` returns False) or waits (``put`` with a timeout) — never a silent drop.
A producer reserves room under the lock and stores its batch outside it
(:class:`lqo.collector.persistentqueue.PersistentBatchQueue` writes a file there), so a slow
store never holds up the consumer.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from typing import Any

from lqo.collector.model.spanbatch import SpanBatch
from lqo.collector.telemetry import SelfTelemetry


class BoundedBatchQueue:
    def __init__(
        self, name: str, max_spans: int, max_bytes: int, telemetry: SelfTelemetry
    ) -> None:
        self.name = name
        self.max_spans = max_spans
        self.max_bytes = max_bytes
        # SpanBatch here; whatever _store returns in a subclass (with len() and approx_bytes)
        self._items: deque[Any] = deque()
        self._spans = 0
        self._bytes = 0
        self._closed = False
        # Items at the head that the next take() returns together whatever the bounds: what an
        # earlier run was sending when it stopped (a persistent queue), to be sent again as it was.
        self._fixed_head = 0
        self.fixed = False  # the last take() returned such a group: send it as it is, adding nothing
        self._cond = threading.Condition()
        self._size_gauge = telemetry.queue_size.labels(name)
        telemetry.queue_capacity.labels(name).set(max_spans)
        self._size_gauge.set(0)

    def _fits(self, batch: SpanBatch) -> bool:
        if not self._spans:
            return True  # one oversized batch is admitted alone rather than refused forever
        return (
            self._spans + len(batch) <= self.max_spans
            and self._bytes + batch.approx_bytes <= self.max_bytes
        )

    def _reserve(self, batch: SpanBatch) -> None:
        self._spans += len(batch)
        self._bytes += batch.approx_bytes
        self._size_gauge.set(self._spans)

    def _admit(self, batch: SpanBatch) -> None:
        """Store a batch whose room is reserved and hand it to the consumer."""
        item = self._store(batch)
        with self._cond:
            self._items.append(item)
            self._cond.notify_all()

    def _store(self, batch: SpanBatch) -> Any:
        return batch

    def _load(self, item: Any) -> SpanBatch | None:
        return item  # type: ignore[no-any-return]

    def offer(self, batch: SpanBatch) -> bool:
        """Enqueue if there is room now; False when full or closed."""
        with self._cond:
            if self._closed or not self._fits(batch):
                return False
            self._reserve(batch)
        self._admit(batch)
        return True

    def put(self, batch: SpanBatch, timeout: float | None = None) -> bool:
        """Wait for room (up to ``timeout`` seconds); False if still full or closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._closed and not self._fits(batch):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            if self._closed:
                return False
            self._reserve(batch)
        self._admit(batch)
        return True

    def take(
        self, max_spans: int, max_bytes: int, wait: float
    ) -> list[SpanBatch]:
        """Up to ``max_spans``/``max_bytes`` worth of whole batches; waits ≤ ``wait`` s for one.
        One consumer only (a persistent queue remembers what it took until :meth:`commit`)."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(wait)
            out: list[Any] = []
            spans = nbytes = 0
            fixed, self._fixed_head = self._fixed_head, 0
            self.fixed = bool(fixed)
            while self._items:
                head = self._items[0]
                if fixed:
                    if len(out) == fixed:
                        break
                elif out and (spans + len(head) > max_spans or nbytes + head.approx_bytes > max_bytes):
                    break
                self._items.popleft()
                out.append(head)
                spans += len(head)
                nbytes += head.approx_bytes
            if out:
                self._spans -= spans
                self._bytes -= nbytes
                self._size_gauge.set(self._spans)
                self._cond.notify_all()
        return [batch for item in out if (batch := self._load(item)) is not None]

    def begin(self, max_rows: int) -> tuple[str, int]:
        """(the token, rows per insert) for the insert(s) of what :meth:`take` returned, to be sent
        in inserts of up to ``max_rows`` rows. The token names them (``SpanBatch.insert_token``),
        the same for every try: a store that got one once stores it once. Here, in memory, it
        covers the tries while the collector runs; a persistent queue keeps both with the batches
        for the tries after a restart (where ``max_rows`` may have changed)."""
        return uuid.uuid4().hex, max_rows

    def commit(self) -> None:
        """What :meth:`take` returned is written or given up on (a persistent queue forgets it)."""

    def open(self) -> None:
        """Ready the queue's storage (a persistent queue: lock it, find what an earlier run left)."""

    def abandon(self) -> int:
        """At shutdown, after the consumer stopped: the spans still queued that are lost
        (all of them here; a persistent queue keeps them for the next start)."""
        return sum(len(b) for b in self.drain())

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def drain(self) -> list[SpanBatch]:
        with self._cond:
            items = list(self._items)
            self._items.clear()
            self._spans = self._bytes = 0
            self._size_gauge.set(0)
            self._cond.notify_all()
            return items

    def __len__(self) -> int:
        return len(self._items)
