"""The generated ``send``: the replaced method's own parameters, every argument forwarded as given."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import httpx2
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lqo.instrumentation.httpx import HttpxGenAIInstrumentor
from lqo.instrumentation.httpx._send import _signature, make_send
from lqo.instrumentation.httpx._telemetry import Telemetry

GET = httpx2.Request("GET", "http://127.0.0.1:1/v1/models")  # not an LLM call: passed straight through


def test_httpx_send_keeps_its_signature() -> None:
    original = httpx2.Client.send
    HttpxGenAIInstrumentor().instrument()
    try:
        patched = httpx2.Client.send
        assert patched is not original
        assert inspect.signature(patched, follow_wrapped=False) == inspect.signature(original)
        assert patched.__wrapped__ is original and patched.__name__ == "send"
        ours = inspect.signature(httpx2.AsyncClient.send, follow_wrapped=False)
        assert inspect.iscoroutinefunction(httpx2.AsyncClient.send)
        assert list(ours.parameters) == ["self", "request", "stream", "auth", "follow_redirects"]
    finally:
        HttpxGenAIInstrumentor().uninstrument()
    assert httpx2.Client.send is original


class Odd:
    """A client whose send has every kind of parameter, recording what it was given."""

    def send(self, request: Any, /, a: Any, b: Any = 2, *rest: Any, c: Any, d: Any = 4, **kw: Any) -> Any:
        return request, a, b, rest, c, d, kw


@pytest.mark.parametrize(("args", "kwargs"), [
    ((GET, 1), {"c": 3}),
    ((GET, 1, 5, 6, 7), {"c": 3, "d": 8, "x": 9}),
    ((GET,), {"a": 1, "b": 0, "c": None}),
])
def test_every_argument_is_forwarded_as_given(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    tel = Telemetry(defer=False)
    send = make_send(tel, Odd.send, httpx2.SyncByteStream, False)
    assert inspect.signature(send, follow_wrapped=False) == inspect.signature(Odd.send)
    assert send(Odd(), *args, **kwargs) == Odd().send(*args, **kwargs)
    with pytest.raises(TypeError):
        send(Odd(), GET, 1)  # c is required: the same error as the original's


def test_async_send_is_awaited_through() -> None:
    class AsyncOdd:
        async def send(self, request: Any, *, stream: bool = False) -> Any:
            return request, stream

    send = make_send(Telemetry(defer=False), AsyncOdd.send, httpx2.AsyncByteStream, True)
    assert asyncio.run(send(AsyncOdd(), GET, stream=True)) == (GET, True)


def test_a_signature_it_cannot_reproduce_gets_the_generic_wrapper() -> None:
    def clashing(self: Any, request: Any, ctx: Any = None) -> Any:  # "ctx" is the template's own
        return request, ctx

    def one(self: Any) -> Any:
        return None

    for original in (clashing, one, print):
        assert _signature(original, {})[0] == "self, *args, **kwargs"
    send = make_send(Telemetry(defer=False), clashing, httpx2.SyncByteStream, False)
    assert send(object(), GET, ctx=5) == (GET, 5)


@pytest.mark.parametrize("direct", [True, False], ids=["context_var", "api"])
def test_the_genai_span_is_current_during_the_call_and_the_callers_context_comes_back(direct: bool) -> None:
    """The span is made current by setting the API's ContextVar (default runtime context) or
    through the API; either way the request sees it and the caller gets its context back, also
    when the request fails."""
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[Any] = []

    class Fake:
        def send(self, request: Any, fail: bool = False) -> Any:
            seen.append(trace.get_current_span().get_span_context())
            if fail:
                raise httpx2.ConnectError("refused", request=request)
            return httpx2.Response(200, json={"id": "r1", "model": "m", "choices": []}, request=request)

    send = make_send(Telemetry(tracer_provider=tp, defer=False), Fake.send, httpx2.SyncByteStream, False,
                     direct=direct)
    assert (send.__globals__["_var_set"] is not None) is direct  # the SDK's default runtime context
    chat = httpx2.Request("POST", "http://127.0.0.1:1/v1/chat/completions", json={"model": "m", "messages": []})
    with tp.get_tracer("app").start_as_current_span("outer") as outer:
        send(Fake(), chat)
        assert trace.get_current_span() is outer
        with pytest.raises(httpx2.ConnectError):
            send(Fake(), chat, fail=True)
        assert trace.get_current_span() is outer
    ok, failed = sorted((s for s in exporter.get_finished_spans() if s.name == "chat m"),
                        key=lambda s: "error.type" in s.attributes)
    assert [c.span_id for c in seen] == [ok.context.span_id, failed.context.span_id]
    assert ok.parent.span_id == failed.parent.span_id == outer.get_span_context().span_id
    assert ok.attributes["gen_ai.response.id"] == "r1" and failed.attributes["error.type"] == "ConnectError"
