"""AWS Bedrock Converse through httpx (as LiteLLM calls it): whole and streamed answers.

No Converse exchange was recorded, so requests and answers are written here, and botocore's own
model of the Bedrock runtime API checks each against the real API's shapes: the request is
validated as boto3 validates a ``converse`` call; the answer and every stream event are parsed
by botocore's parsers and must come back whole (a key the API does not have would be dropped,
and the test fails). Streams are framed as AWS frames them (``test_bedrock.frame``), and
botocore's event stream reader must accept every frame. The client is plain httpx, sync and async.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.loaders import Loader
from botocore.model import ServiceModel
from botocore.parsers import EventStreamJSONParser, RestJSONParser
from botocore.validate import validate_parameters

from .replay import Exchange, ReplayServer
from .test_bedrock import EVENTSTREAM, exception, frame

MODEL = "anthropic.claude-3-5-sonnet-20241022-v2:0"
SERVICE = ServiceModel(Loader().load_service_model("bedrock-runtime", "service-2"))

REQUEST = {
    "messages": [
        {"role": "user", "content": [{"text": "What is the weather in Paris?"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_1", "name": "weather",
                                                       "input": {"city": "Paris"}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "18 C, sunny"}]}},
                                     {"text": "And in Lyon?"}]},
    ],
    "system": [{"text": "You are terse."}, {"cachePoint": {"type": "default"}}],
    "inferenceConfig": {"maxTokens": 512, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
    "toolConfig": {"tools": [{"toolSpec": {"name": "weather", "description": "Weather by city",
                                           "inputSchema": {"json": {"type": "object",
                                                                    "properties": {"city": {"type": "string"}}}}}}]},
}
ANSWER = {
    "output": {"message": {"role": "assistant", "content": [
        {"text": "Checking Lyon."},
        {"toolUse": {"toolUseId": "tooluse_2", "name": "weather", "input": {"city": "Lyon"}}}]}},
    "stopReason": "tool_use",
    "usage": {"inputTokens": 40, "outputTokens": 25, "totalTokens": 1265, "cacheReadInputTokens": 1200,
              "cacheWriteInputTokens": 0},
    "metrics": {"latencyMs": 812},
}


def _validated_request(body: dict[str, Any]) -> dict[str, Any]:
    validate_parameters({**body, "modelId": MODEL}, SERVICE.operation_model("Converse").input_shape)
    return body


def _validated_answer(body: dict[str, Any]) -> bytes:
    raw = json.dumps(body).encode()
    parsed = RestJSONParser().parse({"status_code": 200, "headers": {}, "body": raw},
                                    SERVICE.operation_model("Converse").output_shape)
    parsed.pop("ResponseMetadata", None)
    assert parsed == body  # every key is the API's
    return raw


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                 json.dumps({**payload, "p": "abcdefghijkl"}).encode())


def _validated_stream(body: bytes) -> bytes:
    """Every frame read back by botocore's event stream reader and parser, payloads whole."""
    buffer = EventStreamBuffer()
    buffer.add_data(body)
    shape = SERVICE.shape_for("ConverseStreamOutput")
    messages = list(buffer)
    assert len(messages) == body.count(b":message-type")  # every frame read
    for message in messages:
        response = message.to_response_dict()
        parsed = EventStreamJSONParser().parse(response, shape)
        if response["status_code"] == 200:
            kind = message.headers[":event-type"]
            sent = {k: v for k, v in json.loads(message.payload).items() if k != "p"}
            assert parsed[kind] == sent, kind
        else:
            assert parsed["Error"]["Code"] == message.headers[":exception-type"]
    return body


STREAM_EVENTS = [
    ("messageStart", {"role": "assistant"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "The user asks"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": " about Lyon."}}}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "c2ln"}}}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Checking "}}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"text": "Lyon \"now\"."}}),
    ("contentBlockStop", {"contentBlockIndex": 1}),
    ("contentBlockStart", {"contentBlockIndex": 2, "start": {"toolUse": {"toolUseId": "tooluse_2", "name": "weather"}}}),
    ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "{\"city\": "}}}),
    ("contentBlockDelta", {"contentBlockIndex": 2, "delta": {"toolUse": {"input": "\"Lyon\"}"}}}),
    ("contentBlockStop", {"contentBlockIndex": 2}),
    ("messageStop", {"stopReason": "tool_use"}),
    ("metadata", {"usage": {"inputTokens": 40, "outputTokens": 31, "totalTokens": 71, "cacheWriteInputTokens": 900},
                  "metrics": {"latencyMs": 950}}),
]


def _exchange(path_action: str, body: bytes, content_type: str, status: int = 200) -> Exchange:
    return Exchange("POST", f"/model/{MODEL}/{path_action}", json.dumps(REQUEST), status,
                    [("content-type", content_type)], body)


def _call(url: str, action: str, is_async: bool) -> bytes:
    target = f"{url}/model/{MODEL}/{action}"
    body = _validated_request(REQUEST)
    if not is_async:
        with httpx.Client() as client:
            if action.endswith("stream"):
                with client.stream("POST", target, json=body) as response:
                    return b"".join(response.iter_bytes())
            return client.post(target, json=body).content

    async def run() -> bytes:
        async with httpx.AsyncClient() as client:
            if action.endswith("stream"):
                async with client.stream("POST", target, json=body) as response:
                    return b"".join([chunk async for chunk in response.aiter_bytes()])
            return (await client.post(target, json=body)).content

    return asyncio.run(run())


def _check_request_side(a: dict[str, Any]) -> None:
    assert a["gen_ai.provider.name"] == "aws.bedrock"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == MODEL
    config = REQUEST["inferenceConfig"]
    assert (a["gen_ai.request.max_tokens"], a["gen_ai.request.temperature"], a["gen_ai.request.top_p"]) == \
        (config["maxTokens"], config["temperature"], config["topP"])
    assert list(a["gen_ai.request.stop_sequences"]) == config["stopSequences"]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_converse_span(is_async: bool, instrument: Any) -> None:
    inst = instrument(capture_mode="SPAN_ONLY")
    with ReplayServer([_exchange("converse", _validated_answer(ANSWER), "application/json")]) as srv:
        assert json.loads(_call(srv.url, "converse", is_async)) == ANSWER
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    assert span.name == f"chat {MODEL}"
    _check_request_side(a)
    usage = ANSWER["usage"]
    assert a["gen_ai.usage.input_tokens"] == usage["inputTokens"] + usage["cacheReadInputTokens"]
    assert a["gen_ai.usage.cache_read.input_tokens"] == usage["cacheReadInputTokens"]
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 0
    assert a["gen_ai.usage.output_tokens"] == usage["outputTokens"]
    assert list(a["gen_ai.response.finish_reasons"]) == ["tool_use"]
    assert "gen_ai.request.stream" not in a
    inputs = json.loads(a["gen_ai.input.messages"])
    assert [p["type"] for m in inputs for p in m["parts"]] == ["text", "tool_call", "tool_call_response", "text"]
    assert inputs[2]["parts"][0] == {"type": "tool_call_response", "id": "tooluse_1", "response": [{"text": "18 C, sunny"}]}
    assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "You are terse."}]
    (tool,) = json.loads(a["gen_ai.tool.definitions"])
    assert (tool["name"], tool["parameters"]["properties"]) == ("weather", {"city": {"type": "string"}})
    (output,) = json.loads(a["gen_ai.output.messages"])
    assert output == {"role": "assistant", "finish_reason": "tool_use", "parts": [
        {"type": "text", "content": "Checking Lyon."},
        {"type": "tool_call", "id": "tooluse_2", "name": "weather", "arguments": {"city": "Lyon"}}]}


def test_converse_without_content(instrument: Any) -> None:
    inst = instrument()
    with ReplayServer([_exchange("converse", _validated_answer(ANSWER), "application/json")]) as srv:
        _call(srv.url, "converse", False)
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    _check_request_side(a)
    assert a["gen_ai.usage.output_tokens"] == ANSWER["usage"]["outputTokens"]
    assert not any(k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.system", "gen_ai.tool")) for k in a)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_converse_stream_span(is_async: bool, instrument: Any) -> None:
    inst = instrument(capture_mode="SPAN_ONLY")
    body = _validated_stream(b"".join(_event(kind, payload) for kind, payload in STREAM_EVENTS))
    with ReplayServer([_exchange("converse-stream", body, EVENTSTREAM)]) as srv:
        assert _call(srv.url, "converse-stream", is_async) == body
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    _check_request_side(a)
    usage = dict(STREAM_EVENTS)["metadata"]["usage"]
    assert a["gen_ai.usage.input_tokens"] == usage["inputTokens"] + usage["cacheWriteInputTokens"]
    assert a["gen_ai.usage.cache_creation.input_tokens"] == usage["cacheWriteInputTokens"]
    assert a["gen_ai.usage.output_tokens"] == usage["outputTokens"]
    assert list(a["gen_ai.response.finish_reasons"]) == ["tool_use"]
    assert a["gen_ai.request.stream"] is True
    assert 0 < a["gen_ai.response.time_to_first_chunk"] < 60
    (output,) = json.loads(a["gen_ai.output.messages"])
    assert output["parts"] == [
        {"type": "reasoning", "content": "The user asks about Lyon."},
        {"type": "text", "content": "Checking Lyon \"now\"."},
        {"type": "tool_call", "id": "tooluse_2", "name": "weather", "arguments": {"city": "Lyon"}}]


def test_converse_stream_exception_mid_stream(instrument: Any) -> None:
    inst = instrument()
    body = _validated_stream(b"".join(_event(kind, payload) for kind, payload in STREAM_EVENTS[:6])
                             + exception("modelStreamErrorException", "The model stopped"))
    with ReplayServer([_exchange("converse-stream", body, EVENTSTREAM)]) as srv:
        _call(srv.url, "converse-stream", False)
    (span,) = inst.genai_spans()
    assert span.attributes["error.type"] == "modelStreamErrorException"
    assert "gen_ai.response.finish_reasons" not in span.attributes  # it never stopped


def test_converse_error_status(instrument: Any) -> None:
    inst = instrument()
    error = json.dumps({"message": "Malformed input request"}).encode()
    with ReplayServer([_exchange("converse", error, "application/json", status=400)]) as srv:
        _call(srv.url, "converse", False)
    (span,) = inst.genai_spans()
    assert span.attributes["error.type"] == "400"
    assert span.attributes["gen_ai.request.model"] == MODEL
