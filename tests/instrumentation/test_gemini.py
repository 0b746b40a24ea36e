"""Google Gemini through the real ``google-genai`` SDK (httpx2): generateContent, its stream and
embeddings, on the Gemini Developer API and Vertex AI paths.

No Gemini exchange was recorded, so the answers are written here, and the SDK's own types check
each one: every answer and stream event must validate as ``types.GenerateContentResponse``
(pydantic, unknown keys refused), so a key the API does not have fails the test. The requests
are the SDK's own.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from typing import Any

import httpx
import pytest
from google import genai
from google.genai import errors, types
from google.oauth2.credentials import Credentials

from lqo.instrumentation.httpx._sniff import model_of
from lqo.instrumentation.httpx.decoders import Router

from .replay import Exchange, ReplayServer

MODEL = "gemini-2.5-flash"
PATH = f"/v1beta/models/{MODEL}:generateContent"
STREAM_PATH = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"

CONFIG = types.GenerateContentConfig(
    system_instruction="You are terse.", temperature=0.2, top_p=0.9, top_k=40, max_output_tokens=512,
    stop_sequences=["END"], seed=7, candidate_count=1,
    tools=[types.Tool(function_declarations=[types.FunctionDeclaration(
        name="weather", description="Weather by city",
        parameters=types.Schema(type="OBJECT", properties={"city": types.Schema(type="STRING")}))])],
    automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True))
CONTENTS = [
    types.Content(role="user", parts=[types.Part(text="What is the weather in Paris?")]),
    types.Content(role="model", parts=[types.Part(function_call=types.FunctionCall(
        id="call_1", name="weather", args={"city": "Paris"}))]),
    types.Content(role="user", parts=[types.Part(function_response=types.FunctionResponse(
        id="call_1", name="weather", response={"result": "18 C, sunny"}))]),
    types.Content(role="user", parts=[types.Part(text="And in Lyon?")]),
]
USAGE = {"promptTokenCount": 1240, "cachedContentTokenCount": 1024, "candidatesTokenCount": 25,
         "thoughtsTokenCount": 60, "totalTokenCount": 1325}
ANSWER = {
    "candidates": [{"content": {"role": "model", "parts": [
        {"text": "The user asks about Lyon.", "thought": True},
        {"text": "Checking Lyon."},
        {"functionCall": {"id": "call_2", "name": "weather", "args": {"city": "Lyon"}}}]},
        "finishReason": "STOP", "index": 0}],
    "usageMetadata": USAGE,
    "modelVersion": "gemini-2.5-flash-001",
    "responseId": "resp-Xy12",
}
STREAM = [
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "The user asks", "thought": True}]}, "index": 0}],
     "usageMetadata": {"promptTokenCount": 1240, "cachedContentTokenCount": 1024, "totalTokenCount": 1240},
     "modelVersion": "gemini-2.5-flash-001", "responseId": "resp-St34"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": " about Lyon.", "thought": True}]}, "index": 0}],
     "modelVersion": "gemini-2.5-flash-001", "responseId": "resp-St34"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Checking "}]}, "index": 0}],
     "modelVersion": "gemini-2.5-flash-001", "responseId": "resp-St34"},
    {"candidates": [{"content": {"role": "model", "parts": [{"text": "Lyon \"now\"."}]}, "index": 0}],
     "modelVersion": "gemini-2.5-flash-001", "responseId": "resp-St34"},
    {"candidates": [{"content": {"role": "model", "parts": [
        {"functionCall": {"id": "call_2", "name": "weather", "args": {"city": "Lyon"}}}]},
        "finishReason": "STOP", "index": 0}],
     "usageMetadata": USAGE, "modelVersion": "gemini-2.5-flash-001", "responseId": "resp-St34"},
]


def _validated(body: dict[str, Any]) -> dict[str, Any]:
    types.GenerateContentResponse.model_validate(body)  # the API's keys only
    return body


def _sse(events: list[dict[str, Any]], sep: bytes = b"\r\n\r\n") -> bytes:
    """As Google sends a stream: one ``data:`` line per response, CRLF line ends."""
    return b"".join(b"data: " + json.dumps(_validated(e)).encode() + sep for e in events)


def _json(path: str, body: Any, status: int = 200) -> Exchange:
    return Exchange("POST", path, None, status, [("content-type", "application/json")], json.dumps(body).encode())


def _client(url: str, vertex: bool = False) -> genai.Client:
    options = types.HttpOptions(base_url=url, api_version="v1beta1" if vertex else "v1beta")
    if vertex:
        token = Credentials(token="t", expiry=datetime.datetime(2099, 1, 1))
        return genai.Client(vertexai=True, project="p", location="us-central1", credentials=token,
                            http_options=options)
    return genai.Client(api_key="test-key", http_options=options)


def _generate(url: str, is_async: bool, stream: bool = False, vertex: bool = False) -> Any:
    client = _client(url, vertex)
    if not is_async:
        if stream:
            return list(client.models.generate_content_stream(model=MODEL, contents=CONTENTS, config=CONFIG))
        return client.models.generate_content(model=MODEL, contents=CONTENTS, config=CONFIG)

    async def run() -> Any:
        models = client.aio.models
        if stream:
            return [c async for c in await models.generate_content_stream(model=MODEL, contents=CONTENTS, config=CONFIG)]
        return await models.generate_content(model=MODEL, contents=CONTENTS, config=CONFIG)

    return asyncio.run(run())


def _check_request_side(a: dict[str, Any], provider: str = "gcp.gen_ai") -> None:
    assert a["gen_ai.provider.name"] == provider
    assert a["gen_ai.operation.name"] == "generate_content"
    assert a["gen_ai.request.model"] == MODEL
    assert (a["gen_ai.request.temperature"], a["gen_ai.request.top_p"], a["gen_ai.request.top_k"],
            a["gen_ai.request.max_tokens"], a["gen_ai.request.seed"]) == (0.2, 0.9, 40, 512, 7)
    assert list(a["gen_ai.request.stop_sequences"]) == ["END"]
    assert "gen_ai.request.choice.count" not in a  # one candidate asked for: the default


def _check_usage(a: dict[str, Any]) -> None:
    assert a["gen_ai.usage.input_tokens"] == USAGE["promptTokenCount"]  # cached ones included already
    assert a["gen_ai.usage.cache_read.input_tokens"] == USAGE["cachedContentTokenCount"]
    assert a["gen_ai.usage.output_tokens"] == USAGE["candidatesTokenCount"] + USAGE["thoughtsTokenCount"]
    assert a["gen_ai.usage.reasoning.output_tokens"] == USAGE["thoughtsTokenCount"]


def _check_inputs(a: dict[str, Any]) -> None:
    inputs = json.loads(a["gen_ai.input.messages"])
    assert [m["role"] for m in inputs] == ["user", "assistant", "tool", "user"]
    assert inputs[1]["parts"] == [{"type": "tool_call", "id": "call_1", "name": "weather", "arguments": {"city": "Paris"}}]
    assert inputs[2]["parts"] == [{"type": "tool_call_response", "id": "call_1", "response": {"result": "18 C, sunny"}}]
    assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "You are terse."}]
    (tool,) = json.loads(a["gen_ai.tool.definitions"])
    assert (tool["name"], tool["description"]) == ("weather", "Weather by city")
    assert tool["parameters"]["properties"] == {"city": {"type": "STRING"}}


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_generate_content_span(is_async: bool, instrument: Any) -> None:
    inst = instrument(capture_mode="SPAN_ONLY")
    with ReplayServer([_json(PATH, _validated(ANSWER))]) as srv:
        answer = _generate(srv.url, is_async)
        sent = json.loads(srv.received[0][2])
    assert answer.text == "Checking Lyon."
    assert "model" not in sent  # the SDK names the model in the path only
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    assert span.name == f"generate_content {MODEL}"
    assert span.kind.name == "CLIENT"
    _check_request_side(a)
    _check_usage(a)
    assert (a["gen_ai.response.id"], a["gen_ai.response.model"]) == ("resp-Xy12", "gemini-2.5-flash-001")
    assert list(a["gen_ai.response.finish_reasons"]) == ["stop"]
    assert "gen_ai.request.stream" not in a
    _check_inputs(a)
    (output,) = json.loads(a["gen_ai.output.messages"])
    assert output == {"role": "assistant", "finish_reason": "stop", "parts": [
        {"type": "reasoning", "content": "The user asks about Lyon."},
        {"type": "text", "content": "Checking Lyon."},
        {"type": "tool_call", "id": "call_2", "name": "weather", "arguments": {"city": "Lyon"}}]}
    points = inst.metrics()["gen_ai.client.token.usage"]
    assert sorted(p.sum for p in points) == [85, 1240]


def test_generate_content_without_content(instrument: Any) -> None:
    inst = instrument()
    with ReplayServer([_json(PATH, _validated(ANSWER))]) as srv:
        _generate(srv.url, False)
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    _check_request_side(a)
    _check_usage(a)
    assert not any(k.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.system", "gen_ai.tool")) for k in a)


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_stream_span(is_async: bool, instrument: Any) -> None:
    inst = instrument(capture_mode="SPAN_ONLY")
    sse = Exchange("POST", STREAM_PATH, None, 200, [("content-type", "text/event-stream")], _sse(STREAM, b"\n\n"))
    with ReplayServer([sse]) as srv:
        chunks = _generate(srv.url, is_async, stream=True)
    assert "".join(c.text or "" for c in chunks) == "Checking Lyon \"now\"."
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    _check_request_side(a)
    _check_usage(a)
    assert a["gen_ai.response.id"] == "resp-St34"
    assert list(a["gen_ai.response.finish_reasons"]) == ["stop"]
    assert a["gen_ai.request.stream"] is True
    assert 0 < a["gen_ai.response.time_to_first_chunk"] < 60
    _check_inputs(a)
    (output,) = json.loads(a["gen_ai.output.messages"])
    assert output == {"role": "assistant", "finish_reason": "stop", "parts": [
        {"type": "reasoning", "content": "The user asks about Lyon."},
        {"type": "text", "content": "Checking Lyon \"now\"."},
        {"type": "tool_call", "id": "call_2", "name": "weather", "arguments": {"city": "Lyon"}}]}


def test_stream_with_crlf_lines_and_without_content(instrument: Any) -> None:
    """As Google writes it (CRLF line ends); capture off still gets usage and finish reasons."""
    inst = instrument()
    sse = Exchange("POST", STREAM_PATH, None, 200, [("content-type", "text/event-stream")], _sse(STREAM))
    with ReplayServer([sse]) as srv:
        chunks = _generate(srv.url, False, stream=True)
    assert len(chunks) == len(STREAM)
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    _check_usage(a)
    assert list(a["gen_ai.response.finish_reasons"]) == ["stop"]
    assert "gen_ai.output.messages" not in a


def test_stream_error_mid_stream(instrument: Any) -> None:
    """An error event after some text (quota, overload): the SDK raises it; the span names it."""
    inst = instrument()
    body = _sse(STREAM[:2], b"\n\n") + b'data: {"error": {"code": 429, "message": "Resource exhausted",' \
                                       b' "status": "RESOURCE_EXHAUSTED"}}\n\n'
    sse = Exchange("POST", STREAM_PATH, None, 200, [("content-type", "text/event-stream")], body)
    with ReplayServer([sse]) as srv, pytest.raises(errors.APIError):
        _generate(srv.url, False, stream=True)
    (span,) = inst.genai_spans()
    assert span.attributes["error.type"] == "RESOURCE_EXHAUSTED"
    assert "gen_ai.response.finish_reasons" not in span.attributes  # it never finished


def test_error_status(instrument: Any) -> None:
    inst = instrument()
    error = {"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}
    with ReplayServer([_json(PATH, error, status=400)]) as srv, pytest.raises(errors.ClientError):
        _generate(srv.url, False)
    (span,) = inst.genai_spans()
    assert span.attributes["error.type"] == "400"
    assert span.attributes["gen_ai.request.model"] == MODEL


def test_blocked_prompt_has_its_reason_as_finish(instrument: Any) -> None:
    inst = instrument(capture_mode="SPAN_ONLY")
    blocked = _validated({"promptFeedback": {"blockReason": "SAFETY"},
                          "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}, "modelVersion": MODEL})
    with ReplayServer([_json(PATH, blocked)]) as srv:
        assert _generate(srv.url, False).candidates is None
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    assert list(a["gen_ai.response.finish_reasons"]) == ["safety"]
    assert a["gen_ai.usage.input_tokens"] == 12
    assert "gen_ai.output.messages" not in a


def test_vertex_ai_path(instrument: Any) -> None:
    """Vertex AI: the same API under …/publishers/google/models/…, named by the SDK's own path."""
    inst = instrument(provider_hosts={"127.0.0.1": "gcp.vertex_ai"})
    path = f"/v1beta1/projects/p/locations/us-central1/publishers/google/models/{MODEL}:generateContent"
    with ReplayServer([_json(path, _validated(ANSWER))]) as srv:
        _generate(srv.url, False, vertex=True)
        assert srv.received[0][1] == path
    (span,) = inst.genai_spans()
    _check_request_side(dict(span.attributes), provider="gcp.vertex_ai")
    _check_usage(dict(span.attributes))


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_embeddings(is_async: bool, instrument: Any) -> None:
    """batchEmbedContents names the model in each request too ("models/…"): the path's wins."""
    inst = instrument(capture_mode="SPAN_ONLY")
    model = "text-embedding-004"
    answer = {"embeddings": [{"values": [0.1, 0.2, 0.3]}, {"values": [0.4, 0.5, 0.6]}]}
    types.EmbedContentResponse.model_validate(answer)
    with ReplayServer([_json(f"/v1beta/models/{model}:batchEmbedContents", answer)]) as srv:
        client = _client(srv.url)
        if is_async:
            result = asyncio.run(client.aio.models.embed_content(model=model, contents=["a", "b"]))
        else:
            result = client.models.embed_content(model=model, contents=["a", "b"])
        assert b'"model": "models/text-embedding-004"' in srv.received[0][2]
    assert len(result.embeddings) == 2
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    assert span.name == f"embeddings {model}"
    assert (a["gen_ai.operation.name"], a["gen_ai.request.model"]) == ("embeddings", model)
    assert a["gen_ai.embeddings.dimension.count"] == 3
    assert json.loads(a["gen_ai.input.messages"]) == [{"role": "user", "parts": [
        {"type": "text", "content": "a"}, {"type": "text", "content": "b"}]}]


def test_stream_answered_as_one_json_array(instrument: Any) -> None:
    """streamGenerateContent without alt=sse answers a JSON array of the responses."""
    inst = instrument(capture_mode="SPAN_ONLY")
    path = f"/v1beta/models/{MODEL}:streamGenerateContent"
    with ReplayServer([_json(path, [_validated(e) for e in STREAM])]) as srv:
        httpx.post(srv.url + path, json={"contents": [{"role": "user", "parts": [{"text": "Lyon?"}]}]})
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    _check_usage(a)
    (output,) = json.loads(a["gen_ai.output.messages"])
    assert [p["type"] for p in output["parts"]] == ["reasoning", "text", "tool_call"]
    assert output["parts"][1]["content"] == "Checking Lyon \"now\"."


@pytest.mark.parametrize(("path", "expected"), [
    (f"/v1beta/models/{MODEL}:generateContent", ("generate_content", MODEL)),
    (f"/v1/models/{MODEL}:streamGenerateContent", ("generate_content", MODEL)),
    ("/v1beta/models/text-embedding-004:embedContent", ("embeddings", "text-embedding-004")),
    ("/v1/projects/p/locations/global/publishers/google/models/gemini-2.0-flash-001:generateContent",
     ("generate_content", "gemini-2.0-flash-001")),
    ("/v1beta/models/a/b:generateContent", None),  # a "/" in the model: not a model id
    (f"/v1beta/models/{MODEL}:countTokens", None),
    (f"/v1beta/models/{MODEL}", None),
    ("/v1beta/models/:generateContent", None),
])
def test_routing_and_model(path: str, expected: tuple[str, str] | None) -> None:
    found = Router().route(path)
    if expected is None:
        assert found is None or found[0].name != "gcp.gemini"
        return
    assert found is not None and (found[0].name, found[1]) == ("gcp.gemini", expected[0])
    assert model_of(b'{"requests": [{"model": "models/other"}]}', path) == expected[1]


@pytest.mark.parametrize(("host", "provider"), [
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    ("us-central1-aiplatform.googleapis.com", "gcp.vertex_ai"),
    ("aiplatform.googleapis.com", "gcp.vertex_ai"),
    ("gemini-proxy.internal", "gcp.gen_ai"),  # unknown: any Google GenAI endpoint
])
def test_provider_by_host(host: str, provider: str) -> None:
    family, _ = Router().route(PATH)  # type: ignore[misc]
    assert Router().provider(family, host, 443) == provider


def test_embed_content_body_naming_the_model_keeps_the_paths(instrument: Any) -> None:
    """The REST API's own embedContent example restates the model in the body ("models/…"):
    the span keeps the path's model, as the call path named it."""
    inst = instrument()
    path = "/v1beta/models/text-embedding-004:embedContent"
    with ReplayServer([_json(path, {"embedding": {"values": [0.5] * 8}})]) as srv:
        httpx.post(srv.url + path, json={"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]},
                                         "outputDimensionality": 8})
    (span,) = inst.genai_spans()
    assert span.name == "embeddings text-embedding-004"
    assert span.attributes["gen_ai.request.model"] == "text-embedding-004"
    assert span.attributes["gen_ai.embeddings.dimension.count"] == 8
