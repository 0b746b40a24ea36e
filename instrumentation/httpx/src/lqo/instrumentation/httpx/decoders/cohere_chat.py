"""Cohere's Chat API v2: ``POST …/v2/chat``, whole and streamed (SSE events typed ``message-start``,
``content-start`` / ``-delta``, ``tool-plan-delta``, ``tool-call-start`` / ``-delta``,
``message-end``…), as the ``cohere`` SDK's ``ClientV2.chat`` / ``chat_stream`` call it.

Token counts: ``usage.tokens`` (what the model processed) where given, else ``usage.billed_units``;
``usage.cached_tokens`` are the prompt tokens read from the cache. Cohere sends counts as JSON
numbers that may be written as floats (``12.0``). Finish reasons are Cohere's, lower-cased
(``complete``, ``max_tokens``, ``stop_sequence``, ``tool_call``, ``error``, ``timeout``), as the
Gemini decoder does with its own. A tool plan (the model's reasoning before it calls tools) is a
``reasoning`` part.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga

from .._record import (
    CallRecord,
    as_dict,
    as_index,
    as_list,
    as_str,
    new_pieces,
    parse_arguments,
    text_part,
)
from .base import request_params, set_tokens, tool_definitions

# Cohere names top_p and top_k ``p`` and ``k``.
COHERE_PARAMS = {"p": ga.GEN_AI_REQUEST_TOP_P, "k": ga.GEN_AI_REQUEST_TOP_K, "max_tokens": ga.GEN_AI_REQUEST_MAX_TOKENS}


def _count(value: Any) -> int | None:
    """A token count: an int, or a float with no fraction (Cohere's schema types them as numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and value >= 0 else None


def _usage(usage: Any, rec: CallRecord) -> None:
    usage = as_dict(usage)
    tokens, billed = as_dict(usage.get("tokens")), as_dict(usage.get("billed_units"))
    for key in ("input_tokens", "output_tokens"):
        value = _count(tokens.get(key))
        if value is None:
            value = _count(billed.get(key))
        if value is not None:
            set_tokens(rec, **{key: value})
    cached = _count(usage.get("cached_tokens"))
    if cached is not None:
        rec.cache_read_tokens = cached


def _reason(value: Any) -> str | None:
    reason = as_str(value)
    return reason.lower() if reason else None


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [text_part(content)]
    parts: list[dict[str, Any]] = []
    for item in as_list(content):
        item = as_dict(item)
        kind = item.get("type")
        if kind == "text" and isinstance(item.get("text"), str):
            parts.append(text_part(item["text"]))
        elif kind == "thinking" and isinstance(item.get("thinking"), str):
            parts.append({"type": "reasoning", "content": item["thinking"]})
        elif kind == "image_url":
            url = as_dict(item.get("image_url")).get("url")
            if isinstance(url, str):
                parts.append({"type": "uri", "modality": "image", "uri": url})
        elif kind == "document":
            parts.append({"type": "document", "content": as_dict(item.get("document")).get("data")})
        elif kind is not None:
            parts.append({"type": str(kind)})
    return parts


def _plan(tool_plan: Any) -> list[dict[str, Any]]:
    """An assistant's tool plan (its reasoning before calling tools) as a part, if it has one."""
    return [{"type": "reasoning", "content": tool_plan}] if isinstance(tool_plan, str) else []


def _tool_calls(calls: Any) -> list[dict[str, Any]]:
    out = []
    for call in as_list(calls):
        call = as_dict(call)
        fn = as_dict(call.get("function"))
        out.append({"type": "tool_call", "id": call.get("id"), "name": fn.get("name"),
                    "arguments": parse_arguments(fn.get("arguments"))})
    return out


def _messages(messages: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(semconv input messages, system instructions) from v2 chat messages."""
    out, system = [], []
    for msg in as_list(messages):
        if not isinstance(msg, dict):
            continue
        role = msg.get("role") if isinstance(msg.get("role"), str) else "user"
        if role == "system":
            system.extend(_content_parts(msg.get("content")))
            continue
        if role == "tool":
            parts = [{"type": "tool_call_response", "id": msg.get("tool_call_id"), "response": msg.get("content")}]
        else:
            parts = _plan(msg.get("tool_plan")) + _content_parts(msg.get("content")) + _tool_calls(msg.get("tool_calls"))
        out.append({"role": role, "parts": parts})
    return out, system


class CohereChat:
    name = "cohere.chat"
    provider = "cohere"

    def operation(self, path: str) -> str | None:
        return "chat" if path.endswith("/v2/chat") else None

    def request(self, operation: str, body: dict[str, Any], rec: CallRecord) -> None:
        request_params(body, rec, COHERE_PARAMS)
        fmt = as_dict(body.get("response_format"))
        if isinstance(fmt.get("type"), str):
            rec.attrs[ga.GEN_AI_OUTPUT_TYPE] = "json" if fmt["type"].startswith("json") else fmt["type"]
        if rec.capture:
            messages, system = _messages(body.get("messages"))
            rec.input_messages = messages
            if system:
                rec.system_instructions = system
            tools = tool_definitions(body.get("tools"))
            if tools:
                rec.tool_definitions = tools

    def response(self, operation: str, body: Any, rec: CallRecord) -> None:
        body = as_dict(body)
        rid = as_str(body.get("id"))
        if rid:
            rec.attrs[ga.GEN_AI_RESPONSE_ID] = rid
        reason = _reason(body.get("finish_reason")) or "error"
        rec.finish_reasons = [reason]
        if rec.capture:
            msg = as_dict(body.get("message"))
            parts = _plan(msg.get("tool_plan")) + _content_parts(msg.get("content")) + _tool_calls(msg.get("tool_calls"))
            rec.output_messages = [{"role": "assistant", "parts": parts, "finish_reason": reason}]
        _usage(body.get("usage"), rec)

    def stream(self, operation: str, rec: CallRecord) -> CohereStream:
        return CohereStream(rec)


# Events that change only content (read with capture on): with capture off, an event named one of
# these is not decoded, unless its bytes could make it another type (a ``"message-`` value, or a
# ``\u`` escape that could spell one).
_CONTENT_EVENTS = frozenset({"content-start", "content-delta", "content-end", "tool-plan-delta", "tool-call-start",
                             "tool-call-delta", "tool-call-end", "citation-start", "citation-end"})


class CohereStream:
    """Content blocks and tool calls by index, the tool plan, and ``message-end``'s finish reason
    and usage."""

    __slots__ = ("_content", "_finish", "_plan", "_rec", "_tools")

    def __init__(self, rec: CallRecord) -> None:
        self._rec = rec
        self._content: dict[int, tuple[str, Any]] = {}  # index -> (part type, pieces)
        self._tools: dict[int, dict[str, Any]] = {}
        self._plan = new_pieces(rec.text_limit)
        self._finish: str | None = None

    def event(self, name: str, data: Any) -> None:
        data = as_dict(data)
        kind = data.get("type") or name
        rec = self._rec
        delta = as_dict(data.get("delta"))
        message = as_dict(delta.get("message"))
        if kind == "message-start":
            rid = as_str(data.get("id"))
            if rid:
                rec.attrs[ga.GEN_AI_RESPONSE_ID] = rid
        elif kind == "message-end":
            self._finish = _reason(delta.get("finish_reason")) or self._finish
            if delta.get("error") and not self._finish:
                self._finish = "error"
            _usage(delta.get("usage"), rec)
        elif not rec.capture:
            return
        elif kind in ("content-start", "content-delta"):
            content = as_dict(message.get("content"))
            index = as_index(data.get("index"))
            thinking = isinstance(content.get("thinking"), str) or content.get("type") == "thinking"
            part = self._content.get(index)
            if part is None:
                part = self._content[index] = ("reasoning" if thinking else "text", new_pieces(rec.text_limit))
            piece = content.get("thinking") if part[0] == "reasoning" else content.get("text")
            if isinstance(piece, str) and piece:
                part[1].add(piece)
        elif kind == "tool-plan-delta":
            if isinstance(message.get("tool_plan"), str):
                self._plan.add(message["tool_plan"])
        elif kind in ("tool-call-start", "tool-call-delta"):
            call = as_dict(message.get("tool_calls"))
            fn = as_dict(call.get("function"))
            slot = self._tools.setdefault(as_index(data.get("index")), {"id": None, "name": None, "args": []})
            if call.get("id"):
                slot["id"] = call["id"]
            if fn.get("name"):
                slot["name"] = fn["name"]
            if isinstance(fn.get("arguments"), str):
                slot["args"].append(fn["arguments"])

    def skip(self, name: str, payload: bytes) -> bool:
        """Capture off: a content event, by its SSE name (Cohere names each event by its type)."""
        return (not self._rec.capture and name in _CONTENT_EVENTS and b'"message-' not in payload
                and b"\\u" not in payload)

    def finish(self) -> None:
        rec = self._rec
        if self._finish is None and not self._content and not self._tools:
            return
        reason = self._finish or "error"
        rec.finish_reasons = [reason]
        if rec.capture:
            parts = _plan("".join(self._plan) if self._plan else None)
            parts += [{"type": kind, "content": "".join(pieces)} for _, (kind, pieces) in sorted(self._content.items())]
            parts += [{"type": "tool_call", "id": t["id"], "name": t["name"],
                       "arguments": parse_arguments("".join(t["args"]))} for _, t in sorted(self._tools.items())]
            rec.output_messages = [{"role": "assistant", "parts": parts, "finish_reason": reason}]


FAMILY = CohereChat()
