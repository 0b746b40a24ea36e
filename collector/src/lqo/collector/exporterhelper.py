"""The one wrapper every exporter gets: sending queue, batching, retry with backoff.

Mirrors the OpenTelemetry Collector's exporterhelper. An exporter only implements
``export(batch) -> ExportResult``; this helper owns a bounded queue, merges queued
batches into row- and byte-bounded inserts, retries retryable failures with
exponential backoff up to ``max_elapsed_time``, and counts every span it gives up on.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from pydantic import Field

from lqo.collector.components import Exporter, ExportResult, ExportStatus
from lqo.collector.config import ByteSize, Duration, StrictModel
from lqo.collector.model.spanbatch import SpanBatch
from lqo.collector.queue import BoundedBatchQueue
from lqo.collector.telemetry import SelfTelemetry

log = logging.getLogger(__name__)


class SendingQueueConfig(StrictModel):
    queue_size: int = Field(200_000, gt=0, description="capacity in spans")
    max_bytes: ByteSize = Field(512 * 1024**2, gt=0, description="capacity in decoded bytes")


class BatchConfig(StrictModel):
    # ClickHouse wants few, large inserts (each makes a part that merges later); 1 s /
    # 100k rows measured ~15% less CPU per span than 0.5 s / 50k (bench/BENCHMARKS.md).
    max_rows: int = Field(100_000, gt=0)
    max_bytes: ByteSize = Field(128 * 1024**2, gt=0)
    flush_interval: Duration = 1.0


class RetryConfig(StrictModel):
    enabled: bool = True
    initial_interval: Duration = 0.5
    max_interval: Duration = 30.0
    max_elapsed_time: Duration = 300.0


class QueuedExporter:
    def __init__(
        self,
        exporter_id: str,
        exporter: Exporter,
        queue: SendingQueueConfig,
        batch: BatchConfig,
        retry: RetryConfig,
        telemetry: SelfTelemetry,
    ) -> None:
        self.exporter_id = exporter_id
        self.exporter = exporter
        self.batch_config = batch
        self.retry = retry
        self.queue = BoundedBatchQueue(
            f"exporter/{exporter_id}", queue.queue_size, queue.max_bytes, telemetry
        )
        self._sent = telemetry.exporter_sent.labels(exporter_id)
        self._failed = telemetry.exporter_send_failed
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"lqo-exporter-{exporter_id}", daemon=True
        )

    def start(self) -> None:
        self.exporter.start()
        self._thread.start()

    def enqueue(self, batch: SpanBatch, timeout: float | None = None) -> bool:
        """Hand a batch to the sender; waits for room (backpressure) up to ``timeout``."""
        if not len(batch):
            return True
        return self.queue.put(batch, timeout)

    def _run(self) -> None:
        cfg = self.batch_config
        while True:
            parts = self.queue.take(cfg.max_rows, cfg.max_bytes, wait=cfg.flush_interval)
            if not parts:
                if self.queue.closed:
                    return
                continue
            # Let a small first batch gather company for up to flush_interval.
            total = sum(len(p) for p in parts)
            deadline = time.monotonic() + cfg.flush_interval
            while total < cfg.max_rows and not self.queue.closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                more = self.queue.take(cfg.max_rows - total, cfg.max_bytes, wait=remaining)
                parts.extend(more)
                total += sum(len(p) for p in more)
            self._send(SpanBatch.concat(parts))

    def _send(self, batch: SpanBatch) -> None:
        cfg = self.batch_config
        for offset in range(0, len(batch), cfg.max_rows):
            self._send_with_retry(batch.slice(offset, cfg.max_rows))

    def _send_with_retry(self, batch: SpanBatch) -> None:
        started = time.monotonic()
        interval = self.retry.initial_interval
        while True:
            try:
                result = self.exporter.export(batch)
            except Exception as exc:  # an exporter bug must not kill the sender thread
                log.exception("exporter %s raised", self.exporter_id)
                result = ExportResult(ExportStatus.PERMANENT, f"exporter raised {type(exc).__name__}")
            if result.status is ExportStatus.SUCCESS:
                self._sent.inc(len(batch))
                return
            elapsed = time.monotonic() - started
            if (
                result.status is ExportStatus.PERMANENT
                or not self.retry.enabled
                or elapsed + interval > self.retry.max_elapsed_time
                or self._stop.is_set()
            ):
                reason = "permanent" if result.status is ExportStatus.PERMANENT else "retries_exhausted"
                log.error(
                    "exporter %s dropped %d spans (%s): %s",
                    self.exporter_id, len(batch), reason, result.message,
                )
                self._failed.labels(self.exporter_id, reason).inc(len(batch))
                return
            log.warning(
                "exporter %s: retryable failure, retrying in %.1fs: %s",
                self.exporter_id, interval, result.message,
            )
            self._stop.wait(interval * random.uniform(0.8, 1.2))
            interval = min(interval * 2, self.retry.max_interval)

    def shutdown(self, timeout: float) -> None:
        """Flush what is queued (bounded by ``timeout``), then stop and close the exporter."""
        self.queue.close()
        if self._thread.ident is None:  # never started: its exporter failed to start
            self.exporter.shutdown()
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()  # abandon retries; the in-flight attempt finishes
            self._thread.join(5)
        leftover = self.queue.drain()
        lost = sum(len(b) for b in leftover)
        if lost:
            log.error("exporter %s: shutdown dropped %d queued spans", self.exporter_id, lost)
            self._failed.labels(self.exporter_id, "shutdown").inc(lost)
        self.exporter.shutdown()
