"""OpenAI Responses API: ``POST …/responses``."""

from __future__ import annotations

import re
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga

from .._record import CallRecord, as_dict, as_int, as_list, as_str, parse_arguments, text_part
from .base import (
    openai_user,
    request_params,
    set_identity,
    set_response_identity,
    set_tokens,
    tool_definitions,
)
from .openai_chat import chat_messages

_TERMINAL_EVENTS = ("response.completed", "response.incomplete", "response.failed")
# A message that may matter: one not starting with an event line, or an event line not naming a
# "response." event other than these four (the space after "event:" inside the look-ahead).
_MATTERS = re.compile(
    rb"\n\n(?!event:)|\nevent:(?! ?response\.(?!(?:created|completed|incomplete|failed)[ \t]*\n))")


def _input_messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "parts": [text_part(value)]}]
    messages: list[dict[str, Any]] = []
    for item in as_list(value):
        item = as_dict(item)
        kind = item.get("type")
        if kind == "function_call_output":
            messages.append({"role": "tool", "parts": [
                {"type": "tool_call_response", "id": item.get("call_id"), "response": item.get("output")}]})
        elif kind == "function_call":
            messages.append({"role": "assistant", "parts": [
                {"type": "tool_call", "id": item.get("call_id"), "name": item.get("name"),
                 "arguments": parse_arguments(item.get("arguments"))}]})
        elif "role" in item:
            messages.extend(chat_messages([item]))
    return messages


def _output_messages(output: Any, finish: str) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for item in as_list(output):
        item = as_dict(item)
        kind = item.get("type")
        if kind == "message":
            for c in as_list(item.get("content")):
                c = as_dict(c)
                if isinstance(c.get("text"), str):
                    parts.append(text_part(c["text"]))
                elif isinstance(c.get("refusal"), str):
                    parts.append(text_part(c["refusal"]))
        elif kind == "function_call":
            parts.append({"type": "tool_call", "id": item.get("call_id"), "name": item.get("name"),
                          "arguments": parse_arguments(item.get("arguments"))})
        elif kind == "reasoning":
            summary = " ".join(as_dict(s).get("text", "") for s in as_list(item.get("summary")))
            if summary:
                parts.append({"type": "reasoning", "content": summary})
        elif isinstance(kind, str):
            parts.append({"type": kind})
    return [{"role": "assistant", "parts": parts, "finish_reason": finish}]


def _finish_reason(body: dict[str, Any]) -> str:
    status = body.get("status")
    if status == "completed":
        if any(as_dict(i).get("type") == "function_call" for i in as_list(body.get("output"))):
            return "tool_calls"
        return "stop"
    if status == "incomplete":
        return str(as_dict(body.get("incomplete_details")).get("reason") or "incomplete")
    return "error" if status == "failed" else str(status or "error")


class Responses:
    name = "openai.responses"
    provider = "openai"

    def operation(self, path: str) -> str | None:
        return "chat" if path.endswith("/responses") else None

    def request(self, operation: str, body: dict[str, Any], rec: CallRecord) -> None:
        request_params(body, rec, {"max_output_tokens": ga.GEN_AI_REQUEST_MAX_TOKENS})
        conversation = body.get("conversation")  # an id, or {"id": …}
        set_identity(rec, openai_user(body),
                     as_dict(conversation).get("id") if isinstance(conversation, dict) else conversation)
        fmt = as_dict(as_dict(body.get("text")).get("format")).get("type")
        if isinstance(fmt, str):
            rec.attrs[ga.GEN_AI_OUTPUT_TYPE] = "json" if fmt.startswith("json") else fmt
        if rec.capture:
            rec.input_messages = _input_messages(body.get("input"))
            instructions = as_str(body.get("instructions"))
            if instructions:
                rec.system_instructions = [text_part(instructions)]
            tools = tool_definitions(body.get("tools"))
            if tools:
                rec.tool_definitions = tools

    def response(self, operation: str, body: Any, rec: CallRecord) -> None:
        body = as_dict(body)
        set_response_identity(rec, body)
        tier = as_str(body.get("service_tier"))
        if tier:
            rec.attrs[ga.GEN_AI_OPENAI_RESPONSE_SERVICE_TIER] = tier
        finish = _finish_reason(body)
        rec.finish_reasons = [finish]
        if rec.capture:
            rec.output_messages = _output_messages(body.get("output"), finish)
        usage = as_dict(body.get("usage"))
        if usage:
            set_tokens(rec, usage.get("input_tokens"), usage.get("output_tokens"))
            cached = as_int(as_dict(usage.get("input_tokens_details")).get("cached_tokens"))
            if cached is not None:
                rec.cache_read_tokens = cached
            reasoning = as_int(as_dict(usage.get("output_tokens_details")).get("reasoning_tokens"))
            if reasoning is not None:
                rec.reasoning_tokens = reasoning

    def stream(self, operation: str, rec: CallRecord) -> ResponsesStream:
        return ResponsesStream(self, operation, rec)


class ResponsesStream:
    """The terminal event carries the whole response; earlier events only name it."""

    __slots__ = ("_family", "_final", "_op", "_rec")

    def __init__(self, family: Responses, operation: str, rec: CallRecord) -> None:
        self._family = family
        self._op = operation
        self._rec = rec
        self._final: dict[str, Any] | None = None

    def event(self, name: str, data: Any) -> None:
        data = as_dict(data)
        kind = data.get("type") or name
        if kind in _TERMINAL_EVENTS:
            self._final = as_dict(data.get("response"))
        elif kind == "response.created" and self._rec.response_model is None:
            set_response_identity(self._rec, as_dict(data.get("response")))
        elif kind == "error":
            self._rec.attrs["error.type"] = str(data.get("code") or "stream_error")

    def finish(self) -> None:
        if self._final is not None:
            self._family.response(self._op, self._final, self._rec)

    def skip(self, name: str, payload: bytes) -> bool:
        # The deltas (most of a stream): the terminal event restates the whole response.
        return name.startswith("response.") and name not in _TERMINAL_EVENTS and name != "response.created"

    def quiet(self) -> re.Pattern[bytes]:
        return _MATTERS


FAMILY = Responses()
