"""The GenAI span in two halves: its context on the call path, the SDK span on the worker.

The OpenTelemetry SDK's ``Tracer.start_span`` costs ~35 µs on a small VM (bounded attributes,
the ``_Span``, the processors' ``on_start``): when it ran on the call path it was most of the
latency a call gained. What the call path needs is only the span's *context* — trace and span
id, sampled flag, trace state — current while the request is sent, so the HTTP client span
becomes its child and the ``traceparent`` header names it. The call path makes a
``DeferredSpan``: under the SDK's default sampler its context (and the verdict whether the
request is an LLM call at all) is made only when first asked for, or on the worker; under any
other sampler ``SpanStarter.start`` asks the sampler once, on the calling thread, with the
attributes semconv lists for samplers, and makes the context there. The ids come from the
tracer's own id generator. ``SpanStarter.materialize``, on the telemetry worker, then has the
same tracer create the SDK span with those ids, that decision and the call's start time. It
does so by presetting them on thin wrappers around the tracer's ``id_generator`` and
``sampler``, which the SDK's ``Tracer`` keeps as instance attributes; the tracer is this
instrumentation's own (its scope), and the wrappers pass through to the originals whenever
nothing is preset.

Used only with the SDK's tracer and the deferred worker. Any other tracer (a vendor's API
implementation, the no-op one) or inline mode start the span eagerly, as before; a tracer
disabled by its TracerConfig gives the caller's context, as the SDK's own start_span does. What the application sees during the call: ``trace.get_current_span()`` inside httpx
event hooks is a non-recording span with the GenAI span's context (attributes set on it
there are dropped; the span's own attributes are the instrumentation's).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from time import time_ns
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from ._sniff import request_model

_SAMPLED = TraceFlags.SAMPLED
_RANDOM = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)  # W3C trace context level 2 (SDK >= 1.40)
_FLAGS = tuple(TraceFlags(i) for i in range(4))
_NO_STATE = TraceState()  # immutable: one empty state serves every span without one
_MASK64 = (1 << 64) - 1
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


def _is_random_id_generator(ids: Any) -> bool:
    """The SDK's default ``RandomIdGenerator`` (all bits from ``random.getrandbits``), exactly."""
    cls = type(ids)
    return cls.__name__ == "RandomIdGenerator" and cls.__module__.startswith("opentelemetry.sdk.trace")


# (span name, attributes at creation): asked for on the call path only when a sampler needs them.
Describe = Callable[[], tuple[str, dict[str, Any]]]
# Makes a DeferredSpan's verdict and context the first time anyone asks (rarely two threads at once).
_CONTEXT_LOCK = threading.Lock()
_DECIDED = "(decided by the caller)"  # a DeferredSpan.model: an LLM call, its model the Call's


class DeferredSpan(NonRecordingSpan):
    """The GenAI span while the call runs: its context, and what the worker needs to make the SDK span.

    With the SDK's default sampler the decision is the parent's flag, so nothing on the call path
    needs the ids, nor the model: both wait until someone asks for the context — an HTTP client
    span starting under this one, a propagator writing ``traceparent``, the application in an
    event hook — or else for the worker. Whoever comes first decides whether the request is an
    LLM call at all (``_sniff.request_model``); if it is not, the context is the caller's own (no
    span of ours in between) and the worker records nothing. A sampler that must be asked (any
    other) is asked on the call path, and the context is made there.
    """

    # Set where known at creation (class defaults: one instance write less each on the call path).
    _context: SpanContext | None = None  # type: ignore[assignment]
    model: str | None = None  # None: not known yet; "": not an LLM call; else the call's (sniffed) model
    result: Any = None  # the sampler's result, or None where the SDK's sampler retakes the same decision
    described: tuple[str, dict[str, Any]] | None = None  # (name, attributes) the sampler was shown
    own = True  # False: the context is the caller's (no span of ours may carry it)

    def __init__(self, starter: SpanStarter, tracer: Any, parent: Any, start_ns: int, request: Any = None) -> None:
        self.starter = starter
        self.tracer = tracer
        self.parent = parent  # the caller's Context
        self.start_ns = start_ns
        self.request = request  # the httpx request, until the verdict on it

    def genai_model(self) -> str:
        """The sniffed model, "" if this is not an LLM call; decided once, by the first to ask."""
        model = self.model
        if model is None:
            with _CONTEXT_LOCK:
                model = self._decide()
        return model

    def _decide(self) -> str:  # under _CONTEXT_LOCK
        model = self.model
        if model is None:
            model = self.model = request_model(self.request)
            self.request = None
        return model

    def get_span_context(self) -> SpanContext:
        context = self._context
        if context is None:
            with _CONTEXT_LOCK:
                context = self._context
                if context is None:
                    if self._decide() and self.starter.enabled():
                        context = self.starter.default_context(self.tracer, self.parent)
                    else:  # not an LLM call, or a disabled tracer: the caller's context shows through
                        context = trace.get_current_span(self.parent).get_span_context()
                        self.own = False
                    self._context = context
        return context


class SpanStarter:
    """Starts GenAI CLIENT spans: lazily (see the module doc) where it can, else eagerly."""

    def __init__(self, tracer: Any, lazy: bool) -> None:
        self.tracer = tracer
        self.lazy = lazy
        self._sdk: Any = None  # the SDK tracer whose id generator and sampler are wrapped
        self._default_sampler = False
        self._random_ids = False  # the SDK's RandomIdGenerator: both ids from one getrandbits
        self._enabled: Any = None
        # The SDK tracer once resolved and wrapped, if its sampler is the default: deferrable()'s
        # answer, read by the call path without a call.
        self.deferred_tracer: Any = None
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
                self._random_ids = _is_random_id_generator(tracer.id_generator.inner)
                self._enabled = getattr(tracer, "_is_enabled", None)  # the tracer config's switch
                self._sdk = tracer
                self.deferred_tracer = tracer if self._default_sampler else None
        enabled = self._enabled
        if enabled is not None and not enabled():
            return None
        return tracer

    def close(self) -> None:
        """Gives the tracer its own id generator and sampler back (after the worker stopped)."""
        tracer, self._sdk, self.deferred_tracer = self._sdk, None, None
        if tracer is None:
            return
        with self._lock:
            if isinstance(tracer.id_generator, _PresetIds):
                tracer.id_generator = tracer.id_generator.inner
            if isinstance(tracer.sampler, _PresetSampler):
                tracer.sampler = tracer.sampler.inner

    def deferrable(self) -> Any:
        """The SDK tracer when a call's span can wait whole for the worker or its first use (the
        SDK's default sampler: nothing on the call path needs its ids or model), else None; it
        resolves the tracer first if need be. Once resolved, the call path reads
        ``deferred_tracer`` directly. Whether the tracer is enabled (its TracerConfig) is asked
        when the context is made, not here."""
        if self._sdk is None and self.lazy:
            self._lazy_tracer()
        return self.deferred_tracer

    def enabled(self) -> bool:
        """The SDK tracer's config switch (``TracerProvider._set_tracer_configurator``)."""
        enabled = self._enabled
        return enabled is None or bool(enabled())

    def start(self, ctx: Any, describe: Describe) -> tuple[Any, DeferredSpan | None]:
        """(the span to make current during the call, the deferred span or None if started).

        ``ctx`` is the caller's current context; ``describe`` gives the span's name and creation
        attributes, and is called on the call path only where a sampler or an eager start needs
        them (otherwise ``materialize`` calls it on the worker).
        """
        tracer = self._lazy_tracer() if self.lazy else None
        if tracer is None:
            name, attributes = describe()
            return self.tracer.start_span(name, ctx, kind=SpanKind.CLIENT, attributes=attributes), None
        if self._default_sampler:  # the caller decided it is an LLM call
            span = DeferredSpan(self, tracer, ctx, time_ns())
            span.model = _DECIDED
        else:
            span = self._sampled(tracer, ctx, describe)
        return span, span

    def _ids(self, tracer: Any, parent: SpanContext) -> tuple[int, int, bool]:
        """(trace id, span id or 0 to be generated after sampling, random-trace-id flag)."""
        ids = tracer.id_generator.inner
        if parent.is_valid:
            span_id = random.getrandbits(64) if self._random_ids else 0
            return parent.trace_id, span_id, bool(parent.trace_flags & _RANDOM)
        if self._random_ids:  # what RandomIdGenerator does, in one draw instead of two calls
            bits = random.getrandbits(192)
            return bits >> 64 or ids.generate_trace_id(), bits & _MASK64, bool(_RANDOM)
        return ids.generate_trace_id(), 0, bool(_RANDOM) and ids.is_trace_id_random()

    def default_context(self, tracer: Any, ctx: Any) -> SpanContext:
        """The span's context under the SDK's default sampler: sampled as its parent (a root: yes)."""
        parent = trace.get_current_span(ctx).get_span_context()
        trace_id, span_id, random_id = self._ids(tracer, parent)
        if parent.is_valid:
            flags, state = (_SAMPLED if parent.trace_flags.sampled else 0), parent.trace_state
        else:
            flags, state = _SAMPLED, _NO_STATE
        if random_id:
            flags |= _RANDOM
        span_id = span_id or tracer.id_generator.inner.generate_span_id()
        return SpanContext(trace_id, span_id, False, _FLAGS[flags], state)

    def _sampled(self, tracer: Any, ctx: Any, describe: Describe) -> DeferredSpan:
        """The span with its sampler asked now, on the calling thread, with the semconv attributes."""
        start_ns = time_ns()
        parent = trace.get_current_span(ctx).get_span_context()
        trace_id, span_id, random_id = self._ids(tracer, parent)
        name, attributes = described = describe()
        result = tracer.sampler.inner.should_sample(ctx, trace_id, name, SpanKind.CLIENT, attributes, ())
        state = result.trace_state if result.trace_state is not None else _NO_STATE
        flags = _SAMPLED if result.decision.is_sampled() else 0
        if random_id:
            flags |= _RANDOM
        if not span_id:  # after the sampler, as the SDK asks a custom generator
            span_id = tracer.id_generator.inner.generate_span_id()
        context = SpanContext(trace_id, span_id, False, _FLAGS[flags], state)
        span = DeferredSpan(self, tracer, ctx, start_ns)
        span.model, span.result, span.described, span._context = _DECIDED, result, described, context
        return span

    def materialize(self, span: DeferredSpan, describe: Describe) -> Any:
        """The SDK span for ``span`` (on the worker), with its ids, decision and start time."""
        context = span.get_span_context()
        if not span.own:  # given out as the caller's own context: no span of ours
            return NonRecordingSpan(context)
        name, attributes = span.described or describe()
        _PRESET.value = (context.trace_id, context.span_id, span.result)
        try:
            return span.tracer.start_span(name, context=span.parent, kind=SpanKind.CLIENT,
                                          attributes=attributes, start_time=span.start_ns)
        finally:
            _PRESET.value = None
