"""What every OTLP transport does with a request body, independent of the wire.

Decode → partial success for invalid spans → offer to the pipeline → count. The
transports (gRPC, HTTP) only map :class:`Outcome` to their status codes.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lqo.collector.model.genai_events import LogsDecodeResult
from lqo.collector.model.otlp import DecodeResult, PayloadError
from lqo.collector.pipeline import Pipeline
from lqo.collector.telemetry import LogEvery, SelfTelemetry

log = logging.getLogger(__name__)


REFUSAL_LOG_INTERVAL_S = 60.0


class OutcomeKind(enum.Enum):
    ACCEPTED = "accepted"  # all or some spans queued (rejected > 0 → partial success)
    INVALID = "invalid"  # undecodable payload: not retryable
    TOO_LARGE = "too_large"
    UNAVAILABLE = "unavailable"  # queue full or shutting down: retry later


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    accepted: int = 0
    rejected: int = 0
    message: str = ""


class RefusedRequests:
    """Requests a server refused before reading their body (``unauthenticated``): counted in
    ``lqo_receiver_refused_requests_total`` under ``receiver_id``, and logged — the first at once,
    then at most one line a minute with the count (a misconfigured client retries a lot)."""

    def __init__(self, receiver_id: str, telemetry: SelfTelemetry) -> None:
        self.receiver_id = receiver_id
        self.telemetry = telemetry
        self._log_every = LogEvery(REFUSAL_LOG_INTERVAL_S)

    def refuse_request(self, transport: str, reason: str, peer: str) -> None:
        self.telemetry.receiver_refused_requests.labels(self.receiver_id, transport, reason).inc()
        if not (count := self._log_every.tally()):
            return
        log.warning("%s/%s: refused %d request(s) (%s), the latest from %s",
                    self.receiver_id, transport, count, reason, peer or "an unknown peer")


class Ingest(RefusedRequests):
    def __init__(self, receiver_id: str, pipeline: Pipeline, telemetry: SelfTelemetry) -> None:
        super().__init__(receiver_id, telemetry)
        self.pipeline = pipeline

    def refuse(self, transport: str, reason: str, spans: int = 0) -> None:
        """Count a refusal; ``spans`` is 0 when the payload could not even be counted."""
        self.telemetry.receiver_refused.labels(self.receiver_id, transport, reason).inc(spans)

    def _decode(self, body: bytes, decode: Callable[[bytes], Any], transport: str) -> Any:
        """The decoded payload, or the Outcome that refuses it."""
        if not self.pipeline.accepting:
            self.refuse(transport, "shutting_down")
            return Outcome(OutcomeKind.UNAVAILABLE, message="collector is shutting down")
        try:
            return decode(body)
        except PayloadError as exc:
            self.refuse(transport, "invalid_payload")
            log.info("%s/%s: refused undecodable payload: %s", self.receiver_id, transport, exc)
            return Outcome(OutcomeKind.INVALID, message=str(exc))
        except RecursionError:
            self.refuse(transport, "invalid_payload")
            return Outcome(OutcomeKind.INVALID, message="payload nests values too deeply")

    def handle_logs(self, body: bytes, decode: Callable[[bytes], LogsDecodeResult], transport: str) -> Outcome:
        """OTLP log records: the GenAI events of spans wait for their span (``genai_events``),
        evaluation results are written to the store (``evaluations``); the rest are counted and
        dropped (the collector stores traces). ``accepted``: log records."""
        result = self._decode(body, decode, transport)
        if isinstance(result, Outcome):
            return result
        if not self.pipeline.evaluations.offer(result.evaluations):  # the store is behind
            self.refuse(transport, "queue_full")
            return Outcome(OutcomeKind.UNAVAILABLE, message="collector is full; retry after backoff")
        self.pipeline.events.add(result.events)
        counted = self.telemetry.receiver_log_records
        for kind, n in (("genai_event", len(result.events)), ("evaluation", len(result.evaluations)),
                        ("invalid", result.invalid), ("ignored", result.ignored)):
            if n:
                counted.labels(self.receiver_id, transport, kind).inc(n)
        return Outcome(OutcomeKind.ACCEPTED, len(result.events) + len(result.evaluations) + result.invalid
                       + result.ignored)

    def handle(self, body: bytes, decode: Callable[[bytes], DecodeResult], transport: str) -> Outcome:
        result = self._decode(body, decode, transport)
        if isinstance(result, Outcome):
            return result
        batch = result.batch
        if result.rejected:
            self.refuse(transport, "invalid_span", result.rejected)
        if not self.pipeline.offer(batch):
            self.refuse(transport, "queue_full", len(batch))
            return Outcome(
                OutcomeKind.UNAVAILABLE,
                message="collector queue is full; retry after backoff",
            )
        self.telemetry.receiver_accepted.labels(self.receiver_id, transport).inc(len(batch))
        message = ""
        if result.rejected:
            message = f"{result.rejected} spans rejected: {result.rejected_reason}"
        return Outcome(OutcomeKind.ACCEPTED, len(batch), result.rejected, message)
