"""Captured content is bounded per attribute (``content_max_bytes``, ``LQO_GENAI_CONTENT_MAX_BYTES``):
valid semconv JSON of at most that many UTF-8 bytes, long strings cut first with a marker, the
span flagged ``lqo.content.truncated``. A streamed text stops being kept (and decoded) once it
is longer than the limit, which must not change what is recorded."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import openai
import pytest

from lqo.instrumentation.httpx._content import TRUNCATION_MARKER, bounded_json
from lqo.instrumentation.httpx._record import TEXT_UNLIMITED, CallRecord
from lqo.instrumentation.httpx._streams import BATCH_BYTES, StreamParser
from lqo.instrumentation.httpx.decoders import Router

from .replay import RECORDINGS, Exchange, ReplayServer, load_cassette, stream_chunks

CHAT_STREAM = RECORDINGS / "openai" / "openai__test_chat_completion_streaming.yaml"
ARGS = {"model": "gpt-4", "messages": [{"role": "user", "content": "Say this is a test"}],
        "stream": True, "stream_options": {"include_usage": True}}


def _long_stream(events: int) -> Any:
    """The recorded stream with its first content event repeated: a long answer, real bytes."""
    recorded = load_cassette(CHAT_STREAM)[0]
    chunks = stream_chunks(recorded.body, recorded.content_type)
    body = chunks[0] + chunks[1] * events + b"".join(chunks[2:])
    return dataclasses.replace(recorded, body=body)


def _output(text: str, finish: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "parts": [{"type": "text", "content": text}], "finish_reason": finish}]


def test_bounded_json_keeps_small_values_whole() -> None:
    value = _output("héllo", "stop")
    text, cut = bounded_json(value, 1024)
    assert (json.loads(text), cut) == (value, False)


@pytest.mark.parametrize("limit", [1000, 4096])
@pytest.mark.parametrize("char", ["a", "é", "語", "😀"], ids=["ascii", "2-byte", "3-byte", "4-byte"])
def test_bounded_json_cuts_long_strings_to_the_byte_limit(limit: int, char: str) -> None:
    value = [{"role": "user", "parts": [{"type": "text", "content": char * 5000}, {"type": "text", "content": "short"}]},
             {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": {"q": "x" * 9000}}]}]
    text, cut = bounded_json(value, limit)
    assert cut and len(text.encode()) <= limit
    got = json.loads(text)  # still valid JSON, roles and part types kept
    assert [m["role"] for m in got] == ["user", "assistant"]
    assert [p["type"] for p in got[0]["parts"]] == ["text", "text"]
    first = got[0]["parts"][0]["content"]
    assert first.endswith(TRUNCATION_MARKER) and set(first[: -len(TRUNCATION_MARKER)]) == {char}
    assert got[0]["parts"][1]["content"] == "short"


def test_bounded_json_that_cannot_keep_the_structure_says_so() -> None:
    value = [{"role": "user", "parts": [{"type": "text", "content": str(i)}]} for i in range(200)]
    text, cut = bounded_json(value, 256)
    assert cut and json.loads(text) == [{"type": "text", "content": TRUNCATION_MARKER}]


@pytest.mark.parametrize("limit", [256, 2048])
def test_a_long_streamed_answer_is_recorded_cut_to_the_limit(instrument: Any, limit: int) -> None:
    """End to end, the real SDK: the span's output is the whole answer's bounded JSON, though the
    decoder stopped keeping the text part way (the answer is ~5× the larger limit)."""
    ex = _long_stream(2000)
    inst = instrument(capture_mode="SPAN_ONLY", content_max_bytes=limit)
    with ReplayServer([ex]) as srv:
        client = openai.OpenAI(base_url=srv.url + "/v1", api_key="k", max_retries=0)
        chunks = list(client.chat.completions.create(**ARGS))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)  # what the app read
    finish = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
    assert len(text) > 4 * 2048
    (span,) = inst.genai_spans()
    recorded = span.attributes["gen_ai.output.messages"]
    assert recorded == bounded_json(_output(text, finish), limit)[0]
    assert len(recorded.encode()) <= limit and span.attributes["lqo.content.truncated"] is True
    kept = json.loads(recorded)[0]["parts"][0]["content"]
    assert kept.endswith(TRUNCATION_MARKER) and text.startswith(kept[: -len(TRUNCATION_MARKER)])


def _repeated(path: str, marker: bytes, events: int) -> Exchange:
    """A recorded stream with its first event holding ``marker`` repeated: a long answer."""
    recorded = next(ex for ex in load_cassette(RECORDINGS / path) if ex.streamed)
    chunks = stream_chunks(recorded.body, recorded.content_type)
    at = next(i for i, c in enumerate(chunks) if marker in c and i > 0)
    body = b"".join(chunks[:at]) + chunks[at] * events + b"".join(chunks[at + 1:])
    return dataclasses.replace(recorded, body=body)


def _gemini_stream(events: int) -> Exchange:
    def chunk(text: str, finish: str | None = None) -> bytes:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return b"data: " + json.dumps({"candidates": [candidate], "modelVersion": "gemini-2.0-flash",
                                       "responseId": "r-1"}).encode() + b"\n\n"

    body = chunk("Once") + chunk(" upon a time") * events + chunk(".", "STOP")
    return Exchange("POST", "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
                    json.dumps({"contents": [{"role": "user", "parts": [{"text": "a story"}]}]}), 200,
                    [("content-type", "text/event-stream")], body)


STREAMS = {
    "openai": lambda: _repeated("openai/openai__test_chat_completion_streaming.yaml", b'"content":"', 2000),
    "anthropic": lambda: _repeated("anthropic/anthropic__test_anthropic_prompt_caching_stream_legacy.yaml",
                                   b'"text_delta"', 2000),
    "ollama": lambda: _repeated("ollama/ollama__test_ollama_streaming_chat_legacy.yaml", b'"done":false', 2000),
    "gemini": lambda: _gemini_stream(1000),
}


def _decoded(ex: Exchange, limit: int, piece: int, use_runs: bool) -> CallRecord:
    family, operation = Router().route(ex.path.split("?", 1)[0])  # type: ignore[misc]
    rec = CallRecord(operation, True)
    rec.text_limit = limit
    family.request(operation, json.loads(ex.request_body), rec)
    acc = family.stream(operation, rec)
    kind = "sse" if "event-stream" in ex.content_type else "ndjson"
    parser = StreamParser(kind, "", acc.event, getattr(acc, "skip", None), getattr(acc, "quiet", None),
                          getattr(acc, "run", None) if use_runs else None)
    for start in range(0, len(ex.body), piece):
        parser.feed(ex.body[start:start + piece])
    parser.close()
    acc.finish()
    return rec


def _longest_text(messages: Any) -> int:
    return max(len(p.get("content", "")) for m in messages for p in m["parts"] if isinstance(p.get("content"), str))


@pytest.mark.parametrize("name", list(STREAMS))
def test_a_streamed_text_past_the_limit_is_no_longer_kept(name: str) -> None:
    """Each family's decoder, fed a long answer in pieces (the instrumentation's batches, and
    smaller), event by event or in runs: it holds the limit's worth of text and at most one feed's
    more (a run is read whole), not the whole answer; and what it holds is recorded exactly as the
    whole answer is."""
    ex = STREAMS[name]()
    limit = 1024
    whole = _decoded(ex, TEXT_UNLIMITED, BATCH_BYTES, True).output_messages
    assert _longest_text(whole) > 8 * limit
    expected = bounded_json(whole, limit)
    assert expected[1] is True
    for use_runs in (False, True):
        for piece in (BATCH_BYTES, 1000, 7):
            held = _decoded(ex, limit, piece, use_runs).output_messages
            assert limit <= _longest_text(held) < limit + piece, (use_runs, piece)
            assert bounded_json(held, limit) == expected, (use_runs, piece)
