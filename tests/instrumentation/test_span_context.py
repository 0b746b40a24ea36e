"""The GenAI span's context during the call is the exported span's, however it was started.

With the SDK's tracer and the deferred worker, the call path makes only the span's context
(ids, one sampling decision) and the worker creates the SDK span later (``_spans``); with any
other tracer, or inline, the span starts on the call path. Either way: what httpx and its hooks
see as the current span during the request is the span that is exported, samplers are asked
once per call with the semconv attributes, and a dropped call exports no span but still counts
in the metrics.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx2
import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from lqo.instrumentation.httpx import HttpxGenAIInstrumentor

from .replay import RECORDINGS, ReplayServer, load_cassette

CHAT_PLAIN = RECORDINGS / "openai" / "openai__test_chat_completion_no_content.yaml"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say this is a test"}]}
SCOPE = "lqo.instrumentation.httpx"


class Seen:
    """An httpx request hook: the current span's context while each request is sent."""

    def __init__(self) -> None:
        self.contexts: list[tuple[SpanContext, int]] = []
        self._lock = threading.Lock()

    def __call__(self, request: Any) -> None:
        with self._lock:
            self.contexts.append((trace.get_current_span().get_span_context(), time.time_ns()))


def _post(url: str, seen: Seen, n: int = 1) -> None:
    with httpx2.Client(event_hooks={"request": [seen]}) as http:
        for _ in range(n):
            http.post(url + "/v1/chat/completions", json=BODY).raise_for_status()


def _ours(exporter: InMemorySpanExporter) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.instrumentation_scope.name == SCOPE]


def _calls_under(sampler: Any, n: int, defer: bool = True) -> tuple[list[Any], Seen]:
    """n calls with a provider using ``sampler``: (our exported spans, the contexts seen)."""
    exporter = InMemorySpanExporter()
    tp = TracerProvider(sampler=sampler)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    inst = HttpxGenAIInstrumentor()
    inst.instrument(tracer_provider=tp, defer=defer)
    seen = Seen()
    try:
        with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
            _post(srv.url, seen, n)
        tp.force_flush()
    finally:
        inst.uninstrument()
    return _ours(exporter), seen


def _same_context(seen: SpanContext, span: Any) -> None:
    assert (seen.trace_id, seen.span_id, seen.trace_flags) == (
        span.context.trace_id, span.context.span_id, span.context.trace_flags)
    assert dict(seen.trace_state) == dict(span.context.trace_state)


@pytest.mark.parametrize("defer", [True, False])
def test_context_during_the_call_is_the_exported_spans(instrument: Any, defer: bool) -> None:
    inst = instrument(defer=defer)
    seen = Seen()
    with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
        threads = [threading.Thread(target=_post, args=(srv.url, seen, 5)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    spans = {s.context.span_id: s for s in inst.genai_spans()}
    assert len(spans) == 20 == len(seen.contexts)
    for ctx, at in seen.contexts:
        span = spans[ctx.span_id]
        _same_context(ctx, span)
        assert span.parent is None  # no span was current in the threads: roots
        assert span.start_time <= at <= span.end_time
        assert span.attributes["gen_ai.usage.output_tokens"] > 0
    assert len({s.context.trace_id for s in spans.values()}) == 20


def _call_under_remote_parent(remote: SpanContext) -> Seen:
    """One call made while a remote parent (an incoming request's context) is current."""
    seen = Seen()
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(remote)))
    try:
        with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
            _post(srv.url, seen)
    finally:
        otel_context.detach(token)
    return seen


def test_parent_and_its_trace_state_carry_over(instrument: Any) -> None:
    inst = instrument()
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED),
                         trace_state=TraceState([("vendor", "v1")]))
    seen = _call_under_remote_parent(remote)
    (span,) = inst.genai_spans()
    _same_context(seen.contexts[0][0], span)
    assert span.context.trace_id == 0x1234 and span.parent.span_id == 0x5678 and span.parent.is_remote
    assert dict(span.context.trace_state) == {"vendor": "v1"}


def test_unsampled_parent_exports_no_span_but_counts_in_metrics(instrument: Any) -> None:
    inst = instrument()
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(TraceFlags.DEFAULT))
    seen = _call_under_remote_parent(remote)
    assert inst.genai_spans() == []
    ctx = seen.contexts[0][0]
    assert ctx.trace_id == 0x1234 and ctx.span_id not in (0, 0x5678) and not ctx.trace_flags.sampled
    (point,) = inst.metrics()["gen_ai.client.operation.duration"]
    assert point.count == 1 and point.attributes["gen_ai.request.model"] == "gpt-4o-mini"


class RecordingSampler(Sampler):
    """Samples every other call, adds an attribute and a trace-state entry; counts its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any], str]] = []
        self._lock = threading.Lock()

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Any = None, trace_state: Any = None) -> SamplingResult:
        with self._lock:
            self.calls.append((name, dict(attributes or {}), threading.current_thread().name))
            keep = len(self.calls) % 2 == 1
        if not keep:
            return SamplingResult(Decision.DROP)
        return SamplingResult(Decision.RECORD_AND_SAMPLE, {**(attributes or {}), "sampler.kept": True},
                              TraceState([("sampler", str(len(self.calls)))]))

    def get_description(self) -> str:
        return "RecordingSampler"


@pytest.mark.parametrize("defer", [True, False])
def test_a_custom_sampler_decides_once_per_call_on_the_calling_thread(defer: bool) -> None:
    sampler = RecordingSampler()
    spans, seen = _calls_under(sampler, 4, defer)
    ours = [c for c in sampler.calls if c[0] == "chat gpt-4o-mini"]
    assert len(ours) == 4  # once per call, not again when the span is made
    assert {c[2] for c in ours} == {threading.current_thread().name}
    assert ours[0][1] == {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                          "gen_ai.request.model": "gpt-4o-mini", "server.address": "127.0.0.1",
                          "server.port": ours[0][1]["server.port"]}
    assert len(spans) == 2  # calls 1 and 3
    by_id = {s.context.span_id: s for s in spans}
    sampled = [c for c, _ in seen.contexts if c.trace_flags.sampled]
    assert [bool(c.trace_flags.sampled) for c, _ in seen.contexts] == [True, False, True, False]
    for ctx in sampled:
        span = by_id[ctx.span_id]
        _same_context(ctx, span)
        assert span.attributes["sampler.kept"] is True
        assert span.attributes["gen_ai.usage.input_tokens"] > 0


def test_always_off_exports_nothing() -> None:
    spans, seen = _calls_under(ALWAYS_OFF, 2)
    assert spans == []
    assert len(seen.contexts) == 2
    assert all(c.is_valid and not c.trace_flags.sampled for c, _ in seen.contexts)


def test_uninstrument_gives_the_tracer_its_generator_and_sampler_back() -> None:
    tp = TracerProvider(sampler=ALWAYS_ON)
    inst = HttpxGenAIInstrumentor()
    inst.instrument(tracer_provider=tp)
    try:
        with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
            _post(srv.url, Seen())
        tracer = inst._tel.spans._sdk
        assert tracer is not None and tracer.sampler.inner is ALWAYS_ON  # wrapped while instrumented
    finally:
        inst.uninstrument()
    assert tracer.sampler is ALWAYS_ON
    assert isinstance(tracer.id_generator, RandomIdGenerator)


def test_instrumented_before_the_global_provider_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """The instrumentor's tracer is then a ProxyTracer: no spans until a provider is set, then
    the real tracer's, started lazily like any other."""
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    inst = HttpxGenAIInstrumentor()
    inst.instrument()
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    seen = Seen()
    try:
        assert isinstance(inst._tel.tracer, trace.ProxyTracer)
        with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
            _post(srv.url, seen)  # no provider yet: the no-op tracer, the call unaffected
            monkeypatch.setattr(trace, "_TRACER_PROVIDER", tp)
            _post(srv.url, seen)
        tp.force_flush()
        assert inst._tel.spans._sdk is not None  # the lazy start was used
    finally:
        inst.uninstrument()
    assert not seen.contexts[0][0].is_valid
    (span,) = _ours(exporter)
    _same_context(seen.contexts[1][0], span)


class _ApiTracer(trace.Tracer):
    """A tracer that is not the SDK's: records where spans start, makes non-recording ones."""

    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []

    def start_span(self, name: str, context: Any = None, *args: Any, **kwargs: Any) -> Any:
        self.started.append((name, threading.current_thread().name))
        return NonRecordingSpan(SpanContext(0xABC, 0xDEF, False, TraceFlags(TraceFlags.SAMPLED)))

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError


class _ApiProvider(trace.TracerProvider):
    def __init__(self) -> None:
        self.tracer = _ApiTracer()

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        return self.tracer


def test_any_other_tracer_starts_the_span_on_the_call_path() -> None:
    provider = _ApiProvider()
    inst = HttpxGenAIInstrumentor()
    inst.instrument(tracer_provider=provider)
    seen = Seen()
    try:
        with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
            _post(srv.url, seen)
        inst.flush()
    finally:
        inst.uninstrument()
    assert provider.tracer.started == [("chat gpt-4o-mini", threading.current_thread().name)]
    assert (seen.contexts[0][0].trace_id, seen.contexts[0][0].span_id) == (0xABC, 0xDEF)


def test_context_nobody_asked_for_is_made_on_the_worker(instrument: Any) -> None:
    """No hook, no HTTP span, no propagator: the ids are drawn when the worker makes the span,
    which is still the child of the caller's span."""
    inst = instrument()
    tracer = inst.tracer_provider.get_tracer("app")
    with (ReplayServer(load_cassette(CHAT_PLAIN)) as srv, httpx2.Client() as http,
          tracer.start_as_current_span("handler") as parent):
        http.post(srv.url + "/v1/chat/completions", json=BODY).raise_for_status()
    (span,) = inst.genai_spans()
    assert span.context.is_valid and span.context.trace_flags.sampled
    assert span.context.trace_id == parent.get_span_context().trace_id
    assert span.parent.span_id == parent.get_span_context().span_id
    assert span.attributes["gen_ai.request.model"] == "gpt-4o-mini"


def test_a_post_without_model_shows_the_callers_context(instrument: Any) -> None:
    """Asked for during the call, the context of a request that is not an LLM call (no model) is
    the caller's: nothing points at a GenAI span that is never exported."""
    inst = instrument()
    tracer = inst.tracer_provider.get_tracer("app")
    seen = Seen()
    with (ReplayServer(load_cassette(CHAT_PLAIN)) as srv, httpx2.Client(event_hooks={"request": [seen]}) as http,
          tracer.start_as_current_span("handler") as parent):
        http.post(srv.url + "/v1/chat/completions", json={"messages": []})
        http.post(srv.url + "/v1/chat/completions", json=BODY)
    (no_model, _), (llm, _) = seen.contexts
    assert no_model == parent.get_span_context()
    (span,) = inst.genai_spans()
    _same_context(llm, span)
    (point,) = inst.metrics()["gen_ai.client.operation.duration"]
    assert point.count == 1


def test_threads_asking_at_once_get_one_context() -> None:
    from opentelemetry.sdk.trace import TracerProvider as SdkProvider

    from lqo.instrumentation.httpx._spans import DeferredSpan, SpanStarter

    starter = SpanStarter(SdkProvider().get_tracer(SCOPE), lazy=True)
    tracer = starter.deferrable()
    assert tracer is not None
    request = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions", json={"model": "m", "messages": []})
    for _ in range(20):
        span = DeferredSpan(starter, tracer, otel_context.get_current(), time.time_ns(), request)
        barrier = threading.Barrier(8)
        got: list[SpanContext] = []

        def ask(span: DeferredSpan = span, barrier: threading.Barrier = barrier,
                got: list[SpanContext] = got) -> None:
            barrier.wait()
            got.append(span.get_span_context())

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({(c.trace_id, c.span_id) for c in got}) == 1 and len(got) == 8
        assert got[0].is_valid and span.genai_model() == "m"
    starter.close()


def test_a_tracer_disabled_by_its_config_makes_no_span_and_shows_the_callers_context() -> None:
    """The SDK's TracerConfig switch, asked when the context is made (not on every call)."""
    from opentelemetry.sdk.trace import _disable_tracer_configurator

    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    inst = HttpxGenAIInstrumentor()
    inst.instrument(tracer_provider=tp)
    seen = Seen()
    try:
        with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
            _post(srv.url, seen)  # enabled: resolves the tracer
            inst.flush()  # its span made before the switch (a span is made after its call)
            tp._set_tracer_configurator(tracer_configurator=_disable_tracer_configurator)
            _post(srv.url, seen)  # disabled: asked in the hook
            with httpx2.Client() as http:  # disabled, nobody asks during the call
                http.post(srv.url + "/v1/chat/completions", json=BODY).raise_for_status()
        tp.force_flush()
    finally:
        inst.uninstrument()
    (span,) = _ours(exporter)
    _same_context(seen.contexts[0][0], span)
    assert not seen.contexts[1][0].is_valid  # no span was current: the caller's (none) shows through
