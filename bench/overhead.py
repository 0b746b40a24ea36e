"""Added client latency of GenAI instrumentation, side by side with its peers.

One local server (its own process) replays a recorded OpenAI chat completion (JSON), the
recorded stream (SSE, 9 events), and a long stream built from the same recording (the content
event repeated, ``--long-chunks`` events). One client process makes the calls with the real
``openai`` SDK and the same OpenTelemetry SDK setup for every variant (BatchSpanProcessor into a
discarding exporter, a MeterProvider with an in-memory reader); content capture off unless
``--capture`` (then on the span for each: lqo and openai-v2 with ``SPAN_ONLY`` under the latest
GenAI conventions, OpenLLMetry with ``TRACELOOP_TRACE_CONTENT=true``):

  none         no instrumentation (the baseline)
  lqo          lqo-instrumentation-httpx
  lqo-inline   the same with defer=False (all telemetry work on the calling thread; not by default)
  openai-v2    opentelemetry-instrumentation-openai-v2 (the OTel contrib instrumentation)
  openllmetry  opentelemetry-instrumentation-openai (Traceloop's OpenLLMetry)
  sdk-floor    no instrumentation; after each call, the OpenTelemetry SDK work that lqo's
               telemetry of it is made of, done inline: the same span (name, kind, attributes)
               and the same histogram records (values, attributes, bucket boundaries, in the
               span's context), copied once at start from what lqo emitted for one call of each
               kind. The least any instrumentation emitting this telemetry through the Python
               SDK can cost per call, whatever else it does
  lqo-toggle   lqo on and off in turns within one process, each block run both ways (the order
               alternating); its added figures are against its own "off" calls, and it times
               lqo's own part of Client.send call by call and its stream proxy's part of each
               chunk, stream by stream (``SendClock``). Instrumented once: between blocks only
               its ``send`` is put in and taken out again (no lqo code runs in "off" blocks),
               while its telemetry thread, tracer and instruments live on, as in an application
  NAME#2       a second process of a variant: ``none,none#2`` shows how far two processes of the
               same code differ (the noise floor of comparing variants across processes)

Two processes running identical code differ by up to ~20 µs per call at the median on the
2-core VM (``--variants none#2``: memory layout, hash seeds, which core each lands on), so an
added cost of that size is resolved only by ``lqo-toggle``, which compares in one process and
times lqo's own code per call.

    .venv/bin/python bench/overhead.py --calls 1000 --block 20 --variants none,none#2,lqo,lqo-toggle,openai-v2,openllmetry

Each variant lives in its own process, instrumented once, and the processes take turns in small
blocks (``--block`` plain calls, a quarter as many of each stream; the order rotates every block),
so drift on a shared machine hits every variant alike. (Switching the peers on and off in one
process is not an option: repeated instrument/uninstrument stacks OpenLLMetry's wrappers — one
call then made 44 spans; ``lqo-toggle`` swaps lqo's ``send`` in and out.) Each call is timed twice: wall time (the latency the caller sees) and CPU time of the calling
thread (``time.thread_time``: the work on the call path, without the server's and the
neighbours' noise). Each block also reads the CPU time of the whole process per call, which
counts work moved off the call path (our deferred telemetry thread, every variant's span
export). Each block ends by finishing the variant's queued work (lqo's ``flush()``; nothing for
the others), inside the block's window, so work deferred to a background thread is counted with
the calls that caused it. Results are per variant minus the baseline's: medians of wall and
thread time, the mean of process CPU (background work lands in some calls and not others, so a
median would hide it), and a second table of the mean wall time (a block's wall time per call)
and the 99th percentile of single calls, where work done in batches shows, beside the time the
calling thread spent in garbage collection per call (see ``bench/gc_calls.py``):

  per call   a non-streaming chat completion
  per stream the recorded 9-event stream, whole call
  per chunk  (long stream − short stream) / (extra events): the cost of each streamed event

Per chunk is the smallest figure and the noisiest: the SDK's own parse of a chunk costs ~100×
what an instrumentation adds to it, and a 1% swing in that between blocks moves the difference
by µs. Two more views of it: **round by round**, each round's long − short against the baseline's
in the same round, the median over rounds (drift between rounds and one round's garbage
collection do not move it); and **timed directly**, each instrumentation's own parts chunk by
chunk: a stream wrapper's time between the application's ``next()`` and the SDK's
``Stream.__next__`` (``ChunkClock``: openai-v2, OpenLLMetry), lqo's stream proxy under the SDK
(``SendClock``) and the CPU of lqo's telemetry thread (long − short stream, per extra event).

By default the server answers at once, so the client is busy ~90% of the time and any work moved
to a background thread still competes for the GIL with the caller. ``--server-delay-ms`` adds a
provider's think time before each response, the common case for LLM calls.

    .venv/bin/python bench/overhead.py --calls 3000

``--paired`` runs ``bench/overhead_paired.py`` instead (its own options): each instrumented call
paired with an uninstrumented one beside it in the same process, every variant switched on and
off call by call, the medians of the differences with confidence intervals. It resolves a few
µs where comparing processes or blocks of calls cannot (the A/A noise above):

    .venv/bin/python bench/overhead.py --paired --rounds 1000
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VARIANTS = ("none", "lqo", "openai-v2", "openllmetry")
CHAT = ROOT.parent / "shared/fixtures/recordings/openai/openai__test_chat_completion_no_content.yaml"
STREAM = ROOT.parent / "shared/fixtures/recordings/openai/openai__test_chat_completion_streaming.yaml"
ARGS = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say this is a test"}]}
STREAM_ARGS = {**ARGS, "stream": True, "stream_options": {"include_usage": True}}
LONG_MARKER = "bench-long"  # the `user` field that asks the server for the long stream
KINDS = ("plain", "stream", "long")


def long_stream(recorded: Any, events: int) -> Any:
    """The recorded stream with its second (content) event repeated: same shapes, more chunks."""
    from tests.instrumentation.replay import stream_chunks

    chunks = stream_chunks(recorded.body, recorded.content_type)
    body = chunks[0] + chunks[1] * max(1, events - len(chunks) + 1) + b"".join(chunks[2:])
    return dataclasses.replace(recorded, body=body)


def serve(long_chunks: int, delay_ms: float) -> None:
    from tests.instrumentation.replay import ReplayServer, load_cassette

    chat = load_cassette(CHAT)[0]
    stream = load_cassette(STREAM)[0]
    long = long_stream(stream, long_chunks)

    class Fixed(ReplayServer):
        def next_for(self, method: str, path: str, body: bytes) -> Any:
            if delay_ms:
                time.sleep(delay_ms / 1000)  # a provider's time to first byte
            if LONG_MARKER.encode() in body:
                return long
            return stream if b'"stream": true' in body or b'"stream":true' in body else chat

    with Fixed([chat]) as srv:
        print(srv.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


@contextlib.contextmanager
def replay_server(long_chunks: int = 200, delay_ms: float = 0.0) -> Iterator[str]:
    """``serve`` in its own process; yields its URL."""
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--long-chunks", str(long_chunks),
                               "--server-delay-ms", str(delay_ms)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()  # type: ignore[union-attr]
        if not url:
            raise SystemExit("the replay server did not start (are ../shared/fixtures/recordings present?)")
        yield url
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(10)


def discarding_providers(exported: list[int] | None = None) -> tuple[Any, Any]:
    """The SDK setup every variant gets: a TracerProvider whose BatchSpanProcessor discards what
    it exports (counting the spans in ``exported[0]`` when given), and a MeterProvider with an
    in-memory reader."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            if exported is not None:
                exported[0] += len(spans)
            return SpanExportResult.SUCCESS

    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(Discard()))
    return tp, MeterProvider(metric_readers=[InMemoryMetricReader()])


def instrument(variant: str, tp: Any, mp: Any) -> Any:
    """Instruments the process; returns what finishes the variant's deferred work (or None)."""
    kwargs = {"tracer_provider": tp, "meter_provider": mp}
    variant = variant.split("#", 1)[0]  # "none#2": a second process of a variant (an A/A check)
    if variant in ("lqo", "lqo-inline"):
        from lqo.instrumentation.httpx import HttpxGenAIInstrumentor

        inst = HttpxGenAIInstrumentor()
        inst.instrument(defer=variant == "lqo", **kwargs)
        return inst.flush
    elif variant == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(**kwargs)
    elif variant == "openllmetry":
        os.environ.setdefault("TRACELOOP_TRACE_CONTENT", "false")
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as Traceloop

        Traceloop().instrument(**kwargs)
    elif variant not in ("none", "sdk-floor"):
        raise SystemExit(f"unknown variant {variant!r}; choose from {', '.join(VARIANTS)}")
    return None


class SdkFloor:
    """Replays, per call, the SDK span and histogram records lqo emits for a call of that kind."""

    def __init__(self, calls: dict[str, Any], tp: Any, mp: Any) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from lqo.instrumentation.httpx import HttpxGenAIInstrumentor

        self.tracer = tp.get_tracer("sdk-floor")
        meter = mp.get_meter("sdk-floor")
        histograms: dict[str, Any] = {}
        self.shapes: dict[str, tuple[str, Any, dict[str, Any], list[tuple[Any, float, dict[str, Any]]]]] = {}
        for kind, call in calls.items():  # a fresh provider pair per kind: one call's telemetry each
            spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
            mem_tp = TracerProvider()
            mem_tp.add_span_processor(SimpleSpanProcessor(spans))
            inst = HttpxGenAIInstrumentor()
            inst.instrument(defer=False, tracer_provider=mem_tp, meter_provider=MeterProvider(metric_readers=[reader]))
            try:
                call()
            finally:
                inst.uninstrument()
            (span,) = [s for s in spans.get_finished_spans() if "gen_ai.operation.name" in (s.attributes or {})]
            records = []
            for rm in reader.get_metrics_data().resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        for point in metric.data.data_points:
                            if not isinstance(point, HistogramDataPoint):
                                continue
                            if metric.name not in histograms:
                                histograms[metric.name] = meter.create_histogram(
                                    metric.name, unit=metric.unit, description=metric.description,
                                    explicit_bucket_boundaries_advisory=list(point.explicit_bounds))
                            records += [(histograms[metric.name], point.sum / point.count, dict(point.attributes))] * point.count
            self.shapes[kind] = (span.name, span.kind, dict(span.attributes or {}), records)

    def emit(self, kind: str) -> None:
        from opentelemetry.trace import set_span_in_context

        name, span_kind, attributes, records = self.shapes[kind]
        span = self.tracer.start_span(name, kind=span_kind, attributes=attributes)
        ctx = set_span_in_context(span)
        for histogram, value, attrs in records:
            histogram.record(value, attrs, ctx)
        span.end()


def _timed_stream_class(base: type) -> type:
    class Timed(base):  # type: ignore[misc, valid-type]
        """A byte stream passing another's chunks through, timing each ``next`` that gave one."""

        def __init__(self, inner: Any, done: Any) -> None:
            self._inner, self._done = inner, done

        def __iter__(self) -> Any:
            spent = chunks = 0
            it = iter(self._inner)
            try:
                while True:
                    t0 = time.perf_counter_ns()
                    try:
                        chunk = next(it)
                    except StopIteration:
                        return
                    spent += time.perf_counter_ns() - t0
                    chunks += 1
                    yield chunk
            finally:
                self._done(spent, chunks)

        def close(self) -> None:
            self._inner.close()

    return Timed


def switch(inst: Any) -> Any:
    """``on(bool)``: an instrumented process's lqo ``send`` in place, or the one it replaced. The
    telemetry thread, tracer and instruments live on (re-instrumenting each block made a new
    thread and SDK instruments each time)."""
    sends = list(inst._sends)  # (class, the send lqo replaced or None if inherited, lqo's send)

    def on(enabled: bool) -> None:
        for owner, original, ours in sends:
            if enabled:
                owner.send = ours
            elif original is None:
                delattr(owner, "send")
            else:
                owner.send = original

    return on


class SendClock:
    """Times, per call, the part of ``Client.send`` that is not the client's own send.

    Two timing layers around the HTTP client's ``send``: one below lqo's (installed before the
    first ``instrument()``, so lqo wraps it) and one above, put on for each block. Per call,
    above minus below is the time spent in between: lqo's own call path, paired call by call
    and free of the server's and the client's noise (``between``; ``before`` and ``after``: its
    parts before and after the client's own send). With lqo off the same difference is the
    layers' own cost, subtracted in the report.

    Streamed responses get two such layers around the byte stream the SDK reads: one under
    lqo's stream proxy (put on by the lower ``send``), one over it (by the upper). Per stream,
    the time in the upper layer's ``next`` calls minus the lower one's, over the chunks, is the
    proxy's own time per chunk.
    """

    def __init__(self, client_class: type) -> None:
        self.cls = next(c for c in client_class.__mro__ if "send" in c.__dict__)
        raw = self.cls.__dict__["send"]
        timed = _timed_stream_class(sys.modules[self.cls.__module__.split(".")[0]].SyncByteStream)
        self._below_at = (0, 0)  # when the client's own send began and returned (ns)
        self.between: list[float] = []
        self.before: list[float] = []
        self.after: list[float] = []
        self.per_chunk: list[float] = []
        self._next: Any = None
        self._stream: list[Any] = [None, None]  # the latest stream's layers: (ns in next, chunks)

        def layer_done(state: list[Any], i: int, ns: int, chunks: int) -> None:
            # The SDK may close the stream once it has seen the last event, without a final
            # next(): then the upper layer finishes first.
            state[i] = (ns, chunks)
            if state[0] is not None and state[1] is not None and chunks and state[0][1] == state[1][1]:
                self.per_chunk.append((state[1][0] - state[0][0]) / chunks / 1e9)

        def below(client: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                response = raw(client, *args, **kwargs)
                if not response.is_closed:  # streamed: time the chunks lqo's proxy reads from here
                    state = self._stream = [None, None]
                    response.stream = timed(response.stream, lambda ns, n: layer_done(state, 0, ns, n))
                return response
            finally:
                self._below_at = (t0, time.perf_counter_ns())

        def above(client: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:  # bound as the class would bind it (a wrapt proxy needs the instance)
                response = self._next.__get__(client, type(client))(*args, **kwargs)
            finally:
                t1 = time.perf_counter_ns()
                b0, b1 = self._below_at
                self.before.append((b0 - t0) / 1e9)
                self.after.append((t1 - b1) / 1e9)
                self.between.append((t1 - t0 - (b1 - b0)) / 1e9)
            if not response.is_closed:
                state = self._stream
                response.stream = timed(response.stream, lambda ns, n: layer_done(state, 1, ns, n))
            return response

        self.cls.send = below  # type: ignore[attr-defined]
        self._above = above

    def __enter__(self) -> SendClock:
        self._next = self.cls.__dict__["send"]
        self.cls.send = self._above  # type: ignore[attr-defined]
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cls.send = self._next  # type: ignore[attr-defined]


class ChunkClock:
    """Times each streamed chunk in two layers around the instrumentation's stream wrapper.

    The lower layer is the openai SDK's own ``Stream.__next__`` (patched with a timer), which
    every peer's wrapper calls for each chunk (openai-v2's ``next(self.stream)``, OpenLLMetry's
    ``self.__wrapped__.__next__()``); the upper one is the application's ``next()`` on what
    ``create`` returned. Per stream, upper minus lower is the time spent in between: the
    wrapper's own work per chunk, timed chunk by chunk, free of the SDK's ~100× larger parse of
    each chunk (whose swings make long − short stream a noisy measure of a few µs). Without a
    wrapper (none, lqo: lqo's proxy sits under the SDK, at the bytes, and ``SendClock`` times
    it) the same difference is the layers' own cost, subtracted in the report.
    """

    def __init__(self, stream_class: type) -> None:
        raw = stream_class.__next__
        self.below_ns = 0

        def timed_next(stream: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                return raw(stream)
            finally:
                self.below_ns += time.perf_counter_ns() - t0

        stream_class.__next__ = timed_next  # type: ignore[attr-defined]

    def drain(self, stream: Any) -> tuple[int, float]:
        """Reads the stream to its end; (chunks, seconds in between)."""
        self.below_ns = above = chunks = 0
        step = stream.__next__
        while True:
            t0 = time.perf_counter_ns()
            try:
                step()
            except StopIteration:
                above += time.perf_counter_ns() - t0
                return chunks, (above - self.below_ns) / 1e9
            above += time.perf_counter_ns() - t0
            chunks += 1


def _telemetry_clock() -> Any:
    """CPU seconds of lqo's telemetry thread so far (0 while it has none)."""
    for thread in threading.enumerate():
        if thread.name == "lqo-genai-telemetry" and thread.ident is not None:
            with contextlib.suppress(OSError):  # (it may have just ended)
                return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return 0.0


def gc_clock() -> list[float]:
    """Seconds of garbage collection run on this thread from now on, in ``[0]`` (CPython collects on
    whichever thread's allocation crosses the threshold: objects an instrumentation keeps past
    the call make the application's thread collect more often, and each collection longer)."""
    calling_thread = threading.get_ident()
    gc_s = [0.0, 0.0]  # total, start of the running collection

    def clock(phase: str, info: Any) -> None:
        if threading.get_ident() == calling_thread:
            if phase == "start":
                gc_s[1] = time.perf_counter()
            else:
                gc_s[0] += time.perf_counter() - gc_s[1]

    gc.callbacks.append(clock)
    return gc_s


def worker(variant: str, url: str, block: int) -> None:
    """One variant, instrumented once. Runs a block per line on stdin; "done" prints the samples."""
    import openai

    exported = [0]
    tp, mp = discarding_providers(exported)
    base_variant = variant.split("#", 1)[0]
    toggle = base_variant == "lqo-toggle"
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    clock = SendClock(type(client._client)) if toggle else None  # (its lower layer before lqo's send)
    if toggle:  # on and off in turns within this one process: no process-to-process noise
        from lqo.instrumentation.httpx import HttpxGenAIInstrumentor

        inst = HttpxGenAIInstrumentor()
        inst.instrument(defer=True, tracer_provider=tp, meter_provider=mp)
        settle = inst.flush
        lqo_on = switch(inst)
        lqo_on(False)
    else:
        settle = instrument(variant, tp, mp) or (lambda: None)

    def plain() -> int:
        client.chat.completions.create(**ARGS)
        return 1

    chunk_clock = ChunkClock(openai.Stream)
    wrap: list[float] = []  # per stream of the running block: seconds in the wrapper between the layers

    def read(stream: Any) -> int:
        chunks, between = chunk_clock.drain(stream)
        wrap.append(between)
        return chunks

    def stream() -> int:
        return read(client.chat.completions.create(**STREAM_ARGS))

    def long() -> int:
        return read(client.chat.completions.create(**STREAM_ARGS, user=LONG_MARKER))

    kinds = {"plain": plain, "stream": stream, "long": long}
    if base_variant == "sdk-floor":  # the calls, each followed by lqo's SDK telemetry of it
        floor = SdkFloor({"plain": plain, "stream": stream}, tp, mp)
        kinds = {kind: (lambda fn=fn, shape="plain" if kind == "plain" else "stream": (fn(), floor.emit(shape))[0])
                 for kind, fn in kinds.items()}

    def new_samples() -> dict[str, dict[str, list[float]]]:
        return {k: {"wall": [], "cpu": [], "proc": [], "block": [], "gc": [], "between": [], "per_chunk": [],
                    "wrap": [], "telemetry": []} for k in KINDS}

    gc_s = gc_clock()

    samples, off_samples = new_samples(), new_samples()
    chunks: dict[str, int] = {}
    calls = 0

    def run_block(dest: dict[str, dict[str, list[float]]], keep: bool, settle: Any) -> None:
        nonlocal calls
        for kind, fn in kinds.items():
            w, c = dest[kind]["wall"], dest[kind]["cpu"]
            n = block if kind == "plain" else max(1, block // 4)
            p0, b0, g0, q0 = time.process_time(), time.perf_counter(), gc_s[0], _telemetry_clock()
            wrap.clear()
            if clock is not None:
                clock.between = dest[kind]["between"] if keep else []
                clock.per_chunk = dest[kind]["per_chunk"] if keep else []
            for _ in range(n):
                t0, c0 = time.perf_counter(), time.thread_time()
                chunks[kind] = fn()
                c1, t1 = time.thread_time(), time.perf_counter()
                calls += 1
                if keep:
                    w.append(t1 - t0)
                    c.append(c1 - c0)
            # Work these calls left queued (lqo's telemetry thread) is finished inside the block's
            # window: counted with the calls that caused it, not run later while the process
            # waits for its next turn.
            settle()
            if keep:  # every thread of the process (span export, deferred telemetry), per call
                dest[kind]["proc"].append((time.process_time() - p0) / n)
                dest[kind]["block"].append((time.perf_counter() - b0) / n)
                dest[kind]["gc"].append((gc_s[0] - g0) / n)
                dest[kind]["telemetry"].append((_telemetry_clock() - q0) / n)  # lqo's thread, per call
                dest[kind]["wrap"] += wrap  # per stream

    for turn, line in enumerate(sys.stdin):
        if line.strip() == "done":
            break
        keep = line.strip() != "warmup"
        if not toggle:
            run_block(samples, keep, settle)
        else:  # half the blocks on first, half off first
            for on in (True, False) if turn % 2 == 0 else (False, True):
                if on:
                    lqo_on(True)
                    with clock:  # type: ignore[union-attr]
                        run_block(samples, keep, settle)
                    lqo_on(False)
                else:
                    with clock:  # type: ignore[union-attr]
                        run_block(off_samples, keep, lambda: None)
        print("ok", flush=True)
    tp.force_flush()
    print(json.dumps({"samples": samples, "off": off_samples if toggle else None, "chunks": chunks, "calls": calls,
                      "spans": exported[0]}), flush=True)


# Content on the span, for every variant (``--capture``). openai-v2 takes the content modes only
# under the latest GenAI conventions (otherwise it stays on v1.30 and captures as log events).
CAPTURE_ENV = {"OTEL_SEMCONV_STABILITY_OPT_IN": "gen_ai_latest_experimental",
               "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
               "TRACELOOP_TRACE_CONTENT": "true"}


def close_workers(procs: Any) -> None:
    """Closes each worker process's stdin (its signal to end) and waits for it; kills a stuck one."""
    for p in procs:
        p.stdin.close()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def run(url: str, variants: list[str], calls: int, block: int, capture: bool = False) -> dict[str, Any]:
    """Interleaves the variants' processes block by block; returns medians (µs) and counts."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if capture:
        env.update(CAPTURE_ENV)
    procs = {v: subprocess.Popen([sys.executable, __file__, "--worker", v, "--url", url, "--block", str(block)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for v in variants}
    blocks = max(1, calls // block)
    warmup = 2
    try:
        for b in range(warmup + blocks):
            order = variants[b % len(variants):] + variants[: b % len(variants)]
            for v in order:
                p = procs[v]
                p.stdin.write("warmup\n" if b < warmup else "go\n")  # type: ignore[union-attr]
                p.stdin.flush()  # type: ignore[union-attr]
                if p.stdout.readline().strip() != "ok":  # type: ignore[union-attr]
                    raise SystemExit(f"variant {v} failed (exit {p.wait()})")
            if b >= warmup and (b - warmup + 1) % max(1, blocks // 10) == 0:
                print(f"  block {b - warmup + 1}/{blocks}", file=sys.stderr, flush=True)
        out = {}
        for v, p in procs.items():
            p.stdin.write("done\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
            out[v] = json.loads(p.stdout.readline())  # type: ignore[union-attr]
    finally:
        close_workers(procs.values())
    for v in variants:  # a toggled variant's calls with the instrumentation off: its own baseline
        if out[v].get("off"):
            out[f"{v}:off"] = {**out[v], "samples": out[v]["off"]}
    variants = list(out)
    first = out[variants[0]]
    return {
        "capture": capture,
        "median_us": {f"{v}/{k}/{m}": statistics.median(out[v]["samples"][k][m]) * 1e6
                      for v in variants for k in KINDS for m in ("wall", "cpu", "proc")},
        "mean_us": {f"{v}/{k}/{m}": statistics.fmean(out[v]["samples"][k][m]) * 1e6
                    for v in variants for k in KINDS for m in ("wall", "cpu", "proc", "block", "gc")},
        "p99_us": {f"{v}/{k}/wall": _quantile(out[v]["samples"][k]["wall"], 0.99) * 1e6
                   for v in variants for k in KINDS},
        "between_us": {f"{v}/{k}/{q}": _quantile(out[v]["samples"][k]["between"], q) * 1e6
                       for v in variants for k in KINDS if out[v]["samples"][k].get("between")
                       for q in (0.5, 0.9)},
        "per_chunk_us": {f"{v}/{k}/{q}": _quantile(out[v]["samples"][k]["per_chunk"], q) * 1e6
                         for v in variants for k in KINDS if out[v]["samples"][k].get("per_chunk")
                         for q in (0.5, 0.9)},
        "baseline": {v: f"{v}:off" if f"{v}:off" in out else "none" for v in variants},
        "chunk_blocks_us": {v: _chunk_blocks(out, v, f"{v}:off" if f"{v}:off" in out else "none")
                            for v in variants if v != "none" and not v.endswith(":off")},
        "direct_us": {v: _direct(out[v]) for v in variants},
        "chunks": first["chunks"],
        "samples": {k: len(first["samples"][k]["wall"]) for k in KINDS},
        "spans": {v: out[v]["spans"] for v in variants if not v.endswith(":off")},
        "calls": {v: out[v]["calls"] for v in variants if not v.endswith(":off")},  # a toggled one: on and off
    }


def _chunk_blocks(out: dict[str, Any], v: str, b: str) -> dict[str, list[float]]:
    """Per chunk, round by round: in each round (one block of every variant, back to back; for a
    toggled variant, its on and off halves of one block), the variant's added cost per long
    stream minus per short stream, over the extra events. Paired in time, so drift between
    rounds cancels, and a median over rounds is not moved by the round a generation-2
    collection or a neighbour's burst lands in (the mean over all blocks, in the main table,
    is)."""
    first = out[v]["chunks"]
    extra = max(1, first["long"] - first["stream"])
    got: dict[str, list[float]] = {}
    for m in ("proc", "block"):
        va, ba = out[v]["samples"], out[b]["samples"]
        got[m] = [((vl - bl) - (vs - bs)) / extra * 1e6
                  for vl, bl, vs, bs in zip(va["long"][m], ba["long"][m], va["stream"][m], ba["stream"][m], strict=True)]
    return got


def _direct(got: dict[str, Any]) -> dict[str, float]:
    """An instrumentation's own work, timed directly (µs): its stream wrapper per chunk
    (``ChunkClock``: long − short stream, medians per stream), lqo's telemetry thread per chunk
    (long − short, median over blocks) and per plain call (mean over blocks)."""
    samples, chunks = got["samples"], got["chunks"]
    extra = max(1, chunks["long"] - chunks["stream"])
    tel = [(lo - sh) / extra for lo, sh in zip(samples["long"]["telemetry"], samples["stream"]["telemetry"], strict=True)]
    return {"wrap_chunk": (statistics.median(samples["long"]["wrap"]) - statistics.median(samples["stream"]["wrap"]))
            / extra * 1e6,
            "telemetry_chunk": statistics.median(tel) * 1e6,
            "telemetry_call": statistics.fmean(samples["plain"]["telemetry"]) * 1e6}


def _quantile(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(res: dict[str, Any], variants: list[str]) -> str:
    # Wall and thread: medians per call. Process: the mean per call over all blocks, because
    # work done in the background (span export, lqo's telemetry thread) lands in some blocks
    # and not others, and a median of such lumps would hide it.
    med = {k: res["mean_us"][k] if k.endswith("/proc") else v for k, v in res["median_us"].items()}
    chunks = res["chunks"]
    mean, p99 = res["mean_us"], res["p99_us"]
    extra = chunks["long"] - chunks["stream"]
    lines = [
        f"samples per variant: {res['samples']}; events per stream: short {chunks['stream']}, long {chunks['long']}; "
        f"content capture {'on (the span)' if res.get('capture') else 'off'}",
        "",
        "baseline (none), median per call: "
        + ", ".join(f"{k} {med[f'none/{k}/wall']:.0f} µs wall / {med[f'none/{k}/cpu']:.0f} µs thread" for k in KINDS),
        "",
        "added µs: wall = the caller's latency (median); thread = CPU of the calling thread (median);",
        "process = CPU of all the process's threads per call (mean; background export and telemetry too)",
        "",
        f"{'':14s} {'per call':>26s} {'per stream':>26s} {'per chunk':>26s}",
        f"{'':14s}" + f" {'wall':>8s} {'thread':>8s} {'process':>8s}" * 3,
    ]
    metrics = ("wall", "cpu", "proc")
    base = res["baseline"]
    rows = [v for v in variants if v != "none"]
    for v in rows:
        b = base[v]
        row = [v.ljust(14)]
        for k in ("plain", "stream"):
            row += [f"{med[f'{v}/{k}/{m}'] - med[f'{b}/{k}/{m}']:8.1f}" for m in metrics]
        for m in metrics:
            added_long = med[f"{v}/long/{m}"] - med[f"{b}/long/{m}"]
            added_short = med[f"{v}/stream/{m}"] - med[f"{b}/stream/{m}"]
            row.append(f"{(added_long - added_short) / max(1, extra):8.2f}")
        lines.append(" ".join(row))
    lines += ["", "the caller's latency beyond the median, added µs: mean = the mean of single calls (what the",
              "telemetry thread's batches cost the calls they land among, as in an application); block = a",
              "block's wall time per call, the queued telemetry finished inside it (as if the application",
              "had no idle time for it); p99 = the 99th percentile of single calls; gc = garbage collection",
              "on the calling thread per call (mean)", "",
              f"{'':14s} {'per call':>35s} {'per stream':>35s}",
              f"{'':14s}" + f" {'mean':>8s} {'block':>8s} {'p99':>8s} {'gc':>8s}" * 2]
    cols = ((mean, "wall"), (mean, "block"), (p99, "wall"), (mean, "gc"))
    for v in rows:
        b = base[v]
        lines.append(" ".join([v.ljust(14)] + [f"{d[f'{v}/{k}/{m}'] - d[f'{b}/{k}/{m}']:8.1f}"
                                               for k in ("plain", "stream") for d, m in cols]))
    paired = res.get("chunk_blocks_us", {})
    if paired:
        lines += ["", "per chunk, round by round (each round's long − short stream against the baseline in that",
                  "round, added µs): median over rounds [quartiles]; the table above takes the mean over all",
                  "rounds, which one round's generation-2 collection or burst of neighbour load can move", "",
                  f"{'':14s} {'process':>30s} {'wall (block mean)':>30s}"]
        for v in rows:
            cells = []
            for m in ("proc", "block"):
                xs = paired[v][m]
                cells.append(f"{statistics.median(xs):8.2f} [{_quantile(xs, 0.25):7.2f}, {_quantile(xs, 0.75):7.2f}]")
            lines.append(" ".join([v.ljust(14), *(f"{c:>30s}" for c in cells)]))
        ours = [v for v in rows if v.split("#")[0] in ("lqo", "lqo-toggle")]
        theirs = [v for v in rows if v.split("#")[0] in ("openai-v2", "openllmetry")]
        for v in ours:
            for peer in theirs:
                ratio = statistics.median(paired[v]["proc"]) / statistics.median(paired[peer]["proc"])
                lines.append(f"  {v} ÷ {peer}, process per chunk (medians): {ratio:.2f}")
    direct = res.get("direct_us", {})
    if direct:
        per_chunk = res.get("per_chunk_us", {})
        lines += ["", "per chunk, each part timed directly (µs; against the baseline's layers): the stream wrapper",
                  "between the application's next() and the SDK's Stream.__next__ (ChunkClock), lqo's stream",
                  "proxy under the SDK (SendClock) and its telemetry thread's CPU; what none of them counts is",
                  "the cost of one thread's work to the other (cache, GIL hand-offs, collections)", "",
                  f"{'':14s} {'wrapper':>9s} {'proxy':>9s} {'telemetry':>10s} {'total':>9s}   telemetry per call"]
        totals = {}
        for v in rows:
            b = base[v]
            wrapper = direct[v]["wrap_chunk"] - direct[b]["wrap_chunk"]
            proxy = (per_chunk[f"{v}/long/0.5"] - per_chunk[f"{b}/long/0.5"]) if f"{v}/long/0.5" in per_chunk else 0.0
            tel = direct[v]["telemetry_chunk"] - direct[b]["telemetry_chunk"]
            totals[v] = wrapper + proxy + tel
            lines.append(f"{v:14s} {wrapper:9.2f} {proxy:9.2f} {tel:10.2f} {totals[v]:9.2f}   "
                         f"{direct[v]['telemetry_call'] - direct[b]['telemetry_call']:8.1f}")
        for v in [r for r in rows if r.split("#")[0] in ("lqo", "lqo-toggle")]:
            for peer in [r for r in rows if r.split("#")[0] in ("openai-v2", "openllmetry")]:
                if totals[peer] > 0:
                    lines.append(f"  {v} ÷ {peer}, per chunk timed directly: {totals[v] / totals[peer]:.2f}")
    own = [v for v in rows if base[v] != "none"]
    if own:
        lines += ["", f"{', '.join(own)}: against the same process's calls with the instrumentation off"]
    between = res.get("between_us", {})
    for v in own:
        if f"{v}/plain/0.5" not in between:
            continue
        b = base[v]
        lines += ["", f"{v}: the instrumentation's own time in Client.send per call, timed between a layer",
                  "above it and one below it, call by call (minus the same with it off: the layers' cost)", ""]
        for k, label in (("plain", "per call"), ("stream", "per stream (to the response headers)")):
            on = [between[f"{v}/{k}/{q}"] for q in (0.5, 0.9)]
            off = [between[f"{b}/{k}/{q}"] for q in (0.5, 0.9)]
            lines.append(f"  {label}: median {on[0] - off[0]:.1f} µs, p90 {on[1] - off[1]:.1f} µs "
                         f"(layers alone: {off[0]:.1f} / {off[1]:.1f})")
        per_chunk = res.get("per_chunk_us", {})
        if f"{v}/long/0.5" in per_chunk and f"{b}/long/0.5" in per_chunk:
            on = [per_chunk[f"{v}/long/{q}"] for q in (0.5, 0.9)]
            off = [per_chunk[f"{b}/long/{q}"] for q in (0.5, 0.9)]
            lines.append(f"  per chunk (the stream proxy, {res['chunks']['long']}-event streams): median "
                         f"{on[0] - off[0]:.2f} µs, p90 {on[1] - off[1]:.2f} µs (layers alone: {off[0]:.2f} / {off[1]:.2f})")
    floor, peers = "sdk-floor", [v for v in rows if v.split("#")[0] in ("openai-v2", "openllmetry")]
    if floor in rows and peers:
        def added(v: str, d: dict[str, float], m: str) -> float:
            return d[f"{v}/plain/{m}"] - d[f"{base[v]}/plain/{m}"]

        lines += ["", "the SDK's own span and histogram records (sdk-floor) against half of each peer, per call, added µs:"]
        for v in [floor, *[r for r in rows if r.split("#")[0] in ("lqo", "lqo-toggle")], *peers]:
            lines.append(f"  {v:14s} process (mean) {added(v, med, 'proc'):7.1f}   wall (mean) {added(v, mean, 'block'):7.1f}"
                         + (f"   half: {added(v, med, 'proc') / 2:7.1f} / {added(v, mean, 'block') / 2:7.1f}" if v in peers else ""))
    lines += ["", f"calls made: {res['calls']}; spans exported: {res['spans']}"]
    return "\n".join(lines)


def main() -> None:
    if "--paired" in sys.argv[1:]:  # each instrumented call paired with a plain one: bench/overhead_paired.py
        sys.argv.remove("--paired")
        import overhead_paired

        return overhead_paired.main()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="non-streaming calls per variant (streams: a quarter)")
    parser.add_argument("--block", type=int, default=40, help="calls per variant before switching")
    parser.add_argument("--long-chunks", type=int, default=200, help="events in the long stream")
    parser.add_argument("--server-delay-ms", type=float, default=0.0,
                        help="server think time before each response (real providers: 100s of ms)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--capture", action="store_true",
                        help="message content on the span for every variant (default: off, as each defaults)")
    parser.add_argument("--json", action="store_true", help="print the raw medians as JSON too")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.long_chunks, args.server_delay_ms)
    if args.worker:
        return worker(args.worker, args.url, args.block)
    variants = args.variants.split(",")
    if "none" not in variants:
        variants.insert(0, "none")
    with replay_server(args.long_chunks, args.server_delay_ms) as url:
        print(f"server {url} (delay {args.server_delay_ms} ms); {len(variants)} variants interleaved in blocks "
              f"of {args.block}", file=sys.stderr)
        res = run(url, variants, args.calls, args.block, args.capture)
    print(report(res, variants))
    if args.json:
        print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
