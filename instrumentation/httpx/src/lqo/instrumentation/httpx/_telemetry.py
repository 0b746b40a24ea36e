"""Tracer, meter instruments, event logger and settings shared by every instrumented call."""

from __future__ import annotations

import logging
import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.metrics import get_meter
from opentelemetry.semconv._incubating.metrics import gen_ai_metrics
from opentelemetry.semconv.schemas import Schemas

from ._baggage import BaggageKeys
from ._content import CaptureMode, capture_mode_from_env, max_bytes_from_env
from ._spans import SpanStarter
from ._worker import Worker, defer_from_env
from .decoders import Router
from .version import __version__

_log = logging.getLogger("lqo.instrumentation.httpx")
SCOPE = "lqo.instrumentation.httpx"

# An enclosing span that records an LLM call itself, by the conventions instrumentations use:
# semconv's inference operations, OpenLLMetry's request type, OpenInference's span kind.
_INFERENCE = (
    ("gen_ai.operation.name", frozenset({"chat", "text_completion", "embeddings", "generate_content"})),
    ("llm.request.type", frozenset({"chat", "completion", "embedding", "rerank"})),
    ("openinference.span.kind", frozenset({"LLM", "EMBEDDING"})),
)

# Semconv's advisory bucket boundaries (gen-ai-metrics.md).
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)


class Telemetry:
    """Everything a call needs, created once per ``instrument()``."""

    def __init__(
        self,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        logger_provider: Any = None,
        capture_mode: CaptureMode | None = None,
        content_max_bytes: int | None = None,
        provider_hosts: dict[str, str] | None = None,
        defer: bool | None = None,
        baggage_keys: str | list[str] | tuple[str, ...] | None = None,
    ) -> None:
        schema = Schemas.V1_37_0.value if hasattr(Schemas, "V1_37_0") else None
        self.tracer = trace.get_tracer(SCOPE, __version__, tracer_provider, schema_url=schema)
        meter = get_meter(SCOPE, __version__, meter_provider, schema_url=schema)
        self.duration = meter.create_histogram(
            gen_ai_metrics.GEN_AI_CLIENT_OPERATION_DURATION,
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.tokens = meter.create_histogram(
            gen_ai_metrics.GEN_AI_CLIENT_TOKEN_USAGE,
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=list(TOKEN_BUCKETS),
        )
        self.ttfc = meter.create_histogram(
            gen_ai_metrics.GEN_AI_CLIENT_OPERATION_TIME_TO_FIRST_CHUNK,
            unit="s",
            description="Time to receive the first chunk of a streamed response",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.capture_mode = capture_mode if capture_mode is not None else capture_mode_from_env()
        self.content_max_bytes = content_max_bytes or max_bytes_from_env()
        self.baggage_keys = BaggageKeys(baggage_keys)
        self.router = Router(provider_hosts)
        self.routes = self.router.cache  # path → route or None, for the call path to read directly
        self._logger_provider = logger_provider
        self._event_logger: Any = None
        self._warned: set[str] = set()
        self._enclosing: set[str] = set()  # instrumentations already reported by note_enclosing
        self._warn_lock = threading.Lock()
        self.enabled = True  # False once uninstrumented: a send patched over by others passes through
        self.worker = Worker(self.internal_error, defer_from_env() if defer is None else defer)
        # Inline mode ends the span before the call returns: nothing to gain by starting it late.
        self.spans = SpanStarter(self.tracer, lazy=self.worker.deferred)

    @property
    def event_logger(self) -> Any:
        if self._event_logger is None:
            from opentelemetry._logs import get_logger

            self._event_logger = get_logger(SCOPE, __version__, self._logger_provider)
        return self._event_logger

    def internal_error(self, where: str, exc: BaseException) -> None:
        """Instrumentation bugs must never reach the application: log once per site, go on."""
        with self._warn_lock:
            if where in self._warned:
                return
            self._warned.add(where)
        # The exception type only: messages may quote request content.
        _log.warning("GenAI instrumentation error in %s (%s); the call itself is unaffected", where, type(exc).__name__)

    def note_enclosing(self, ctx: Any) -> None:
        """Warns, once per instrumentation, when the span around a call's is another
        instrumentation's record of the same LLM call (one that wraps the provider SDK, or a
        framework's model call): the collector would store, count and price the call twice."""
        if ctx is None:
            return
        parent = trace.get_current_span(ctx)
        attributes = getattr(parent, "attributes", None)  # an SDK span's; others show none
        if not attributes:
            return
        scope = getattr(getattr(parent, "instrumentation_scope", None), "name", None) or "?"
        if scope == SCOPE or scope in self._enclosing:
            return
        if not any(attributes.get(key) in values for key, values in _INFERENCE):
            return
        self._enclosing.add(scope)
        _log.warning(
            "LLM calls are also recorded by another instrumentation (%s), whose span encloses "
            "lqo's: each call is stored, counted and priced twice. Uninstrument one of the two "
            "(lqo-instrument leaves out the SDK instrumentations it knows of)", scope)
