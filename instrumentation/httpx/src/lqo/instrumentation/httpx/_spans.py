"""The GenAI span in two halves: its context on the call path, the SDK span on the worker.

The OpenTelemetry SDK's ``Tracer.start_span`` costs ~35 µs on a small VM (bounded attributes,
the ``_Span``, the processors' ``on_start``): when it ran on the call path it was most of the
latency a call gained. What the call path needs is only the span's *context* — trace and span
id, sampled flag, trace state — current while the request is sent, so the HTTP client span
becomes its child and the ``traceparent`` header names it. ``SpanStarter.start`` makes that
context with the tracer's own id generator and sampler (one sampling decision, taken with the
attributes semconv lists for samplers) and returns it as a ``NonRecordingSpan``;
``SpanStarter.materialize``, on the telemetry worker, then has the same tracer create the SDK
span with those ids, that decision and the call's start time. It does so by presetting them on
thin wrappers around the tracer's ``id_generator`` and ``sampler``, which the SDK's ``Tracer``
keeps as instance attributes; the tracer is this instrumentation's own (its scope), and the
wrappers pass through to the originals whenever nothing is preset.

Used only with the SDK's tracer and the deferred worker. Any other tracer (a vendor's API
implementation, the no-op one), a disabled tracer, or inline mode start the span eagerly, as
before. What the application sees during the call: ``trace.get_current_span()`` inside httpx
event hooks is a ``NonRecordingSpan`` with the GenAI span's context (attributes set on it
there are dropped; the span's own attributes are the instrumentation's).
"""

from __future__ import annotations

import threading
import time
from typing import Any, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

_SAMPLED = TraceFlags.SAMPLED
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)  # W3C trace context level 2 (SDK >= 1.40)
_FLAGS = tuple(TraceFlags(i) for i in range(4))
_NO_STATE = TraceState()  # immutable: one empty state serves every span without one
# The SDK's default sampler (``parentbased_always_on``), whose decision is the parent's sampled
# flag, or "sample" for a root: taken here without calling it (and so without the
# ``SamplingResult`` it builds), and again by the SDK on the worker, which reaches the same.
DEFAULT_SAMPLER = ("ParentBased{root:AlwaysOnSampler,remoteParentSampled:AlwaysOnSampler,"
                   "remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,"
                   "localParentNotSampled:AlwaysOffSampler}")


class _Preset(threading.local):
    """What the next ``start_span`` on this thread must use: (trace id, span id, sampling result)."""

    value: tuple[int, int, Any] | None = None


# One for the process: a tracer wrapped by an earlier instrument() keeps its wrappers.
_PRESET = _Preset()


class _PresetIds:
    """The tracer's id generator, or the preset ids while the worker materializes a span."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def generate_trace_id(self) -> int:
        p = _PRESET.value
        return p[0] if p is not None else self.inner.generate_trace_id()

    def generate_span_id(self) -> int:
        p = _PRESET.value
        if p is None:
            return self.inner.generate_span_id()
        _PRESET.value = None  # the last thing start_span asks for: consumed
        return p[1]

    def __getattr__(self, name: str) -> Any:  # everything else is the original's
        return getattr(self.inner, name)


class _PresetSampler:
    """The tracer's sampler, or the decision already taken on the call path."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def should_sample(self, *args: Any, **kwargs: Any) -> Any:
        p = _PRESET.value
        if p is None or p[2] is None:  # nothing preset, or a decision the sampler retakes alike
            return self.inner.should_sample(*args, **kwargs)
        return p[2]

    def __getattr__(self, name: str) -> Any:  # everything else is the original's
        return getattr(self.inner, name)


def _sdk_tracer(tracer: Any) -> Any:
    """The SDK ``Tracer`` behind ``tracer`` (itself or a ProxyTracer's delegate), else None."""
    if isinstance(tracer, trace.ProxyTracer):
        tracer = getattr(tracer, "_tracer", None)  # the delegate once a provider is set
    cls = type(tracer)
    if cls.__name__ != "Tracer" or not cls.__module__.startswith("opentelemetry.sdk.trace"):
        return None
    if not (hasattr(tracer, "id_generator") and hasattr(tracer, "sampler")):
        return None
    return tracer


class Pending(NamedTuple):
    """A span whose context exists (on the call path) and whose SDK span is yet to be made."""

    tracer: Any
    name: str
    context: Any
    attributes: dict[str, Any]
    ids: tuple[int, int]
    result: Any  # the sampler's result, or None where the SDK's sampler retakes the same decision
    start_ns: int


class SpanStarter:
    """Starts GenAI CLIENT spans: lazily (see the module doc) where it can, else eagerly."""

    def __init__(self, tracer: Any, lazy: bool) -> None:
        self.tracer = tracer
        self.lazy = lazy
        self._sdk: Any = None  # the SDK tracer whose id generator and sampler are wrapped
        self._default_sampler = False
        self._lock = threading.Lock()

    def _lazy_tracer(self) -> Any:
        """The SDK tracer to start lazily with, wrapped on first use; None → start eagerly."""
        tracer = self._sdk
        if tracer is None:
            tracer = _sdk_tracer(self.tracer)
            if tracer is None:
                # A ProxyTracer resolves once a provider is set; any other tracer never will.
                self.lazy = isinstance(self.tracer, trace.ProxyTracer)
                return None
            with self._lock:
                if not isinstance(tracer.id_generator, _PresetIds):
                    tracer.id_generator = _PresetIds(tracer.id_generator)
                if not isinstance(tracer.sampler, _PresetSampler):
                    tracer.sampler = _PresetSampler(tracer.sampler)
                try:
                    self._default_sampler = tracer.sampler.inner.get_description() == DEFAULT_SAMPLER
                except Exception:
                    self._default_sampler = False
                self._sdk = tracer
        enabled = getattr(tracer, "_is_enabled", None)
        if enabled is not None and not enabled():
            return None
        return tracer

    def close(self) -> None:
        """Gives the tracer its own id generator and sampler back (after the worker stopped)."""
        tracer, self._sdk = self._sdk, None
        if tracer is None:
            return
        with self._lock:
            if isinstance(tracer.id_generator, _PresetIds):
                tracer.id_generator = tracer.id_generator.inner
            if isinstance(tracer.sampler, _PresetSampler):
                tracer.sampler = tracer.sampler.inner

    def start(self, name: str, attributes: dict[str, Any]) -> tuple[Any, Pending | None]:
        """(the span to make current during the call, the pending half or None if started)."""
        tracer = self._lazy_tracer() if self.lazy else None
        if tracer is None:
            return self.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes), None
        start_ns = time.time_ns()
        ctx = otel_context.get_current()
        parent = trace.get_current_span(ctx).get_span_context()
        ids = tracer.id_generator.inner
        if parent.is_valid:
            trace_id = parent.trace_id
            random_id = bool(parent.trace_flags & _RANDOM)
        else:
            trace_id = ids.generate_trace_id()
            random_id = bool(_RANDOM) and ids.is_trace_id_random()
        if self._default_sampler:
            result = None
            sampled = parent.trace_flags.sampled if parent.is_valid else True
            state = parent.trace_state if parent.is_valid else _NO_STATE
        else:
            result = tracer.sampler.inner.should_sample(ctx, trace_id, name, SpanKind.CLIENT, attributes, ())
            sampled = result.decision.is_sampled()
            state = result.trace_state if result.trace_state is not None else _NO_STATE
        flags = _SAMPLED if sampled else 0
        if random_id:
            flags |= _RANDOM
        span_id = ids.generate_span_id()
        span = NonRecordingSpan(SpanContext(trace_id, span_id, False, _FLAGS[flags], state))
        return span, Pending(tracer, name, ctx, attributes, (trace_id, span_id), result, start_ns)

    def materialize(self, pending: Pending) -> Any:
        """The SDK span for ``pending`` (on the worker), with its ids, decision and start time."""
        _PRESET.value = (*pending.ids, pending.result)
        try:
            return pending.tracer.start_span(pending.name, context=pending.context, kind=SpanKind.CLIENT,
                                             attributes=pending.attributes, start_time=pending.start_ns)
        finally:
            _PRESET.value = None
