"""AWS Bedrock InvokeModel through Anthropic's ``AnthropicBedrock`` client (SigV4 signing by
botocore, offline), streamed: AWS's binary event stream, each ``chunk`` event carrying one
Anthropic stream event base64-encoded.

No recording of a Bedrock stream exists, so the streams here are the recorded Anthropic streams
re-framed the way Bedrock frames them (``frame``): the SDK parses them with botocore's own event
stream reader, which checks every length and CRC, so a frame it accepts is a real one. The span
must carry what the recorded Anthropic stream says, as for the first-party API.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import struct
import zlib
from typing import Any

import anthropic
import httpx
import pytest

from lqo.instrumentation.httpx._streams import StreamParser
from lqo.instrumentation.httpx.decoders import Router
from lqo.instrumentation.httpx.decoders.bedrock import model_in_path

from .expected import expected_for, sse_events
from .replay import RECORDINGS, Exchange, ReplayServer, load_cassette
from .sdk_calls import make_client, run_async, run_sync
from .test_recordings import check_span

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
STREAM_PATH = f"/model/{MODEL}/invoke-with-response-stream"
EVENTSTREAM = "application/vnd.amazon.eventstream"


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event stream frame: prelude (lengths, CRC-32), string headers, payload, CRC-32."""
    head = b"".join(bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
                    for k, v in headers.items())
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack(">I", zlib.crc32(message))


def chunk(event: dict[str, Any]) -> bytes:
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode(), "p": "abcdefgh"})
    return frame({":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
                 payload.encode())


def exception(kind: str, message: str) -> bytes:
    return frame({":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"},
                 json.dumps({"message": message}).encode())


def _anthropic_streams() -> list[tuple[str, Exchange]]:
    out = []
    for path in sorted(RECORDINGS.glob("anthropic/*.yaml")):
        for ex in load_cassette(path):
            if ex.streamed and ex.status == 200 and ex.path.split("?")[0].endswith("/v1/messages"):
                out.append((path.stem, ex))
    return out


STREAMS = _anthropic_streams()
# One of each kind of stream (the first exchange of its cassette): text, tools, thinking, caching.
PICKED = list({name: ex for name, ex in reversed(STREAMS) if name in {
    "anthropic__test_anthropic_message_streaming_with_events_with_content",
    "anthropic__test_anthropic_tools_streaming_with_events_with_content",
    "anthropic__test_anthropic_thinking_streaming_with_events_with_content",
    "anthropic__test_anthropic_prompt_caching_stream_with_events_with_content",
}}.items())


def as_bedrock(ex: Exchange) -> Exchange:
    """The recorded Anthropic stream as Bedrock sends it: the request without model and stream
    (they are in the path), each event a ``chunk`` frame."""
    request = {k: v for k, v in json.loads(ex.request_body or "{}").items() if k not in ("model", "stream")}
    request["anthropic_version"] = "bedrock-2023-05-31"
    body = b"".join(chunk(e) for e in sse_events(ex.body))
    return Exchange("POST", STREAM_PATH, json.dumps(request), 200, [("content-type", EVENTSTREAM)], body)


def test_there_are_recorded_anthropic_streams_to_reframe() -> None:
    assert len(PICKED) == 4, [n for n, _ in PICKED]


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(("name", "ex"), PICKED, ids=[n for n, _ in PICKED])
def test_bedrock_stream_span(name: str, ex: Exchange, is_async: bool, instrument: Any) -> None:
    inst = instrument(capture_mode="SPAN_ONLY")
    bedrock = as_bedrock(ex)
    with ReplayServer([bedrock]) as srv:
        if is_async:
            async def call() -> Any:
                return await run_async(make_client("bedrock", srv.url, True), bedrock)

            events = asyncio.run(call())
        else:
            events = run_sync(make_client("bedrock", srv.url, False), bedrock)
    assert any(getattr(e, "type", None) == "message_stop" for e in events)  # the SDK read to the end
    (span,) = inst.genai_spans()
    exp = expected_for(ex)
    exp.request_model = MODEL
    check_span(span, exp, capture=True)
    a = dict(span.attributes)
    assert a["gen_ai.provider.name"] == "aws.bedrock"
    assert a["gen_ai.request.stream"] is True  # the path says so (the SDK moves it out of the body)
    assert span.name == f"chat {MODEL}"
    assert a["gen_ai.request.max_tokens"] == json.loads(ex.request_body)["max_tokens"]


def test_bedrock_stream_exception_mid_stream(instrument: Any) -> None:
    """An exception frame (throttling, mid-stream): the SDK raises it as an API error, and the
    span says which, with the usage read before it."""
    inst = instrument()
    _, ex = PICKED[0]
    events = sse_events(ex.body)
    bedrock = as_bedrock(ex)
    bedrock.body = b"".join(chunk(e) for e in events[:3]) + exception("throttlingException", "Too many requests")
    with ReplayServer([bedrock]) as srv, pytest.raises(anthropic.APIError):
        run_sync(make_client("bedrock", srv.url, False), bedrock)
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    assert a["error.type"] == "throttlingException"
    assert a["gen_ai.usage.input_tokens"] == events[0]["message"]["usage"]["input_tokens"]


def test_bedrock_invoke_recordings_route_with_the_model_from_the_path() -> None:
    recorded = [ex for path in sorted(RECORDINGS.glob("anthropic/*bedrock*.yaml")) for ex in load_cassette(path)]
    assert len(recorded) == 3
    for ex in recorded:
        family, operation = Router().route(ex.path)  # type: ignore[misc]
        assert (family.name, family.provider, operation) == ("aws.bedrock.invoke_model", "aws.bedrock", "chat")
        assert model_in_path(ex.path) == MODEL
    assert model_in_path("/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.x/invoke") == \
        "arn:aws:bedrock:us-east-1:1:inference-profile/us.x"
    assert model_in_path("/model/x/converse-stream") == "x"  # Converse: the same place
    for other in ("/model/x/count-tokens", "/model/invoke", "/v1/messages", "/models/x/invoke"):
        assert model_in_path(other) is None


def _parse(body: bytes, piece: int | None = None) -> tuple[list[tuple[str, Any]], bool]:
    seen: list[tuple[str, Any]] = []
    parser = StreamParser("eventstream", "", lambda name, data: seen.append((name, data)))
    step = piece or len(body) or 1
    for start in range(0, len(body), step):
        parser.feed(body[start:start + step])
    parser.close()
    return seen, parser.broken


def test_event_stream_frames_in_any_pieces() -> None:
    body = (chunk({"type": "ping"}) + frame({":message-type": "event", ":event-type": "other", ":x": "y"}, b"")
            + exception("modelStreamErrorException", "boom"))
    whole, broken = _parse(body)
    assert not broken
    assert [name for name, _ in whole] == ["chunk", "other", ":exception:modelStreamErrorException"]
    assert json.loads(base64.b64decode(whole[0][1]["bytes"])) == {"type": "ping"}
    rng = random.Random(7)
    for piece in (1, 2, 3, 13, rng.randrange(4, 60)):
        assert _parse(body, piece) == (whole, False)


@pytest.mark.parametrize("damage", ["payload crc", "prelude crc", "length", "headers"])
def test_a_damaged_frame_stops_the_parse(damage: str) -> None:
    good = chunk({"type": "ping"})
    bad = bytearray(chunk({"type": "message_stop"}))
    if damage == "payload crc":
        bad[-6] ^= 1
    elif damage == "prelude crc":
        bad[9] ^= 1
    elif damage == "length":
        bad[:4] = struct.pack(">I", 1 << 30)
        bad[8:12] = struct.pack(">I", zlib.crc32(bytes(bad[:8])))
    else:  # a header type that does not exist, with both CRCs right
        head_len = struct.unpack(">I", bad[4:8])[0]
        name_len = bad[12]
        bad[13 + name_len] = 42
        bad[-4:] = struct.pack(">I", zlib.crc32(bytes(bad[:-4])))
        assert head_len
    seen, broken = _parse(good + bytes(bad) + good)
    assert broken
    assert [name for name, _ in seen] == ["chunk"]  # what came before is kept


LLAMA = "meta.llama3-1-70b-instruct-v1:0"
LLAMA_REQUEST = {"prompt": "<|begin_of_text|>Say hi", "max_gen_len": 64, "temperature": 0.5}


def test_other_model_families_get_usage_from_bedrocks_headers(instrument: Any) -> None:
    """A Llama body on InvokeModel, as LiteLLM sends it: no content decoded, the token counts
    from the headers Bedrock adds to every model's answer."""
    inst = instrument()
    answer = {"generation": "Hi!", "prompt_token_count": 11, "generation_token_count": 3, "stop_reason": "stop"}
    ex = Exchange("POST", f"/model/{LLAMA}/invoke", json.dumps(LLAMA_REQUEST), 200,
                  [("content-type", "application/json"), ("X-Amzn-Bedrock-Input-Token-Count", "11"),
                   ("X-Amzn-Bedrock-Output-Token-Count", "3"), ("X-Amzn-Bedrock-Invocation-Latency", "210")],
                  json.dumps(answer).encode())
    with ReplayServer([ex]) as srv:
        assert httpx.post(f"{srv.url}/model/{LLAMA}/invoke", json=LLAMA_REQUEST).json() == answer
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    assert (a["gen_ai.request.model"], a["gen_ai.provider.name"]) == (LLAMA, "aws.bedrock")
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (11, 3)


def test_other_model_families_get_usage_from_the_streams_invocation_metrics(instrument: Any) -> None:
    inst = instrument(capture_mode="SPAN_ONLY")
    pieces = [{"generation": "Hi", "prompt_token_count": 11, "generation_token_count": 1, "stop_reason": None},
              {"generation": "!", "prompt_token_count": None, "generation_token_count": 2, "stop_reason": "stop",
               "amazon-bedrock-invocationMetrics": {"inputTokenCount": 11, "outputTokenCount": 2,
                                                    "invocationLatency": 190, "firstByteLatency": 120}}]
    body = b"".join(chunk(p) for p in pieces)
    path = f"/model/{LLAMA}/invoke-with-response-stream"
    with ReplayServer([Exchange("POST", path, json.dumps(LLAMA_REQUEST), 200, [("content-type", EVENTSTREAM)],
                                body)]) as srv, httpx.stream("POST", srv.url + path, json=LLAMA_REQUEST) as response:
        assert b"".join(response.iter_bytes()) == body
    (span,) = inst.genai_spans()
    a = dict(span.attributes)
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (11, 2)
    assert a["gen_ai.request.stream"] is True
    assert "gen_ai.output.messages" not in a  # another family's content: not decoded
