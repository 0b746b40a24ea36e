"""A bounded queue of span batches, measured in spans and bytes.

Every queue in the collector is one of these: a producer that finds it full gets a
refusal (``offer`` returns False) or waits (``put`` with a timeout) — never a silent drop.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from lqo.collector.model.spanbatch import SpanBatch
from lqo.collector.telemetry import SelfTelemetry


class BoundedBatchQueue:
    def __init__(
        self, name: str, max_spans: int, max_bytes: int, telemetry: SelfTelemetry
    ) -> None:
        self.name = name
        self.max_spans = max_spans
        self.max_bytes = max_bytes
        self._items: deque[SpanBatch] = deque()
        self._spans = 0
        self._bytes = 0
        self._closed = False
        self._cond = threading.Condition()
        self._size_gauge = telemetry.queue_size.labels(name)
        telemetry.queue_capacity.labels(name).set(max_spans)
        self._size_gauge.set(0)

    def _fits(self, batch: SpanBatch) -> bool:
        if not self._items:
            return True  # one oversized batch is admitted alone rather than refused forever
        return (
            self._spans + len(batch) <= self.max_spans
            and self._bytes + batch.approx_bytes <= self.max_bytes
        )

    def _append(self, batch: SpanBatch) -> None:
        self._items.append(batch)
        self._spans += len(batch)
        self._bytes += batch.approx_bytes
        self._size_gauge.set(self._spans)
        self._cond.notify_all()

    def offer(self, batch: SpanBatch) -> bool:
        """Enqueue if there is room now; False when full or closed."""
        with self._cond:
            if self._closed or not self._fits(batch):
                return False
            self._append(batch)
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
            self._append(batch)
            return True

    def take(
        self, max_spans: int, max_bytes: int, wait: float
    ) -> list[SpanBatch]:
        """Up to ``max_spans``/``max_bytes`` worth of whole batches; waits ≤ ``wait`` s for one."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(wait)
            out: list[SpanBatch] = []
            spans = nbytes = 0
            while self._items:
                head = self._items[0]
                if out and (spans + len(head) > max_spans or nbytes + head.approx_bytes > max_bytes):
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
            return out

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
