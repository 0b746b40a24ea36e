"""Cohere's Chat API v2 through the real ``cohere`` SDK (``ClientV2``): chat and chat_stream, sync
and async, with tools, a tool plan and an API error.

No Cohere exchange was recorded, so the answers are written here after the API reference, and
the SDK parses each one into its own types (``V2ChatResponse``, each stream event into
``V2ChatStreamResponse`` by its ``type``), whose fields the tests read back; the requests are
the SDK's own.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import cohere
import pytest

from lqo.instrumentation.httpx.decoders import Router

from .replay import Exchange, ReplayServer

MODEL = "command-a-03-2025"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "tool_plan": "I will look up Paris.", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": [{"type": "document", "document": {"data": "18 C, sunny"}}]},
    {"role": "user", "content": [{"type": "text", "text": "And in Lyon?"}]},
]
TOOLS = [{"type": "function", "function": {"name": "weather", "description": "Weather by city", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
PARAMS = {"temperature": 0.2, "p": 0.9, "k": 40, "max_tokens": 512, "seed": 7, "stop_sequences": ["END"]}
USAGE = {"billed_units": {"input_tokens": 36.0, "output_tokens": 25.0},
         "tokens": {"input_tokens": 1240.0, "output_tokens": 31.0}, "cached_tokens": 1024.0}
ANSWER = {
    "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4",
    "finish_reason": "TOOL_CALL",
    "message": {"role": "assistant", "tool_plan": "I will check Lyon.",
                "content": [{"type": "text", "text": "Checking Lyon."}],
                "tool_calls": [{"id": "call_2", "type": "function",
                                "function": {"name": "weather", "arguments": '{"city": "Lyon"}'}}]},
    "usage": USAGE,
}
STREAM = [
    {"type": "message-start", "id": "29f14a5a-11de-4cae-9800-25e4747408ea",
     "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}},
    {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will "}}},
    {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "check Lyon."}}},
    {"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}},
    {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Checking "}}}},
    {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Lyon \"now\"."}}}},
    {"type": "content-end", "index": 0},
    {"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": {
        "id": "call_2", "type": "function", "function": {"name": "weather", "arguments": ""}}}}},
    {"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": '{"city": '}}}}},
    {"type": "tool-call-delta", "index": 0, "delta": {"message": {"tool_calls": {"function": {"arguments": '"Lyon"}'}}}}},
    {"type": "tool-call-end", "index": 0},
    {"type": "message-end", "delta": {"finish_reason": "TOOL_CALL", "usage": USAGE}},
]
OUTPUT = {"role": "assistant", "finish_reason": "tool_call", "parts": [
    {"type": "reasoning", "content": "I will check Lyon."},
    {"type": "text", "content": "Checking Lyon."},
    {"type": "tool_call", "id": "call_2", "name": "weather", "arguments": {"city": "Lyon"}}]}


def _sse(events: list[dict[str, Any]]) -> bytes:
    """As Cohere streams: an ``event:`` line naming the type, then the ``data:`` line."""
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def _exchange(body: Any, status: int = 200, stream: bool = False) -> Exchange:
    if stream:
        return Exchange("POST", "/v2/chat", None, status, [("content-type", "text/event-stream")], _sse(body))
    return Exchange("POST", "/v2/chat", None, status, [("content-type", "application/json")], json.dumps(body).encode())


def _chat(url: str, is_async: bool, stream: bool = False) -> Any:
    kwargs = {"model": MODEL, "messages": MESSAGES, "tools": TOOLS, **PARAMS}
    if not is_async:
        client = cohere.ClientV2(api_key="k", base_url=url)
        return list(client.chat_stream(**kwargs)) if stream else client.chat(**kwargs)

    async def run() -> Any:
        client = cohere.AsyncClientV2(api_key="k", base_url=url)
        if stream:
            return [e async for e in client.chat_stream(**kwargs)]
        return await client.chat(**kwargs)

    return asyncio.run(run())


def _check_request_side(a: dict[str, Any]) -> None:
    assert a["gen_ai.provider.name"] == "cohere"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == MODEL
    assert (a["gen_ai.request.temperature"], a["gen_ai.request.top_p"], a["gen_ai.request.top_k"],
            a["gen_ai.request.max_tokens"], a["gen_ai.request.seed"]) == (0.2, 0.9, 40, 512, 7)
    assert list(a["gen_ai.request.stop_sequences"]) == ["END"]


def _check_usage(a: dict[str, Any]) -> None:
    # What the model processed (usage.tokens), not what was billed; integers though sent as 1240.0.
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (1240, 31)
    assert a["gen_ai.usage.cache_read.input_tokens"] == 1024


def _check_inputs(a: dict[str, Any]) -> None:
    inputs = json.loads(a["gen_ai.input.messages"])
    assert [m["role"] for m in inputs] == ["user", "assistant", "tool", "user"]
    assert inputs[1]["parts"] == [{"type": "reasoning", "content": "I will look up Paris."},
                                  {"type": "tool_call", "id": "call_1", "name": "weather", "arguments": {"city": "Paris"}}]
    assert inputs[2]["parts"] == [{"type": "tool_call_response", "id": "call_1",
                                   "response": [{"type": "document", "document": {"data": "18 C, sunny"}}]}]
    assert inputs[3]["parts"] == [{"type": "text", "content": "And in Lyon?"}]
    assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "You are terse."}]
    (tool,) = json.loads(a["gen_ai.tool.definitions"])
    assert (tool["name"], tool["description"]) == ("weather", "Weather by city")


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_chat_span(is_async: bool, instrument: Any) -> None:
    inst = instrument(capture_mode="SPAN_ONLY")
    with ReplayServer([_exchange(ANSWER)]) as srv:
        answer = _chat(srv.url, is_async)
        sent = json.loads(srv.received[0][2])
    assert (answer.id, answer.finish_reason, answer.message.content[0].text) == (ANSWER["id"], "TOOL_CALL", "Checking Lyon.")
    assert (sent["model"], sent["p"], sent["k"]) == (MODEL, 0.9, 40)
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    assert span.name == f"chat {MODEL}" and span.kind.name == "CLIENT"
    _check_request_side(a)
    _check_usage(a)
    assert a["gen_ai.response.id"] == ANSWER["id"]
    assert list(a["gen_ai.response.finish_reasons"]) == ["tool_call"]
    _check_inputs(a)
    assert json.loads(a["gen_ai.output.messages"]) == [OUTPUT]
    points = inst.metrics()["gen_ai.client.token.usage"]
    assert sorted(p.sum for p in points) == [31, 1240]


def test_chat_without_content(instrument: Any) -> None:
    inst = instrument()
    with ReplayServer([_exchange(ANSWER)]) as srv:
        _chat(srv.url, False)
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    _check_request_side(a)
    _check_usage(a)
    assert not any(k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.system", "gen_ai.tool")) for k in a)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_chat_stream_span(is_async: bool, instrument: Any) -> None:
    inst = instrument(capture_mode="SPAN_ONLY")
    with ReplayServer([_exchange(STREAM, stream=True)]) as srv:
        events = _chat(srv.url, is_async, stream=True)
    assert [e.type for e in events] == [e["type"] for e in STREAM]  # the SDK parsed every event
    assert events[-1].delta.usage.tokens.input_tokens == 1240
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    _check_request_side(a)
    _check_usage(a)
    assert a["gen_ai.response.id"] == STREAM[0]["id"]
    assert list(a["gen_ai.response.finish_reasons"]) == ["tool_call"]
    assert a["gen_ai.request.stream"] is True
    assert 0 < a["gen_ai.response.time_to_first_chunk"] < 60
    _check_inputs(a)
    assert json.loads(a["gen_ai.output.messages"]) == [{**OUTPUT, "parts": [
        OUTPUT["parts"][0], {"type": "text", "content": "Checking Lyon \"now\"."}, OUTPUT["parts"][2]]}]


def test_chat_stream_without_content(instrument: Any) -> None:
    """Capture off: usage and finish reason from message-end."""
    inst = instrument()
    with ReplayServer([_exchange(STREAM, stream=True)]) as srv:
        _chat(srv.url, False, stream=True)
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    _check_usage(a)
    assert list(a["gen_ai.response.finish_reasons"]) == ["tool_call"]
    assert "gen_ai.output.messages" not in a


def test_chat_stream_thinking_is_a_reasoning_part(instrument: Any) -> None:
    thinking = [STREAM[0],
                {"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "thinking", "thinking": ""}}}},
                {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"thinking": "Short answer."}}}},
                {"type": "content-end", "index": 0},
                {"type": "content-start", "index": 1, "delta": {"message": {"content": {"type": "text", "text": ""}}}},
                {"type": "content-delta", "index": 1, "delta": {"message": {"content": {"text": "Yes."}}}},
                {"type": "content-end", "index": 1},
                {"type": "message-end", "delta": {"finish_reason": "COMPLETE", "usage": USAGE}}]
    inst = instrument(capture_mode="SPAN_ONLY")
    with ReplayServer([_exchange(thinking, stream=True)]) as srv:
        _chat(srv.url, False, stream=True)
    (span,) = inst.genai_spans()
    assert json.loads(span.attributes["gen_ai.output.messages"]) == [{"role": "assistant", "finish_reason": "complete",
                                                                      "parts": [{"type": "reasoning", "content": "Short answer."},
                                                                                {"type": "text", "content": "Yes."}]}]


def test_api_error_names_its_status(instrument: Any) -> None:
    inst = instrument()
    with ReplayServer([_exchange({"message": "invalid api token"}, status=401)]) as srv, \
            pytest.raises(cohere.errors.UnauthorizedError):
        _chat(srv.url, False)
    (span,) = inst.genai_spans()
    assert span.attributes["error.type"] == "401"
    assert span.status.status_code.name == "ERROR"


def test_routed_by_path_and_host() -> None:
    router = Router()
    family, operation = router.route("/v2/chat")
    assert (family.name, operation) == ("cohere.chat", "chat")
    assert router.provider(family, "api.cohere.com", 443) == "cohere"
    assert router.route("/v1/chat") is None  # Cohere's v1 chat is another shape: not claimed


def test_capture_off_skips_content_events_and_records_the_same() -> None:
    """Content events (told by their SSE name) are not decoded with capture off, and the record is
    the one decoding every event gives, also where a server names an event as content but its data
    says otherwise (plainly, or with the type spelled in \\u escapes)."""
    from .test_stream_skip import _decode

    renamed = json.dumps(STREAM[-1]).replace('"message-end"', '"message\\u002dend"')
    body = _sse(STREAM) + (b"event: content-delta\ndata: " + json.dumps(STREAM[-1]).encode() + b"\n\n"
                           + b"event: content-delta\ndata: " + renamed.encode() + b"\n\n")
    for events, decoded_fast in ((_sse(STREAM), 2), (body, 4)):
        ex = Exchange("POST", "/v2/chat", json.dumps({"model": MODEL, "stream": True}), 200,
                      [("content-type", "text/event-stream")], events)
        full, decoded_all = _decode(ex, capture=False, skip=False)
        assert full["attrs"]["gen_ai.response.id"] == STREAM[0]["id"] and full["input_tokens"] == 1240
        for piece in (None, 1, 13):
            assert _decode(ex, capture=False, skip=True, piece=piece) == (full, decoded_fast)
        assert decoded_all == decoded_fast + len(STREAM) - 2  # the message start and end only
        assert _decode(ex, capture=True, skip=True)[1] == decoded_all  # capture on: every event
