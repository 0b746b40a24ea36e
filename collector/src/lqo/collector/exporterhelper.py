"""The one wrapper every exporter gets: sending queue, batching, retry with backoff.

Mirrors the OpenTelemetry Collector's exporterhelper. An exporter only implements
``export(batch) -> ExportResult``; this helper owns a bounded queue (in memory, or on disk with
``sending_queue.storage``), merges queued batches into row- and byte-bounded inserts, retries
retryable failures with exponential backoff up to ``max_elapsed_time``, and counts every span
it gives up on.
"""

from __future__ import annotations

import logging
import random
import threading
import time

from pydantic import Field

from lqo.collector.components import Exporter, ExportResult, ExportStatus
from lqo.collector.config import ByteSize, Duration, StrictModel
from lqo.collector.extensions.file_storage import FileStorage
from lqo.collector.model.spanbatch import SpanBatch
from lqo.collector.persistentqueue import PersistentBatchQueue
from lqo.collector.queue import BoundedBatchQueue
from lqo.collector.telemetry import LogEvery, SelfTelemetry

log = logging.getLogger(__name__)


class SendingQueueConfig(StrictModel):
    queue_size: int = Field(200_000, gt=0, description="capacity in spans")
    max_bytes: ByteSize = Field(512 * 1024**2, gt=0, description="capacity in decoded bytes")
    # a file_storage extension's id: the queue is kept on disk there and outlives a restart
    storage: str | None = None


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
    max_elapsed_time: Duration = 300.0  # 0: retry until the store takes the batch (or shutdown)


class QueuedExporter:
    def __init__(
        self,
        exporter_id: str,
        exporter: Exporter,
        queue: SendingQueueConfig,
        batch: BatchConfig,
        retry: RetryConfig,
        telemetry: SelfTelemetry,
        storage: FileStorage | None = None,
    ) -> None:
        self.exporter_id = exporter_id
        self.exporter = exporter
        self.batch_config = batch
        self.retry = retry
        self.storage = storage  # where the queue is kept on disk (and the exporter's evaluation results)
        name = f"exporter/{exporter_id}"
        self.queue: BoundedBatchQueue
        if storage is None:
            self.queue = BoundedBatchQueue(name, queue.queue_size, queue.max_bytes, telemetry)
        else:
            self.queue = PersistentBatchQueue(
                name, queue.queue_size, queue.max_bytes, telemetry,
                storage.directory_for("exporter", exporter_id), exporter_id,
                fsync=storage.config.fsync, compression=storage.config.compression,
            )
        self._sent = telemetry.exporter_sent.labels(exporter_id)
        self._failed = telemetry.exporter_send_failed
        self._split_logged = LogEvery(60.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"lqo-exporter-{exporter_id}", daemon=True
        )

    @property
    def persistent(self) -> bool:
        return isinstance(self.queue, PersistentBatchQueue)

    def start(self) -> None:
        self.queue.open()
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
            # Let a small first batch gather company for up to flush_interval (not a group an
            # earlier run was sending: that goes again as it went, see PersistentBatchQueue).
            total = sum(len(p) for p in parts)
            deadline = time.monotonic() + cfg.flush_interval
            while total < cfg.max_rows and not self.queue.closed and not self.queue.fixed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                more = self.queue.take(cfg.max_rows - total, cfg.max_bytes, wait=remaining)
                parts.extend(more)
                total += sum(len(p) for p in more)
            if not self._send(SpanBatch.concat(parts), *self.queue.begin(cfg.max_rows)):
                return  # shutdown: what is left stays on disk
            self.queue.commit()

    def _send(self, batch: SpanBatch, token: str, rows: int) -> bool:
        """False when shutdown interrupted the retries of a persistent queue's batch (it stays
        on disk, whole, and goes again at the next start with the same tokens: the parts of it
        already written are not stored twice). ``token`` names the batch; it goes in inserts of
        ``rows`` rows, each with a token of its own made from it, the same at every try."""
        for offset in range(0, len(batch), rows):
            part = batch.slice(offset, rows)
            part.insert_token = f"{token}-{offset}-{len(part)}"
            if not self._send_with_retry(part):
                return False
        return True

    def _send_with_retry(self, batch: SpanBatch) -> bool:
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
                return True
            if result.status is ExportStatus.TOO_LARGE and len(batch) > 1:
                return self._send_in_halves(batch, result.message)
            if result.status is ExportStatus.RETRYABLE and self.persistent and self._stop.is_set():
                return False
            elapsed = time.monotonic() - started
            limit = self.retry.max_elapsed_time
            if (
                result.status in (ExportStatus.PERMANENT, ExportStatus.TOO_LARGE)  # too large alone
                or not self.retry.enabled
                or (limit and elapsed + interval > limit)
                or self._stop.is_set()
            ):
                reason = {ExportStatus.PERMANENT: "permanent", ExportStatus.TOO_LARGE: "too_large"}.get(
                    result.status, "retries_exhausted")
                log.error(
                    "exporter %s dropped %d spans (%s): %s",
                    self.exporter_id, len(batch), reason, result.message,
                )
                self._failed.labels(self.exporter_id, reason).inc(len(batch))
                return True
            log.warning(
                "exporter %s: retryable failure, retrying in %.1fs: %s",
                self.exporter_id, interval, result.message,
            )
            self._stop.wait(interval * random.uniform(0.8, 1.2))
            interval = min(interval * 2, self.retry.max_interval)

    def _send_in_halves(self, batch: SpanBatch, message: str) -> bool:
        """A batch the store refused as too large (its memory limit, a proxy's body limit) goes
        again in two halves, each halved again as needed: the spans are written, in smaller
        inserts, instead of being retried whole until given up on."""
        if count := self._split_logged.tally():
            log.warning("exporter %s: the store refused %d insert(s) as too large, the latest of %d "
                        "spans (%s); sending them in halves. Lower batch.max_rows or batch.max_bytes "
                        "if this recurs", self.exporter_id, count, len(batch), message)
        half = len(batch) // 2
        first, second = batch.slice(0, half), batch.slice(half, len(batch) - half)
        if batch.insert_token:  # the halves of a batch sent again are the same halves
            first.insert_token, second.insert_token = f"{batch.insert_token}a", f"{batch.insert_token}b"
        return self._send_with_retry(first) and self._send_with_retry(second)

    def shutdown(self, timeout: float) -> None:
        """Flush what is queued (bounded by ``timeout``), then stop and close the exporter. A
        persistent queue keeps what is left for the next start."""
        self.queue.close()
        if self._thread.ident is None:  # never started: its exporter failed to start
            self.queue.abandon()
            self.exporter.shutdown()
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stop.set()  # abandon retries; the in-flight attempt finishes
            self._thread.join(5)
        lost = self.queue.abandon()
        if lost:
            log.error("exporter %s: shutdown dropped %d queued spans", self.exporter_id, lost)
            self._failed.labels(self.exporter_id, "shutdown").inc(lost)
        self.exporter.shutdown()
