"""Telemetry off the call path: spans are decoded and ended on the worker thread, and nothing is
lost — SDK flush/shutdown wait for it, back-pressure bounds it, a forked child gets its own —
plus the worker's batches, the inline mode, the model sniff and the singleton instrumentor."""

from __future__ import annotations

import gc
import json
import os
import threading
import time
import weakref
from typing import Any

import httpx2
import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lqo.instrumentation.httpx import HttpxGenAIInstrumentor, _worker

from .forking import in_forked_child
from .replay import RECORDINGS, ReplayServer, load_cassette

CHAT_PLAIN = RECORDINGS / "openai" / "openai__test_chat_completion_no_content.yaml"
ARGS = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say this is a test"}]}
SCOPE = "lqo.instrumentation.httpx"


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)


def _ours(exporter: InMemorySpanExporter) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.instrumentation_scope.name == SCOPE]


def test_inline_mode_ends_the_span_before_the_call_returns(instrument: Any) -> None:
    inst = instrument(defer=False)
    with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
        _client(srv.url).chat.completions.create(**ARGS)
        spans = _ours(inst.exporter)  # no flush
    assert len(spans) == 1 and spans[0].attributes["gen_ai.usage.output_tokens"] > 0


def test_inline_mode_from_the_environment(instrument: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(_worker.DEFER_ENV, "false")
    inst = instrument()
    with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
        _client(srv.url).chat.completions.create(**ARGS)
        assert len(_ours(inst.exporter)) == 1


def test_deferred_span_keeps_call_timing(instrument: Any) -> None:
    inst = instrument()
    with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
        _client(srv.url).chat.completions.create(**ARGS)
    (span,) = inst.genai_spans()
    assert span.start_time < span.end_time
    (point,) = inst.metrics()["gen_ai.client.operation.duration"]
    # The span's end is the call's end, not the time the worker got to it.
    assert abs((span.end_time - span.start_time) / 1e9 - point.sum) < 0.005


def test_finished_call_lets_its_response_go_before_the_worker_runs(instrument: Any) -> None:
    """Status, headers and body are taken on the call path; the response object itself is not
    kept waiting for the worker's batch (it would outlive the call, and the application's
    garbage collections would find it there)."""
    inst = instrument()
    inst.instrumentor._tel.worker.interval = 60.0  # the batch waits until flushed
    responses: list[weakref.ref[Any]] = []
    http = httpx2.Client(event_hooks={"response": [lambda r: responses.append(weakref.ref(r))]})
    with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
        openai.OpenAI(base_url=srv.url + "/v1", api_key="k", max_retries=0, http_client=http).chat.completions.create(**ARGS)
    gc.collect()
    assert len(responses) == 1 and responses[0]() is None
    assert [s for s in inst.exporter.get_finished_spans() if s.instrumentation_scope.name == SCOPE] == []
    (span,) = inst.genai_spans()  # the body still reached the worker
    recorded = json.loads(load_cassette(CHAT_PLAIN)[0].body)
    assert span.attributes["gen_ai.usage.output_tokens"] == recorded["usage"]["completion_tokens"]
    assert span.attributes["gen_ai.response.id"] == recorded["id"]


def test_provider_shutdown_drains_pending_calls() -> None:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    inst = HttpxGenAIInstrumentor()
    inst.instrument(tracer_provider=tp)
    try:
        with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
            client = _client(srv.url)
            for _ in range(20):
                client.chat.completions.create(**ARGS)
        tp.shutdown()  # no force_flush, no instrumentor flush: shutdown alone must get them all
    finally:
        inst.uninstrument()
    assert len(_ours(exporter)) == 20


def test_back_pressure_loses_nothing(instrument: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_worker, "MAX_PENDING", 2)
    inst = instrument()
    with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
        client = _client(srv.url)
        for _ in range(40):
            client.chat.completions.create(**ARGS)
    assert len(inst.genai_spans()) == 40


def test_nested_model_key_is_corrected(instrument: Any) -> None:
    """The sniff takes the first "model": "…" pair; the worker fixes name and attribute."""
    inst = instrument()
    body = {"metadata": {"model": "not-this-one"}, "messages": [{"role": "user", "content": "hi"}],
            "model": "gpt-4o-mini"}
    with ReplayServer(load_cassette(CHAT_PLAIN)) as srv, httpx2.Client() as http:
        http.post(srv.url + "/v1/chat/completions", content=json.dumps(body),
                  headers={"content-type": "application/json"})
    (span,) = inst.genai_spans()
    assert span.name == "chat gpt-4o-mini"
    assert span.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    (point,) = inst.metrics()["gen_ai.client.operation.duration"]
    assert point.attributes["gen_ai.request.model"] == "gpt-4o-mini"


def _only_span_for(inst: Any, body: bytes) -> Any:
    """POSTs a raw JSON body to the chat path; the one GenAI span it made."""
    with ReplayServer(load_cassette(CHAT_PLAIN)) as srv, httpx2.Client() as http:
        http.post(srv.url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    (span,) = inst.genai_spans()
    return span


def test_escaped_model_name_is_decoded(instrument: Any) -> None:
    inst = instrument()
    span = _only_span_for(inst, b'{"model": "org\\/model\\u00e9", "messages": []}')
    assert span.attributes["gen_ai.request.model"] == "org/modelé"


def test_percent_encoded_path_is_routed_and_decoded(instrument: Any) -> None:
    """Routes are cached by the path as sent; the route and the Azure deployment (the model)
    still come from the decoded path, on the first request and from the cache."""
    inst = instrument()
    with ReplayServer(load_cassette(CHAT_PLAIN)) as srv, httpx2.Client() as http:
        for _ in range(2):
            http.post(srv.url + "/openai/deployments/my%2Dmodel/chat%2Fcompletions?api-version=1", json={"messages": []})
    spans = inst.genai_spans()
    assert [s.name for s in spans] == ["chat my-model"] * 2
    assert all(s.attributes["gen_ai.operation.name"] == "chat" for s in spans)


def test_post_without_model_is_not_an_llm_call(instrument: Any) -> None:
    inst = instrument()
    with ReplayServer(load_cassette(CHAT_PLAIN)) as srv, httpx2.Client() as http:
        http.post(srv.url + "/v1/chat/completions", json={"messages": []})
        http.post(srv.url + "/v1/chat/completions", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert inst.genai_spans() == []


def test_second_construction_still_uninstruments() -> None:
    """BaseInstrumentor is a singleton whose __init__ runs again on each construction."""
    original = httpx2.Client.send
    HttpxGenAIInstrumentor().instrument()
    assert httpx2.Client.send is not original
    HttpxGenAIInstrumentor().uninstrument()
    assert httpx2.Client.send is original


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_child_gets_its_own_worker(instrument: Any) -> None:
    inst = instrument()
    with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
        client = _client(srv.url)
        client.chat.completions.create(**ARGS)  # the parent's worker thread is running
        assert len(inst.genai_spans()) == 1

        def child() -> str:  # a call, a flush, how many of our spans it sees
            inst.exporter.clear()
            client.chat.completions.create(**ARGS)
            return str(len(inst.genai_spans()))

        seen = in_forked_child(child)
    assert seen == "1"


def _worker_for_test(interval: float) -> tuple[_worker.Worker, list[BaseException]]:
    errors: list[BaseException] = []
    return _worker.Worker(lambda where, exc: errors.append(exc), interval=interval), errors


def test_worker_gathers_a_batch_and_drain_runs_it_at_once() -> None:
    """Calls wait for the thread's next look (one batch for many calls); drain() does not wait for it."""
    w, errors = _worker_for_test(interval=60.0)
    ran: list[tuple[int, str]] = []
    for i in range(50):
        w.submit(lambda i=i: ran.append((i, threading.current_thread().name)))
    time.sleep(0.2)
    assert ran == []  # still gathering
    started = time.monotonic()
    assert w.drain(timeout=5.0)
    assert time.monotonic() - started < 5.0
    assert [i for i, _ in ran] == list(range(50))  # in submission order
    assert {name for _, name in ran} == {"lqo-genai-telemetry"}
    w.stop()
    assert errors == []


def test_worker_wakes_again_for_each_later_batch() -> None:
    w, _ = _worker_for_test(interval=0.005)
    for _ in range(20):  # no drain: each batch must wake the thread by itself
        done = threading.Event()
        w.submit(done.set)
        assert done.wait(5.0)
    w.stop()


def test_worker_looks_for_calls_while_they_keep_coming_and_sleeps_when_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """While calls keep coming the call path only queues: it sets no Event (a futex wake-up and a
    GIL hand-off on the application's thread). After IDLE_POLLS empty looks the thread sleeps,
    stops looking, and the next call wakes it."""
    monkeypatch.setattr(_worker, "IDLE_POLLS", 5)
    w, errors = _worker_for_test(interval=0.05)
    sets: list[int] = []
    looks: list[int] = []
    wake_set, hurry_wait = w._wake.set, w._hurry.wait
    w._wake.set = lambda: (sets.append(1), wake_set())[1]  # type: ignore[method-assign]
    w._hurry.wait = lambda timeout=None: (looks.append(1), hurry_wait(timeout))[1]  # type: ignore[method-assign]
    ran: list[int] = []
    try:
        for i in range(40):  # ~200 ms, calls 5 ms apart: several batches, never 5 empty looks in a row
            w.submit(ran.append, i)
            time.sleep(0.005)
        deadline = time.monotonic() + 5.0
        while len(ran) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ran == list(range(40))  # run by the thread's own looks, no drain
        assert sets == []  # the call path woke nothing
        while not w._asleep and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w._asleep
        seen = len(looks)
        time.sleep(0.3)  # six intervals
        assert len(looks) == seen  # asleep: not looking
        done = threading.Event()
        w.submit(done.set)
        assert done.wait(5.0)
        assert sets == [1]  # the first call after the idle second woke it
    finally:
        w.stop()
    assert errors == []


def test_worker_loses_nothing_under_concurrent_submitters() -> None:
    w, errors = _worker_for_test(interval=0.001)
    counts = [0] * 4

    def inc(k: int) -> None:
        counts[k] += 1  # only the worker thread writes

    def submitter(k: int) -> None:
        for _ in range(5000):
            w.submit(inc, k)

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert w.drain(timeout=10.0)
    assert counts == [5000] * 4
    w.stop()
    w.submit(inc, 0)  # after stop: inline
    assert counts[0] == 5001 and errors == []


def test_worker_stop_runs_what_is_pending_and_reports_errors() -> None:
    w, errors = _worker_for_test(interval=60.0)
    ran: list[int] = []
    w.submit(ran.append, 1)
    w.submit(lambda: 1 / 0)
    w.submit(ran.append, 2)
    w.stop(timeout=5.0)
    assert ran == [1, 2]
    assert [type(e) for e in errors] == [ZeroDivisionError]


@pytest.mark.parametrize("defer", [True, False])
def test_metric_exemplars_point_at_the_genai_span(instrument: Any, defer: bool) -> None:
    """Metrics are recorded in the call's span context on whichever thread records them, so
    the SDK's trace-based exemplars link each histogram to its GenAI span (not to the caller's
    span, and not to nothing on the worker thread)."""
    inst = instrument(defer=defer)
    tracer = inst.tracer_provider.get_tracer("app")
    with ReplayServer(load_cassette(CHAT_PLAIN)) as srv, tracer.start_as_current_span("handler") as outer:
        _client(srv.url).chat.completions.create(**ARGS)
    (span,) = inst.genai_spans()
    assert span.parent.span_id == outer.get_span_context().span_id
    # One collection only: exemplars belong to the collection interval they were offered in.
    data = inst.reader.get_metrics_data()
    points = [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              if m.name in ("gen_ai.client.operation.duration", "gen_ai.client.token.usage")
              for p in m.data.data_points]
    assert len(points) == 3
    for point in points:
        (exemplar,) = point.exemplars
        assert exemplar.span_id == span.context.span_id
        assert exemplar.trace_id == span.context.trace_id


def test_worker_gives_the_gil_away_between_slices_of_a_long_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch longer than a slice sleeps briefly after each slice, so an application thread
    waiting for the GIL is held up by one slice, not by the whole batch; short batches never do."""
    sleeps: list[float] = []
    monkeypatch.setattr(_worker, "sleep", lambda s: (sleeps.append(s), time.sleep(s)))
    worker, _ = _worker_for_test(interval=_worker.BATCH_INTERVAL_S)
    ran: list[int] = []

    def busy(i: int) -> None:
        end = time.perf_counter() + 0.0005
        while time.perf_counter() < end:
            pass
        ran.append(i)

    try:
        for i in range(3):
            worker.submit(ran.append, i)
        assert worker.drain(5.0)
        assert sleeps == []  # a short batch runs in one go
        for i in range(40):  # ~20 ms of work: ~20 slices
            worker.submit(busy, i)
        assert worker.drain(5.0)
    finally:
        worker.stop()
    assert ran == [0, 1, 2, *range(40)]
    assert len(sleeps) >= 8 and set(sleeps) == {_worker.YIELD_S}


def test_model_as_a_value_before_the_key(instrument: Any) -> None:
    """``"model"`` can also be a value (Gemini's role name) ahead of the key: the sniff goes on."""
    inst = instrument()
    span = _only_span_for(inst, b'{"contents": [{"role": "model", "parts": []}], "model" : "gpt-4o-mini", "messages": []}')
    assert span.name == "chat gpt-4o-mini"


def test_suppressed_instrumentation_makes_no_span(instrument: Any) -> None:
    from opentelemetry.instrumentation.utils import suppress_instrumentation

    inst = instrument()
    with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
        client = _client(srv.url)
        with suppress_instrumentation():
            client.chat.completions.create(**ARGS)
        client.chat.completions.create(**ARGS)
    assert len(inst.genai_spans()) == 1


def test_uninstrument_under_a_later_wrapper_leaves_ours_inert() -> None:
    """Another instrumentation wrapped Client.send after us: uninstrument() cannot take our
    function out from under it, so it stays in place and passes every call straight through."""
    import wrapt
    from opentelemetry.instrumentation.utils import unwrap

    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(exporter))
    original = httpx2.Client.__dict__["send"]
    seen: list[str] = []

    def theirs(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        seen.append(args[0].url.path)
        return wrapped(*args, **kwargs)

    inst = HttpxGenAIInstrumentor()
    inst.instrument(tracer_provider=tp)
    wrapt.wrap_function_wrapper(httpx2, "Client.send", theirs)
    try:
        inst.uninstrument()
        with ReplayServer(load_cassette(CHAT_PLAIN)) as srv:
            _client(srv.url).chat.completions.create(**ARGS)
        tp.force_flush()
        assert seen == ["/v1/chat/completions"]  # theirs still runs
        assert _ours(exporter) == []  # ours passes through
    finally:
        unwrap(httpx2.Client, "send")
        httpx2.Client.send = original
    assert httpx2.Client.__dict__["send"] is original
