"""Anthropic Messages (``POST …/v1/messages``) and legacy Text Completions (``…/v1/complete``)."""

from __future__ import annotations

import re
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga

from .._record import (
    JSON_STRING,
    TEXT_UNLIMITED,
    CallRecord,
    as_dict,
    as_index,
    as_list,
    new_pieces,
    read_texts,
    text_part,
)
from .base import (
    request_params,
    set_identity,
    set_response_identity,
    set_usage_without_cache,
    tool_definitions,
)


def _block_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [text_part(content)]
    parts: list[dict[str, Any]] = []
    for block in as_list(content):
        block = as_dict(block)
        kind = block.get("type")
        if kind == "text":
            parts.append(text_part(str(block.get("text", ""))))
        elif kind == "tool_use":
            parts.append({"type": "tool_call", "id": block.get("id"), "name": block.get("name"),
                          "arguments": block.get("input")})
        elif kind == "tool_result":
            parts.append({"type": "tool_call_response", "id": block.get("tool_use_id"),
                          "response": block.get("content")})
        elif kind == "thinking":
            parts.append({"type": "reasoning", "content": str(block.get("thinking", ""))})
        elif kind in ("image", "document"):
            source = as_dict(block.get("source"))
            modality = "image" if kind == "image" else "document"
            if source.get("type") == "base64":
                parts.append({"type": "blob", "modality": modality, "mime_type": source.get("media_type"),
                              "content": source.get("data", "")})
            elif source.get("type") == "url":
                parts.append({"type": "uri", "modality": modality, "uri": source.get("url")})
            else:
                parts.append({"type": str(kind)})
        elif isinstance(kind, str):
            parts.append({"type": kind})
    return parts


def _usage(usage: Any, rec: CallRecord) -> None:
    """Anthropic's input_tokens exclude cache reads/writes; semconv's input tokens include them."""
    usage = as_dict(usage)
    set_usage_without_cache(rec, usage.get("input_tokens"), usage.get("cache_read_input_tokens"),
                            usage.get("cache_creation_input_tokens"), usage.get("output_tokens"))


class Messages:
    name = "anthropic.messages"
    provider = "anthropic"

    def operation(self, path: str) -> str | None:
        if path.endswith("/v1/messages") or path.endswith("/messages"):
            return "chat"
        if path.endswith("/v1/complete"):
            return "text_completion"
        return None

    def request(self, operation: str, body: dict[str, Any], rec: CallRecord) -> None:
        request_params(body, rec, {"max_tokens": ga.GEN_AI_REQUEST_MAX_TOKENS,
                                   "max_tokens_to_sample": ga.GEN_AI_REQUEST_MAX_TOKENS})
        set_identity(rec, as_dict(body.get("metadata")).get("user_id"))
        if not rec.capture:
            return
        if operation == "text_completion":
            if isinstance(body.get("prompt"), str):
                rec.input_messages = [{"role": "user", "parts": [text_part(body["prompt"])]}]
            return
        rec.input_messages = [
            {"role": m.get("role", "user"), "parts": _block_parts(m.get("content"))}
            for m in as_list(body.get("messages")) if isinstance(m, dict)
        ]
        system = body.get("system")
        if system:
            rec.system_instructions = _block_parts(system)
        tools = tool_definitions(body.get("tools"))
        if tools:
            rec.tool_definitions = tools

    def response(self, operation: str, body: Any, rec: CallRecord) -> None:
        body = as_dict(body)
        set_response_identity(rec, body)
        reason = body.get("stop_reason")
        finish = str(reason) if reason else "error"
        if reason:
            rec.finish_reasons = [finish]
        if rec.capture:
            if operation == "text_completion":
                parts = [text_part(str(body.get("completion", "")))]
            else:
                parts = _block_parts(body.get("content"))
            rec.output_messages = [{"role": "assistant", "parts": parts, "finish_reason": finish}]
        _usage(body.get("usage"), rec)

    def stream(self, operation: str, rec: CallRecord) -> MessagesStream:
        return MessagesStream(self, operation, rec)


# Events that change nothing recorded: never decoded. Content events: not decoded when content
# is not captured.
_EMPTY_EVENTS = frozenset(("content_block_stop", "ping", "message_stop"))
_CONTENT_EVENTS = frozenset(("content_block_start", "content_block_delta")) | _EMPTY_EVENTS
# A message that may matter then: one not starting with an event line, or another event's line.
# (The optional space is inside the look-ahead: outside, the engine would try it both ways.)
_MATTERS = re.compile(
    rb"\n\n(?!event:)|\nevent:(?! ?(?:content_block_(?:start|delta|stop)|ping|message_stop)[ \t]*\n)")


# Streamed text, thinking and tool-input pieces, kept in a list under a private key of their block
# and joined once at the end (adding each to a string would copy the text so far every time).
_PIECES = {"text_delta": "_text", "thinking_delta": "_thinking", "input_json_delta": "_json"}
_PIECE_FIELDS = {"_text": "text", "_thinking": "thinking", "_json": "partial_json"}


# Capture on: a run of one block's content_block_delta events of one kind (text, thinking or
# tool input), as Anthropic writes them (it pads some with spaces before the last brace), is read
# from the bytes; any other shape is decoded whole. Group 1 is the block's index, group 2 the kind.
_RUN_KEYS = {b'"type":"%s","%s":' % (kind.encode(), _PIECE_FIELDS[key].encode()): key for kind, key in _PIECES.items()}
_DELTA_EVENT = (rb'event:[ \t]*content_block_delta[ \t]*\ndata: *\{"type":"content_block_delta","index":%s,'
                rb'"delta":\{%s' + JSON_STRING + rb'\}[^\S\n]*\}\n\n')
_DELTA_RUN = re.compile(
    _DELTA_EVENT % (rb"(0|[1-9]\d{0,8})", b"(" + b"|".join(re.escape(k) for k in _RUN_KEYS) + b")")
    + rb"(?:" + _DELTA_EVENT % (rb"\1", rb"\2") + rb")*")
_PIECE = re.compile(b'"(?:' + b"|".join(f.encode() for f in _PIECE_FIELDS.values()) + b')":' + JSON_STRING
                    + rb'\}[^\S\n]*\}\n\n')


class MessagesStream:
    """Rebuilds the final message from message_start / content_block_* / message_delta events."""

    __slots__ = ("_blocks", "_capped", "_family", "_message", "_op", "_rec")

    def __init__(self, family: Messages, operation: str, rec: CallRecord) -> None:
        self._family = family
        self._op = operation
        self._rec = rec
        self._message: dict[str, Any] = {}
        self._blocks: dict[int, dict[str, Any]] = {}
        self._capped = False  # some block's text or thinking full: runs are asked whether they are wanted

    def event(self, name: str, data: Any) -> None:
        data = as_dict(data)
        kind = data.get("type") or name
        msg = self._message
        if kind == "message_start":
            start = as_dict(data.get("message"))
            msg.update(start)
            msg["usage"] = dict(as_dict(start.get("usage")))
        elif kind == "message_delta":
            delta = as_dict(data.get("delta"))
            if "stop_reason" in delta:
                msg["stop_reason"] = delta["stop_reason"]
            # message_delta usage is cumulative; it may restate input/cache counts too.
            usage = msg.setdefault("usage", {})
            for key, value in as_dict(data.get("usage")).items():
                if value is not None:
                    usage[key] = value
        elif kind == "completion":  # legacy /v1/complete stream
            msg.setdefault("model", data.get("model"))
            msg.setdefault("id", data.get("id"))
            msg["completion"] = msg.get("completion", "") + str(data.get("completion", ""))
            if data.get("stop_reason"):
                msg["stop_reason"] = data["stop_reason"]
        elif kind == "error":
            self._rec.attrs["error.type"] = str(as_dict(data.get("error")).get("type") or "stream_error")
        elif self._rec.capture:
            self._content_event(kind, data)

    def _content_event(self, kind: Any, data: dict[str, Any]) -> None:
        index = as_index(data.get("index"))
        if kind == "content_block_start":
            # (Keys of ours in the server's block would be taken for its pieces: dropped.)
            block = {k: v for k, v in as_dict(data.get("content_block")).items() if k not in _PIECE_FIELDS}
            if block.get("type") == "tool_use":
                block["_json"] = new_pieces(TEXT_UNLIMITED)
            self._blocks[index] = block
        elif kind == "content_block_delta":
            block = self._blocks.setdefault(index, {"type": "text", "text": ""})
            delta = as_dict(data.get("delta"))
            dtype = delta.get("type")
            if isinstance(dtype, str) and dtype in _PIECES:
                key = _PIECES[dtype]
                self._add(block, key, [str(delta.get(_PIECE_FIELDS[key], ""))])

    def _add(self, block: dict[str, Any], key: str, pieces: list[str]) -> None:
        """Text and thinking are kept up to the record's text limit; a tool's input JSON whole
        (cut, it would be recorded as a string instead of its structure). (The block's keys of
        these names are ours: the server's were dropped at its start.)"""
        kept = block.get(key)
        if kept is None:
            kept = block[key] = new_pieces(TEXT_UNLIMITED if key == "_json" else self._rec.text_limit)
        kept.add_all(pieces)
        if kept.chars >= kept.limit:
            self._capped = True

    def finish(self) -> None:
        if not self._message:
            return
        if self._rec.capture:
            import json

            content = []
            for index in sorted(self._blocks):
                block = dict(self._blocks[index])
                for key in ("_text", "_thinking"):  # the pieces after the block's start, joined once
                    pieces = block.pop(key, None)
                    if pieces:
                        field = _PIECE_FIELDS[key]
                        head = block.get(field, "")
                        block[field] = (head if isinstance(head, str) else "") + "".join(pieces)
                raw = "".join(block.pop("_json", []))
                if raw:
                    try:
                        block["input"] = json.loads(raw)
                    except ValueError:
                        block["input"] = raw
                content.append(block)
            self._message["content"] = content
        self._family.response(self._op, self._message, self._rec)

    def skip(self, name: str, payload: bytes) -> bool:
        """Capture off: a content event. Capture on: an event that changes nothing (text,
        thinking and tool-input deltas are read by ``run``)."""
        if not self._rec.capture:
            return name in _CONTENT_EVENTS
        return name in _EMPTY_EVENTS

    def run(self, buf: bytes, start: int, end: int) -> int:
        """Capture on: a block's deltas of one kind read from their bytes (see ``_DELTA_RUN``)."""
        if not self._rec.capture:
            return start
        found = read_texts(_DELTA_RUN, _PIECE, b"\n\n", buf, start, end, keep=self._wanted if self._capped else None)
        if found is None:
            return start
        pieces, match = found
        if pieces:  # (none: every event of the run dropped, so no block made for it, or its kind full)
            block = self._blocks.setdefault(int(match.group(1)), {"type": "text", "text": ""})
            self._add(block, _RUN_KEYS[match.group(2)], pieces)
        return match.end()

    def _wanted(self, match: re.Match[bytes]) -> bool:
        """Whether a run's pieces can still change what is recorded (its block's kind not full)."""
        kept = self._blocks.get(int(match.group(1)), {}).get(_RUN_KEYS[match.group(2)])
        return kept is None or kept.chars < kept.limit

    def quiet(self) -> re.Pattern[bytes] | None:
        return None if self._rec.capture else _MATTERS


FAMILY = Messages()
