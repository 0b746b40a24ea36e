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
from lqo.instrumentation.httpx._record import CallRecord
from lqo.instrumentation.httpx._streams import BATCH_BYTES, StreamParser
from lqo.instrumentation.httpx.decoders import Router

from .replay import RECORDINGS, ReplayServer, load_cassette, stream_chunks

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


def test_a_streamed_text_past_the_limit_is_no_longer_kept() -> None:
    """The decoder, fed the long stream in pieces (the instrumentation's batches, and smaller),
    event by event or in runs: it holds the limit's worth of text and at most one feed's more
    (a run is read whole), not the whole answer, and what it holds gives the same recorded
    attribute as the whole text would."""
    ex = _long_stream(2000)
    family, operation = Router().route("/v1/chat/completions")  # type: ignore[misc]
    limit = 1024
    outputs = []
    for use_runs in (False, True):
        for piece in (BATCH_BYTES, 1000, 7):
            rec = CallRecord(operation, True)
            rec.text_limit = limit
            family.request(operation, json.loads(ex.request_body), rec)
            acc = family.stream(operation, rec)
            parser = StreamParser("sse", "", acc.event, acc.skip, acc.quiet, acc.run if use_runs else None)
            for start in range(0, len(ex.body), piece):
                parser.feed(ex.body[start:start + piece])
            parser.close()
            acc.finish()
            held = rec.output_messages[0]["parts"][0]["content"]
            assert limit <= len(held) < limit + piece
            assert len(held) < len(ex.body) // 100  # (the whole answer: ~2% of the bytes)
            outputs.append(bounded_json(rec.output_messages, limit))
    assert len(set(outputs)) == 1 and outputs[0][1] is True
