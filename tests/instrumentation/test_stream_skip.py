"""Streamed events that cannot change the telemetry are not decoded (``Stream.skip``).

With content capture off, a stream's content deltas are most of its events and most of the
telemetry thread's work per chunk (a JSON decode each). Skipping them must leave every recorded
value as it was: each streamed recording is decoded with and without the skip, in both capture
modes, fed whole and in small pieces, and the call records must be equal.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from lqo.instrumentation.httpx._record import CallRecord
from lqo.instrumentation.httpx._streams import StreamParser
from lqo.instrumentation.httpx.decoders import Router

from .replay import RECORDINGS, Exchange, load_cassette


def _streamed_exchanges() -> list[tuple[str, Exchange]]:
    out = []
    for path in sorted(RECORDINGS.glob("*/*.yaml")):
        for i, ex in enumerate(load_cassette(path)):
            if ex.method == "POST" and ex.status == 200 and ex.streamed:
                out.append((f"{path.parent.name}/{path.stem}#{i}", ex))
    return out


STREAMED = _streamed_exchanges()
# Delta texts that a byte-level reader must give back exactly as the JSON decoder does.
TRICKY_TEXTS = ["plain", 'a "quoted" \\ back\nslash', "é ü 日本", "emoji 😀", "", "}],\"x\":{"]


def _snapshot(rec: CallRecord) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in CallRecord.__slots__}


def _stream_for(ex: Exchange, capture: bool) -> tuple[CallRecord, Any]:
    """The call record (the request decoded into it) and the stream decoder, as the
    instrumentation makes them for the exchange's path."""
    family, operation = Router().route(ex.path.split("?", 1)[0])  # type: ignore[misc]
    rec = CallRecord(operation, capture)
    body = json.loads(ex.request_body) if ex.request_body else None
    if isinstance(body, dict):
        family.request(operation, body, rec)
    return rec, family.stream(operation, rec)


def _decode(ex: Exchange, capture: bool, skip: bool, piece: int | None = None) -> tuple[dict[str, Any], int]:
    """The call record of a streamed exchange, and how many of its events were decoded; with
    ``skip``, the parser is given the stream's ``skip`` and ``quiet`` as the instrumentation
    gives them."""
    rec, acc = _stream_for(ex, capture)
    kind = "sse" if "event-stream" in ex.content_type else "ndjson"
    encoding = next((v for k, v in ex.headers if k.lower() == "content-encoding"), "")
    parser = StreamParser(kind, encoding, acc.event, *((getattr(acc, "skip", None), getattr(acc, "quiet", None),
                                                        getattr(acc, "run", None)) if skip else ()))
    step = piece or len(ex.body) or 1
    for start in range(0, len(ex.body), step):
        parser.feed(ex.body[start:start + step])
    parser.close()
    acc.finish()
    return _snapshot(rec), parser.events


def test_there_are_streamed_recordings_of_every_family() -> None:
    families = {Router().route(ex.path.split("?", 1)[0])[0].name for _, ex in STREAMED}  # type: ignore[index]
    assert {"openai.chat_completions", "anthropic.messages", "ollama"} <= families, families


@pytest.mark.parametrize("capture", [False, True], ids=["no_content", "content"])
@pytest.mark.parametrize(("name", "ex"), STREAMED, ids=[n for n, _ in STREAMED])
def test_skipping_changes_nothing_recorded(name: str, ex: Exchange, capture: bool) -> None:
    full, decoded_all = _decode(ex, capture, skip=False)
    assert decoded_all > 0
    fast, decoded = _decode(ex, capture, skip=True)
    assert fast == full
    assert decoded <= decoded_all
    for piece in random.Random(name).sample(range(3, 400), 3):  # message boundaries split across feeds
        assert _decode(ex, capture, skip=True, piece=piece) == (full, decoded)


def _one_choice(ex: Exchange) -> bool:
    body = json.loads(ex.request_body) if ex.request_body else {}
    return not isinstance(body, dict) or body.get("n") in (None, 1)


@pytest.mark.parametrize(("name", "ex"), STREAMED, ids=[n for n, _ in STREAMED])
def test_which_events_are_decoded(name: str, ex: Exchange) -> None:
    """Capture off: a one-choice stream decodes at most its identity, finish reason and usage
    events (three), whatever its length. Capture on: the Responses API skips its deltas (its
    last event restates them); the others read text-only deltas from their bytes."""
    family = Router().route(ex.path.split("?", 1)[0])[0].name  # type: ignore[index]
    _, decoded_all = _decode(ex, capture=False, skip=False)
    _, decoded = _decode(ex, capture=False, skip=True)
    if _one_choice(ex):
        assert decoded <= 3 < decoded_all
    else:
        assert decoded == decoded_all
    _, decoded_all = _decode(ex, capture=True, skip=False)
    _, decoded = _decode(ex, capture=True, skip=True)
    if family == "openai.responses":
        assert decoded < decoded_all
    else:  # fewer where the stream has text deltas in the provider's own form (one choice)
        assert decoded <= decoded_all


def _chat_stream(chunks: list[dict[str, Any]], separators: tuple[str, str] = (",", ":")) -> bytes:
    return b"".join(b"data: " + json.dumps(c, separators=separators).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def _chunk(content: str | None, finish: str | None = None, index: int = 0, usage: Any = None) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m-1",
            "choices": [{"index": index, "delta": {"content": content} if content is not None else {},
                         "finish_reason": finish}], "usage": usage}


def _decode_chat(body: bytes, request: dict[str, Any]) -> tuple[CallRecord, int]:
    ex = Exchange("POST", "/v1/chat/completions", json.dumps(request), 200,
                  [("content-type", "text/event-stream")], body)
    snapshot, decoded = _decode(ex, capture=False, skip=True)
    full, decoded_all = _decode(ex, capture=False, skip=False)
    assert snapshot == full
    for piece in (1, 7, 50):
        assert _decode(ex, capture=False, skip=True, piece=piece) == (full, decoded)
    rec = CallRecord("chat", False)
    for k, v in snapshot.items():
        setattr(rec, k, v)
    return rec, decoded_all - decoded


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")], ids=["compact", "spaced"])
def test_finish_reason_and_usage_chunks_are_decoded_however_spaced(separators: tuple[str, str]) -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    body = _chat_stream([_chunk(""), _chunk("a"), _chunk("b"), _chunk(None, "length"),
                         {**_chunk(None), "choices": [], "usage": usage}], separators)
    rec, skipped = _decode_chat(body, {"model": "m", "stream": True})
    assert rec.finish_reasons == ["length"]
    assert (rec.input_tokens, rec.output_tokens) == (5, 7)
    assert skipped == 2  # "a" and "b"


def test_quoted_key_names_inside_content_do_not_confuse_the_skip() -> None:
    """Content that spells a finish reason is a JSON string (its quotes escaped): skipped."""
    body = _chat_stream([_chunk(""), _chunk('{"finish_reason":"stop","usage":{}}'), _chunk(None, "stop")])
    rec, skipped = _decode_chat(body, {"model": "m", "stream": True})
    assert rec.finish_reasons == ["stop"]
    assert skipped == 1


def test_several_choices_are_never_skipped() -> None:
    body = _chat_stream([_chunk("", index=0), _chunk("", index=1), _chunk("x", index=1), _chunk("y", index=0),
                         _chunk(None, "stop", index=0), _chunk(None, "length", index=1)])
    rec, skipped = _decode_chat(body, {"model": "m", "n": 2, "stream": True})
    assert rec.finish_reasons == ["stop", "length"]
    assert skipped == 0


def test_chunks_before_the_response_identity_are_decoded() -> None:
    """Azure sends a first chunk with no choices and an empty model (prompt filter results)."""
    first = {"id": "", "object": "", "model": "", "choices": [], "prompt_filter_results": []}
    body = _chat_stream([first, _chunk(""), _chunk("a"), _chunk(None, "stop")])
    rec, skipped = _decode_chat(body, {"model": "m", "stream": True})
    assert rec.response_model == "m-1"
    assert rec.attrs.get("gen_ai.response.id") == "chatcmpl-1"
    assert rec.finish_reasons == ["stop"]
    assert skipped == 1


def test_a_broken_stream_keeps_its_choice() -> None:
    """A stream cut before its finish reason still reports the choice (as "error")."""
    body = _chat_stream([_chunk(""), _chunk("a"), _chunk("b")])[: -len(b"data: [DONE]\n\n")]
    rec, skipped = _decode_chat(body, {"model": "m", "stream": True})
    assert rec.finish_reasons == ["error"]
    assert skipped == 2



def test_legacy_completions_stream_skips_text_chunks() -> None:
    def chunk(text: str, finish: str | None = None) -> dict[str, Any]:
        return {"id": "cmpl-1", "object": "text_completion", "model": "m-1",
                "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}]}

    body = _chat_stream([chunk("a"), chunk("b"), chunk("c"), chunk("", "length")])
    ex = Exchange("POST", "/v1/completions", json.dumps({"model": "m", "prompt": "p", "stream": True}), 200,
                  [("content-type", "text/event-stream")], body)
    fast, decoded = _decode(ex, capture=False, skip=True)
    full, decoded_all = _decode(ex, capture=False, skip=False)
    assert fast == full
    assert fast["finish_reasons"] == ["length"]
    assert (decoded_all, decoded) == (4, 2)


def test_ollama_lines_that_matter_are_decoded() -> None:
    """Content lines are passed over (even one spelling '"done": true' in its text); an error
    line mid-stream and the last line are decoded."""
    def line(obj: dict[str, Any]) -> bytes:
        return json.dumps(obj).encode() + b"\n"

    def content(text: str) -> bytes:
        return line({"model": "llama3", "message": {"role": "assistant", "content": text}, "done": False})

    final = {"model": "llama3", "message": {"role": "assistant", "content": ""}, "done": True,
             "done_reason": "stop", "prompt_eval_count": 9, "eval_count": 4}
    body = (content("a") + content('"done": true') + content("b") + line({"error": "overloaded"}) + content("c")
            + line(final))
    ex = Exchange("POST", "/api/chat", json.dumps({"model": "llama3", "messages": [], "stream": True}), 200,
                  [("content-type", "application/x-ndjson")], body)
    full, decoded_all = _decode(ex, capture=False, skip=False)
    for piece in (None, 1, 9, 64):
        assert _decode(ex, capture=False, skip=True, piece=piece) == (full, 3)  # first, error, last
    assert decoded_all == 6
    assert full["attrs"]["error.type"] == "stream_error"
    assert (full["input_tokens"], full["output_tokens"], full["finish_reasons"]) == (9, 4, ["stop"])


QUIET = [(n, ex) for n, ex in STREAMED if hasattr(_stream_for(ex, capture=False)[1], "quiet") and _one_choice(ex)]


@pytest.mark.parametrize(("name", "ex"), QUIET, ids=[n for n, _ in QUIET])
def test_quiet_streams_are_passed_over_in_one_search(name: str, ex: Exchange) -> None:
    """Where a decoder gives the parser its pattern (``quiet``), content messages are passed over
    by the search, not asked about one by one (what makes the skip cheap per chunk)."""
    _, acc = _stream_for(ex, capture=False)
    asked = []

    def skip(name: str, payload: bytes) -> bool:
        answer = acc.skip(name, payload)
        asked.append(answer)
        return answer

    parser = StreamParser("sse" if "event-stream" in ex.content_type else "ndjson", "", acc.event, skip, acc.quiet)
    parser.feed(ex.body)
    parser.close()
    assert parser.events <= 3
    assert sum(asked) <= 1, asked  # at most the feed's first message is asked and skipped


def _sse(data: dict[str, Any], event: str | None, space: str = " ") -> bytes:
    return _sse_raw(json.dumps(data), event, space)


def _sse_raw(data: str, event: str | None, space: str = " ") -> bytes:
    head = f"event:{space}{event}\n" if event else ""
    return (head + "data: " + data + "\n\n").encode()


def test_anthropic_messages_that_matter_are_decoded() -> None:
    """Content events are passed over, with or without the space after "event:"; a message with
    no event line (a proxy's error) and every non-content event are decoded."""
    start = {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 5}}}
    delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}
    body = (_sse(start, "message_start")
            + _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                      "content_block_start")
            + _sse(delta, "content_block_delta") + _sse(delta, "content_block_delta", space="")
            + _sse({"type": "ping"}, "ping")
            + _sse({"type": "error", "error": {"type": "overloaded_error"}}, None)
            + _sse(delta, "content_block_delta")
            + _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
                      "message_delta")
            + _sse({"type": "message_stop"}, "message_stop"))
    ex = Exchange("POST", "/v1/messages", json.dumps({"model": "claude-x", "messages": [], "stream": True}), 200,
                  [("content-type", "text/event-stream")], body)
    full, decoded_all = _decode(ex, capture=False, skip=False)
    for piece in (None, 1, 13, 100):
        assert _decode(ex, capture=False, skip=True, piece=piece) == (full, 3)  # start, error, delta (message_stop changes nothing)
    assert decoded_all == 9
    assert full["attrs"]["error.type"] == "overloaded_error"
    assert (full["input_tokens"], full["output_tokens"], full["finish_reasons"]) == (5, 9, ["end_turn"])


def test_responses_events_that_matter_are_decoded() -> None:
    """Delta events are passed over; created, an error without "response." and the terminal
    event are decoded."""
    response = {"id": "resp_1", "model": "gpt-x", "status": "completed", "output": [],
                "usage": {"input_tokens": 3, "output_tokens": 8}}
    delta = {"type": "response.output_text.delta", "delta": "hi"}
    body = (_sse({"type": "response.created", "response": {**response, "status": "in_progress"}}, "response.created")
            + _sse(delta, "response.output_text.delta") + _sse(delta, "response.output_text.delta", space="")
            + _sse({"type": "error", "code": "server_error"}, "error")
            + _sse(delta, "response.output_text.delta")
            + _sse({"type": "response.completed", "response": response}, "response.completed"))
    ex = Exchange("POST", "/v1/responses", json.dumps({"model": "gpt-x", "input": "q", "stream": True}), 200,
                  [("content-type", "text/event-stream")], body)
    full, decoded_all = _decode(ex, capture=False, skip=False)
    for capture in (False, True):
        expected, _ = _decode(ex, capture=capture, skip=False)
        for piece in (None, 1, 17, 120):
            assert _decode(ex, capture=capture, skip=True, piece=piece) == (expected, 3)  # created, error, completed
    assert decoded_all == 6
    assert full["attrs"]["error.type"] == "server_error"
    assert (full["input_tokens"], full["output_tokens"], full["response_model"]) == (3, 8, "gpt-x")


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_text_deltas_read_from_bytes_with_capture_on(text: str) -> None:
    """Capture on: a text-only delta in OpenAI's compact form is read from its string literal;
    escapes, non-ASCII (raw and \\u-escaped, surrogate pairs) and JSON-looking text come out as
    the whole decode gives them. Other shapes (role, tool calls, refusal) are decoded whole."""
    def dumps(chunk: dict[str, Any], ascii_only: bool) -> bytes:
        return b"data: " + json.dumps(chunk, separators=(",", ":"), ensure_ascii=ascii_only).encode() + b"\n\n"

    role = {**_chunk(None), "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}]}
    tool = {**_chunk(None), "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        "logprobs": None, "finish_reason": None}]}
    refusal = {**_chunk(None), "choices": [{"index": 0, "delta": {"refusal": "no"}, "logprobs": None,
                                            "finish_reason": None}]}
    for ascii_only in (True, False):
        text_chunk = {**_chunk(None), "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None,
                                                   "finish_reason": None}]}
        body = b"".join(dumps(c, ascii_only) for c in (role, text_chunk, tool, text_chunk, refusal, text_chunk,
                                                       _chunk(None, "tool_calls")))
        ex = Exchange("POST", "/v1/chat/completions", json.dumps({"model": "m", "stream": True}), 200,
                      [("content-type", "text/event-stream")], body)
        full, decoded_all = _decode(ex, capture=True, skip=False)
        for piece in (None, 5, 64):
            assert _decode(ex, capture=True, skip=True, piece=piece) == (full, decoded_all - 3)
        (output,) = full["output_messages"]
        assert [p.get("content") for p in output["parts"][:2]] == [text * 3, "no"]  # the text, the refusal
        assert output["parts"][2]["name"] == "f"


@pytest.mark.parametrize("name", ["openai/openai__test_chat_completion_streaming#0",
                                  "anthropic/anthropic__test_anthropic_message_streaming_legacy#0",
                                  "ollama/ollama__test_ollama_streaming_chat_legacy#0",
                                  "ollama/ollama__test_ollama_streaming_generation_legacy#0"])
def test_a_recorded_text_stream_is_read_from_bytes_with_capture_on(name: str) -> None:
    (ex,) = [ex for n, ex in STREAMED if n == name]
    full, decoded_all = _decode(ex, capture=True, skip=False)
    fast, decoded = _decode(ex, capture=True, skip=True)
    assert fast == full
    assert any(p.get("content") for p in full["output_messages"][0]["parts"])
    assert decoded <= 3 < decoded_all



@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_anthropic_text_deltas_read_from_bytes_with_capture_on(text: str) -> None:
    """Text deltas of two blocks (raw and \\u-escaped, Anthropic's padding before the brace),
    thinking and tool-input deltas read from bytes; same record either way."""
    def delta(index: int, kind: str, key: str, value: str, ascii_only: bool, pad: str = "") -> bytes:
        data = json.dumps({"type": "content_block_delta", "index": index, "delta": {"type": kind, key: value}},
                          separators=(",", ":"), ensure_ascii=ascii_only)
        return _sse_raw(data[:-1] + pad + "}", "content_block_delta")

    start = {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 5}}}
    for ascii_only in (True, False):
        body = (_sse(start, "message_start")
                + _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
                       "content_block_start")
                + delta(0, "thinking_delta", "thinking", "hmm", ascii_only)
                + _sse({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
                       "content_block_start")
                + delta(1, "text_delta", "text", text, ascii_only) + delta(1, "text_delta", "text", text, ascii_only, "   ")
                + _sse({"type": "content_block_start", "index": 2,
                        "content_block": {"type": "tool_use", "id": "t1", "name": "f", "input": {}}}, "content_block_start")
                + delta(2, "input_json_delta", "partial_json", '{"a": 1}', ascii_only)
                + _sse({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
                       "message_delta"))
        ex = Exchange("POST", "/v1/messages", json.dumps({"model": "claude-x", "messages": [], "stream": True}), 200,
                      [("content-type", "text/event-stream")], body)
        full, decoded_all = _decode(ex, capture=True, skip=False)
        for piece in (None, 7, 90):
            assert _decode(ex, capture=True, skip=True, piece=piece) == (full, decoded_all - 4)
        parts = full["output_messages"][0]["parts"]
        assert [p["type"] for p in parts] == ["reasoning", "text", "tool_call"]
        assert parts[1]["content"] == text * 2
        assert parts[2]["arguments"] == {"a": 1}


@pytest.mark.parametrize("text", TRICKY_TEXTS)
@pytest.mark.parametrize("operation", ["chat", "generate"])
def test_ollama_text_lines_read_from_bytes_with_capture_on(text: str, operation: str) -> None:
    def line(obj: dict[str, Any], ascii_only: bool) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=ascii_only).encode() + b"\n"

    def piece(value: str, thinking: str | None = None) -> dict[str, Any]:
        head = {"model": "llama3", "created_at": "2024-05-24T20:26:46.294874Z"}
        if operation == "chat":
            msg = {"role": "assistant", "content": value, **({"thinking": thinking} if thinking else {})}
            return {**head, "message": msg, "done": False}
        return {**head, "response": value, **({"thinking": thinking} if thinking else {}), "done": False}

    final = {**piece(""), "done": True, "done_reason": "stop", "prompt_eval_count": 9, "eval_count": 4}
    for ascii_only in (True, False):
        body = b"".join(line(o, ascii_only) for o in (piece(""), piece("", thinking="hm"), piece("", thinking="m"),
                                                      piece(text), piece(text), final))
        ex = Exchange("POST", f"/api/{operation}", json.dumps({"model": "llama3", "stream": True}), 200,
                      [("content-type", "application/x-ndjson")], body)
        full, decoded_all = _decode(ex, capture=True, skip=False)
        for size in (None, 3, 40):
            assert _decode(ex, capture=True, skip=True, piece=size) == (full, decoded_all - 4)
        contents = [p.get("content") for p in full["output_messages"][0]["parts"]]
        assert text * 2 in contents and "hmm" in contents


def _read_either_way(ex: Exchange, pieces: tuple[int | None, ...] = (None, 1, 9, 70)) -> tuple[dict[str, Any], int, int]:
    """Capture on: the record with every event decoded must equal the record with text read
    from the bytes, fed whole and in pieces. Returns it, and the events decoded each way."""
    full, decoded_all = _decode(ex, capture=True, skip=False)
    fast, decoded = _decode(ex, capture=True, skip=True)
    assert fast == full
    for piece in pieces:
        assert _decode(ex, capture=True, skip=True, piece=piece) == (full, decoded)
    return full, decoded_all, decoded


def _compact(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def test_text_deltas_with_a_role_in_each_are_read_from_bytes() -> None:
    """OpenAI-compatible servers that restate the role in every delta and send no logprobs
    (Ollama's /v1, among others) are read from the bytes too."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-622", "object": "chat.completion.chunk", "created": 1735000000, "model": "llama3.2",
                "system_fingerprint": "fp_ollama", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    texts = ["The", " sky", " is", ' "blue"', "."]
    usage = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
    body = b"".join(b"data: " + _compact(c) + b"\n\n" for c in (
        [chunk({"role": "assistant", "content": t}) for t in texts]
        + [chunk({"role": "assistant", "content": ""}, "stop"), {**chunk({}), "choices": [], "usage": usage}]))
    ex = Exchange("POST", "/v1/chat/completions", json.dumps({"model": "llama3.2", "stream": True}), 200,
                  [("content-type", "text/event-stream")], body + b"data: [DONE]\n\n")
    full, decoded_all, decoded = _read_either_way(ex)
    assert (decoded_all, decoded) == (7, 3)  # the first chunk (identity), the finish, the usage
    assert full["output_messages"][0]["parts"] == [{"type": "text", "content": "".join(texts)}]
    assert (full["input_tokens"], full["output_tokens"], full["finish_reasons"]) == (9, 5, ["stop"])


def test_openai_text_chunks_whose_other_bytes_differ_are_one_run() -> None:
    """The run reads later chunks by comparing their bytes with the first one's; chunks that
    differ elsewhere (obfuscation padding, a changing ``created``, a role in some deltas, no
    logprobs key) are still read in the same run, and every piece is kept in order."""
    def chunk(content: str, n: int) -> dict[str, Any]:
        delta = {"role": "assistant", "content": content} if n % 3 == 0 else {"content": content}
        choice = {"index": 0, "delta": delta, "finish_reason": None}
        if n % 4:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
        return {"id": "c-1", "object": "chat.completion.chunk", "created": 100 + n // 5, "model": "m-1",
                "choices": [choice], "usage": None, "obfuscation": "x" * (n % 7)}

    texts = [f"piece {n} \"q\" é\n" for n in range(60)]
    body = b"".join(b"data: " + _compact(chunk(t, n)) + b"\n\n" for n, t in enumerate(["", *texts]))
    body += b"data: " + _compact({**chunk("", 0), "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    ex = Exchange("POST", "/v1/chat/completions", json.dumps({"model": "m", "stream": True}), 200,
                  [("content-type", "text/event-stream")], body + b"\n\ndata: [DONE]\n\n")
    full, decoded_all, decoded = _read_either_way(ex)
    assert (decoded_all, decoded) == (62, 2)  # the first chunk (identity) and the finish
    assert full["output_messages"][0]["parts"] == [{"type": "text", "content": "".join(texts)}]

    _, acc = _stream_for(ex, capture=True)
    runs = []

    def run(buf: bytes, start: int, end: int) -> int:
        stop = acc.run(buf, start, end)
        runs.append(buf.count(b"\n\n", start, stop))
        return stop

    parser = StreamParser("sse", "", acc.event, acc.skip, acc.quiet, run)
    parser.feed(body)
    assert [n for n in runs if n] == [60]


@pytest.mark.parametrize(("kind", "tool"), [("text", 0), ("tool call", 0), ("tool call", 3)])
def test_openai_run_literals_are_found_by_their_place_not_their_key(kind: str, tool: int) -> None:
    """A run's literals are found without counting its messages: by the structural bytes before
    each (from the ``[`` of its choices or tool calls), which a flat value cannot hold (no brackets
    or braces) and a text cannot (its quotes are escaped). Flat top-level keys named
    ``content``/``arguments`` and texts that spell out the structure must neither add pieces nor
    lose any."""
    tricky = ['"delta":{"content":"x"}', '{"function":{"arguments":"y"}}', "plain", '\\"delta":{', "z",
              '[{"index":0,"delta":{"content":"q"}}]', f'[{{"index":{tool},"function":{{"arguments":"w"}}}}]']

    def chunk(piece: str, n: int) -> dict[str, Any]:
        delta: dict[str, Any] = {"content": piece}
        if kind == "tool call":
            delta = {"tool_calls": [{"index": tool, "function": {"arguments": piece}}]}
        return {"id": "c-1", "object": "chat.completion.chunk", "created": 1, "model": "m-1",
                **({"content": f"flat {n}", "arguments": "flat"} if n % 2 else {}),
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}], "usage": None}

    first = {"id": "c-1", "object": "chat.completion.chunk", "created": 1, "model": "m-1",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""} if kind == "text" else
                          {"tool_calls": [{"index": tool, "id": "call_1", "type": "function",
                                           "function": {"name": "f", "arguments": ""}}]},
                          "logprobs": None, "finish_reason": None}]}
    pieces = tricky * 8
    lines = [_compact(first), *(_compact(chunk(t, n)) for n, t in enumerate(pieces)),
             _compact({**first, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})]
    body = b"".join(b"data: " + line + b"\n\n" for line in lines)
    ex = Exchange("POST", "/v1/chat/completions", json.dumps({"model": "m", "stream": True}), 200,
                  [("content-type", "text/event-stream")], body + b"data: [DONE]\n\n")
    full, decoded_all, decoded = _read_either_way(ex)
    assert (decoded_all, decoded) == (len(pieces) + 2, 2)  # every piece read from the bytes
    part = full["output_messages"][0]["parts"][0]
    assert part == ({"type": "text", "content": "".join(pieces)} if kind == "text" else
                    {"type": "tool_call", "id": "call_1", "name": "f", "arguments": "".join(pieces)})


@pytest.mark.parametrize("literals", [
    [b'"a\\ud83d"', b'"\\ude00b"'],  # an escaped surrogate pair split across two deltas
    [b'"x\\u12"', b'"34y"'],  # a cut escape (refused) before digits
    [b'"tab\\t"', b'"\\\\u0041"', b'"q\\"\\/"'],  # two-character escapes; an escaped backslash before u
], ids=["split-surrogates", "cut-escape", "escapes"])
def test_a_run_decodes_its_literals_as_each_event_would(literals: list[bytes]) -> None:
    """A run's literals are decoded into one string when that cannot differ from decoding each
    (no \\u escape in them), else one by one: the record equals the event-by-event decode."""
    head = b'data: {"id":"c-1","object":"chat.completion.chunk","created":1,"model":"m-1","choices":[{"index":0,"delta":{'
    tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'
    body = head + b'"role":"assistant","content":""' + tail
    body += b"".join(head + b'"content":' + lit + tail for lit in literals * 3)
    body += (b'data: {"id":"c-1","object":"chat.completion.chunk","created":1,"model":"m-1",'
             b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
    ex = Exchange("POST", "/v1/chat/completions", json.dumps({"model": "m", "stream": True}), 200,
                  [("content-type", "text/event-stream")], body)
    full, decoded_all, decoded = _read_either_way(ex)
    assert decoded == 2 and decoded_all > len(literals)  # (the first and the finish; the rest read in runs)
    assert full["output_messages"][0]["parts"][0]["content"]


def test_text_chunks_that_carry_anything_else_are_decoded() -> None:
    """A text chunk that also carries usage (servers that report it in every chunk), a nested
    value or spaces is decoded whole; the text chunks around it are still read from bytes."""
    def chunk(content: str, **extra: Any) -> dict[str, Any]:
        return {"id": "c-1", "object": "chat.completion.chunk", "created": 1, "model": "m-1",
                "choices": [{"index": 0, "delta": {"content": content}, "logprobs": None, "finish_reason": None}], **extra}

    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    lines = [_compact(chunk("")), _compact(chunk("a")), _compact(chunk("b", usage=usage)),
             _compact(chunk("c", x_vendor={"queue": 1})), json.dumps(chunk("d")).encode(), _compact(chunk("e")),
             _compact(chunk("f", usage={**usage, "completion_tokens": 7}))]
    body = b"".join(b"data: " + line + b"\n\n" for line in lines)
    ex = Exchange("POST", "/v1/chat/completions", json.dumps({"model": "m", "stream": True}), 200,
                  [("content-type", "text/event-stream")], body)
    full, decoded_all, decoded = _read_either_way(ex)
    assert (decoded_all, decoded) == (7, 5)  # "a" and "e" read from bytes
    assert full["output_messages"][0]["parts"] == [{"type": "text", "content": "abcdef"}]
    assert (full["input_tokens"], full["output_tokens"]) == (3, 7)


@pytest.mark.parametrize("bad", [b'"\\q"', b'"\xff"', b'"tab\there"'], ids=["escape", "utf-8", "control"])
@pytest.mark.parametrize("family", ["openai", "anthropic", "ollama"])
def test_a_text_that_is_not_valid_json_drops_its_event(family: str, bad: bytes) -> None:
    """A literal the JSON decoder refuses (never from a real server): its event is dropped, as
    the whole decode drops it, and the deltas around it are kept, read from bytes."""
    good = [json.dumps(t).encode() for t in ("one", " two", " three", " four")]
    literals = [*good[:2], bad, *good[2:]]
    if family == "openai":
        head = b'data: {"id":"c-1","object":"chat.completion.chunk","created":1,"model":"m-1","choices":[{"index":0,"delta":{"content":'
        tail = b'},"logprobs":null,"finish_reason":null}]}\n\n'
        body = (b"".join(head + lit + tail for lit in [b'""', *literals])
                + head.replace(b'"content":', b'"x":') + b'null},"logprobs":null,"finish_reason":"stop"}]}\n\n')
        ex = Exchange("POST", "/v1/chat/completions", json.dumps({"model": "m", "stream": True}), 200,
                      [("content-type", "text/event-stream")], body)
    elif family == "anthropic":
        start = {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 5}}}
        head = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":'
        body = (_sse(start, "message_start")
                + _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                       "content_block_start")
                + b"".join(head + lit + b"}}\n\n" for lit in literals)
                + _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}},
                       "message_delta"))
        ex = Exchange("POST", "/v1/messages", json.dumps({"model": "claude-x", "messages": [], "stream": True}), 200,
                      [("content-type", "text/event-stream")], body)
    else:
        head = b'{"model":"llama3","created_at":"2024-05-24T20:26:46Z","message":{"role":"assistant","content":'
        final = {"model": "llama3", "created_at": "2024-05-24T20:26:46Z", "message": {"role": "assistant", "content": ""},
                 "done": True, "done_reason": "stop", "eval_count": 4}
        body = b"".join(head + lit + b'},"done":false}\n' for lit in [b'""', *literals]) + _compact(final) + b"\n"
        ex = Exchange("POST", "/api/chat", json.dumps({"model": "llama3", "messages": [], "stream": True}), 200,
                      [("content-type", "application/x-ndjson")], body)
    full, decoded_all, decoded = _read_either_way(ex)
    assert full["output_messages"][0]["parts"][0] == {"type": "text", "content": "one two three four"}
    assert decoded == decoded_all - 4


def test_runs_of_refused_texts_are_read_once() -> None:
    """Good and refused literals in turn, thousands of them: the run is matched once, not again
    from each message after a refused one (which would be quadratic); a block whose every
    delta is refused is not made, as decoding whole makes none."""
    start = {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 5}}}
    head = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,"delta":{"type":"text_delta","text":'
    body = (_sse(start, "message_start")
            + b"".join(head % 0 + (b'"ok"' if i % 2 else b'"\\q"') + b"}}\n\n" for i in range(4000))
            + b"".join(head % 1 + b'"\\q"}}\n\n' for _ in range(3))
            + _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 4}},
                   "message_delta"))
    ex = Exchange("POST", "/v1/messages", json.dumps({"model": "claude-x", "messages": [], "stream": True}), 200,
                  [("content-type", "text/event-stream")], body)
    full, decoded_all, decoded = _read_either_way(ex, pieces=(None, 4096))
    assert [p["content"] for p in full["output_messages"][0]["parts"]] == ["ok" * 2000]
    assert (decoded_all, decoded) == (2002, 2)

    _, acc = _stream_for(ex, capture=True)
    runs = []

    def run(buf: bytes, start: int, end: int) -> int:
        stop = acc.run(buf, start, end)
        runs.append(stop > start)
        return stop

    parser = StreamParser("sse", "", acc.event, acc.skip, acc.quiet, run)
    parser.feed(body)
    assert runs.count(True) == 2  # the 4,000 deltas of block 0, the 3 of block 1
    assert len(runs) <= 4


def test_anthropic_text_deltas_of_blocks_in_turn_are_read_from_bytes() -> None:
    """Text deltas of two blocks in turn: each run is one block's; every piece goes to its own."""
    start = {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 5}}}

    def delta(index: int, text: str) -> bytes:
        return _sse_raw(json.dumps({"type": "content_block_delta", "index": index,
                                    "delta": {"type": "text_delta", "text": text}}, separators=(",", ":")),
                        "content_block_delta")

    body = (_sse(start, "message_start")
            + b"".join(_sse({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}},
                            "content_block_start") for i in (0, 1))
            + delta(0, "a") + delta(0, "b") + delta(1, "x") + delta(0, "c") + delta(1, "y") + delta(1, "z")
            + _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 6}},
                   "message_delta"))
    ex = Exchange("POST", "/v1/messages", json.dumps({"model": "claude-x", "messages": [], "stream": True}), 200,
                  [("content-type", "text/event-stream")], body)
    full, decoded_all, decoded = _read_either_way(ex)
    assert [p["content"] for p in full["output_messages"][0]["parts"]] == ["abc", "xyz"]
    assert decoded == decoded_all - 6


def test_anthropic_block_keys_of_ours_from_the_server_are_ignored() -> None:
    """A content block that arrives with keys named like the decoder's own piece lists keeps
    the stream decodable (they are dropped), in either mode."""
    start = {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x", "usage": {"input_tokens": 5}}}
    block = {"type": "text", "text": "", "_text": 5, "_json": "x", "_thinking": None}
    body = (_sse(start, "message_start") + _sse({"type": "content_block_start", "index": 0, "content_block": block},
                                                 "content_block_start")
            + _sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
                   "content_block_delta")
            + _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
                   "message_delta"))
    ex = Exchange("POST", "/v1/messages", json.dumps({"model": "claude-x", "messages": [], "stream": True}), 200,
                  [("content-type", "text/event-stream")], body)
    full, _, _ = _read_either_way(ex)
    assert full["output_messages"][0]["parts"] == [{"type": "text", "content": "hi"}]
    assert full["output_tokens"] == 1


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_tool_call_arguments_read_from_bytes_with_capture_on(text: str) -> None:
    """A tool call's argument pieces after its first delta (id and name) are read from bytes,
    a run per call, calls in turn included; the first deltas are decoded whole."""
    def delta(tool: dict[str, Any]) -> dict[str, Any]:
        return {"id": "c-1", "object": "chat.completion.chunk", "created": 1, "model": "m-1", "usage": None,
                "choices": [{"index": 0, "delta": {"tool_calls": [tool]}, "logprobs": None, "finish_reason": None}]}

    def start(index: int, name: str) -> dict[str, Any]:
        return delta({"index": index, "id": f"call_{index}", "type": "function",
                      "function": {"name": name, "arguments": ""}})

    def args(index: int, piece: str) -> dict[str, Any]:
        return delta({"index": index, "function": {"arguments": piece}})

    value = json.dumps({"q": text})
    cut = len(value) // 2
    chunks = [{**delta({}), "choices": [{"index": 0, "delta": {"role": "assistant", "content": None},
                                         "logprobs": None, "finish_reason": None}]},
              start(0, "f"), args(0, value[:cut]), args(0, value[cut:-1]), start(1, "g"), args(1, "{"),
              args(0, value[-1]), args(1, "}"),
              {**delta({}), "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}]}]
    for ascii_only in (True, False):
        body = b"".join(b"data: " + json.dumps(c, separators=(",", ":"), ensure_ascii=ascii_only).encode() + b"\n\n"
                        for c in chunks)
        ex = Exchange("POST", "/v1/chat/completions", json.dumps({"model": "m", "stream": True}), 200,
                      [("content-type", "text/event-stream")], body)
        full, decoded_all, decoded = _read_either_way(ex)
        assert (decoded_all, decoded) == (9, 4)  # the role, each call's first delta, the finish
        calls = full["output_messages"][0]["parts"]
        assert [(c["id"], c["name"], c["arguments"]) for c in calls] == [("call_0", "f", {"q": text}),
                                                                         ("call_1", "g", {})]
