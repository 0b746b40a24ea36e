"""Ollama's native API: ``/api/chat``, ``/api/generate``, ``/api/embed``, ``/api/embeddings``.

Ollama streams by default (NDJSON, one JSON object per line); the last object has
``done: true`` and carries the token counts.
"""

from __future__ import annotations

import re
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga

from .._record import (
    JSON_STRING,
    CallRecord,
    as_dict,
    as_list,
    as_str,
    new_pieces,
    none_wanted,
    read_texts,
    text_part,
)
from .base import request_params, set_tokens, tool_definitions

_OPERATIONS = {
    "/api/chat": "chat",
    "/api/generate": "text_completion",
    "/api/embed": "embeddings",
    "/api/embeddings": "embeddings",
}


def _message_parts(msg: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if msg.get("thinking"):
        parts.append({"type": "reasoning", "content": str(msg["thinking"])})
    if isinstance(msg.get("content"), str) and (msg["content"] or not msg.get("tool_calls")):
        parts.append(text_part(msg["content"]))
    for image in as_list(msg.get("images")):
        if isinstance(image, str):
            parts.append({"type": "blob", "modality": "image", "content": image})
    for call in as_list(msg.get("tool_calls")):
        fn = as_dict(as_dict(call).get("function"))
        parts.append({"type": "tool_call", "id": as_dict(call).get("id"), "name": fn.get("name"),
                      "arguments": fn.get("arguments")})
    return parts


class Ollama:
    name = "ollama"
    provider = "ollama"

    def operation(self, path: str) -> str | None:
        for suffix, operation in _OPERATIONS.items():
            if path.endswith(suffix):
                return operation
        return None

    def request(self, operation: str, body: dict[str, Any], rec: CallRecord) -> None:
        options = as_dict(body.get("options"))
        request_params(options, rec, {"num_predict": ga.GEN_AI_REQUEST_MAX_TOKENS})
        # Ollama streams unless told not to.
        if operation != "embeddings" and body.get("stream") is not False:
            rec.attrs[ga.GEN_AI_REQUEST_STREAM] = True
        fmt = body.get("format")
        if fmt == "json" or isinstance(fmt, dict):
            rec.attrs[ga.GEN_AI_OUTPUT_TYPE] = "json"
        if not rec.capture:
            return
        if operation == "chat":
            rec.input_messages = [
                {"role": m.get("role", "user"), "parts": _message_parts(m)}
                for m in as_list(body.get("messages")) if isinstance(m, dict)
            ]
            tools = tool_definitions(body.get("tools"))
            if tools:
                rec.tool_definitions = tools
        else:
            prompt = body.get("prompt", body.get("input"))
            prompts = prompt if isinstance(prompt, list) else [prompt]
            texts = [p for p in prompts if isinstance(p, str)]
            if texts:
                rec.input_messages = [{"role": "user", "parts": [text_part(t) for t in texts]}]
            system = as_str(body.get("system"))
            if system:
                rec.system_instructions = [text_part(system)]

    def response(self, operation: str, body: Any, rec: CallRecord) -> None:
        body = as_dict(body)
        model = as_str(body.get("model"))
        if model:
            rec.response_model = model
        set_tokens(rec, body.get("prompt_eval_count"), body.get("eval_count"))
        if operation == "embeddings":
            vectors = body.get("embeddings") or [body.get("embedding")]
            first = as_list(vectors)[0] if as_list(vectors) else None
            if isinstance(first, list) and first:
                rec.attrs[ga.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = len(first)
            return
        reason = as_str(body.get("done_reason")) or ("stop" if body.get("done") else None)
        if reason:
            rec.finish_reasons = [reason]
        if rec.capture:
            if operation == "chat":
                msg = as_dict(body.get("message"))
                parts = _message_parts(msg)
                role = msg.get("role") or "assistant"
            else:
                parts = [text_part(str(body.get("response", "")))]
                if body.get("thinking"):
                    parts.insert(0, {"type": "reasoning", "content": str(body["thinking"])})
                role = "assistant"
            rec.output_messages = [{"role": role, "parts": parts, "finish_reason": reason or "error"}]

    def stream(self, operation: str, rec: CallRecord) -> OllamaStream:
        return OllamaStream(self, operation, rec)


# A line that may matter with content off: an "error" key, or "done" not false (the last line).
# In JSON text a quote inside a string is escaped: these bytes are keys, never content.
_MATTERS = re.compile(rb'"error"|"done"\s*:(?!\s*false)')


# Capture on: whole lines that are only a text piece, or only a thinking piece (the text empty),
# as Ollama writes them, are read from the bytes, a run of one kind at a time; any other shape,
# tool calls included, is decoded whole. Keyed by operation: (the stream's list, run, one line).
_HEAD = rb'\{"model":"[^"\\\n]*","created_at":"[^"\\\n]*",'
_PIECE_LINES = {
    "chat": (("_text", rb'"message":\{"role":"assistant","content":' + JSON_STRING + rb'\},"done":false\}\n'),
             ("_thinking", rb'"message":\{"role":"assistant","content":"","thinking":' + JSON_STRING
              + rb'\},"done":false\}\n')),
    "text_completion": (("_text", rb'"response":' + JSON_STRING + rb',"done":false\}\n'),
                        ("_thinking", rb'"response":"","thinking":' + JSON_STRING + rb',"done":false\}\n')),
}
_RUNS = {op: tuple((key, re.compile(rb"(?:" + _HEAD + line + rb")+"), re.compile(_HEAD + line)) for key, line in lines)
         for op, lines in _PIECE_LINES.items()}


class OllamaStream:
    __slots__ = ("_calls", "_family", "_final", "_op", "_rec", "_text", "_thinking")

    def __init__(self, family: Ollama, operation: str, rec: CallRecord) -> None:
        self._family = family
        self._op = operation
        self._rec = rec
        self._text = new_pieces(rec.text_limit)
        self._thinking = new_pieces(rec.text_limit)
        self._calls: list[Any] = []
        self._final: dict[str, Any] | None = None

    def event(self, name: str, data: Any) -> None:
        data = as_dict(data)
        if self._rec.response_model is None and as_str(data.get("model")):
            self._rec.response_model = data["model"]
        if self._rec.capture:
            msg = as_dict(data.get("message"))
            piece = msg.get("content") if self._op == "chat" else data.get("response")
            if isinstance(piece, str):
                self._text.add(piece)
            thinking = msg.get("thinking") if self._op == "chat" else data.get("thinking")
            if isinstance(thinking, str):
                self._thinking.add(thinking)
            self._calls.extend(as_list(msg.get("tool_calls")))
        if data.get("done") is True:
            self._final = data
        elif data.get("error"):
            self._rec.attrs["error.type"] = "stream_error"

    def finish(self) -> None:
        if self._final is None:
            return
        final = dict(self._final)
        text = "".join(self._text)
        thinking = "".join(self._thinking)
        if self._op == "chat":
            final["message"] = {"role": "assistant", "content": text, "thinking": thinking,
                                "tool_calls": self._calls}
        else:
            final["response"] = text
            final["thinking"] = thinking
        self._family.response(self._op, final, self._rec)

    def skip(self, name: str, payload: bytes) -> bool:
        """Capture off: a content line (not the last, "done": true; not an error). (Capture
        on, text-only and thinking-only lines are read by ``run``.)"""
        rec = self._rec
        return rec.response_model is not None and not rec.capture and _MATTERS.search(payload) is None

    def run(self, buf: bytes, start: int, end: int) -> int:
        """Capture on: text-only or thinking-only lines read from their bytes (see ``_RUNS``)."""
        rec = self._rec
        if rec.response_model is None or not rec.capture:
            return start
        for key, run, line in _RUNS.get(self._op, ()):
            kept = getattr(self, key)
            found = read_texts(run, line, b"\n", buf, start, end, keep=none_wanted if kept.chars >= kept.limit else None)
            if found is not None:
                pieces, match = found
                kept.add_all(pieces)
                return match.end()
        return start

    def quiet(self) -> re.Pattern[bytes] | None:
        rec = self._rec
        return _MATTERS if not rec.capture and rec.response_model is not None else None


FAMILY = Ollama()
