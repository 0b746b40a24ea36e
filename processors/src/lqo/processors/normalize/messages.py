"""Messages from other producers' shapes → the semconv JSON of ``gen_ai.input.messages``,
``gen_ai.output.messages`` and ``gen_ai.system_instructions``.

Semconv shape: ``[{"role": "user", "parts": [{"type": "text", "content": "…"}]}]``; tool calls
are ``{"type": "tool_call", "id", "name", "arguments"}`` parts, tool results
``{"type": "tool_call_response", "id", "response"}`` parts of a ``tool`` message, and output
messages carry ``finish_reason``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

Message = dict[str, Any]


def loads(text: str | None) -> Any:
    """JSON value of ``text``, or None when it is not JSON."""
    if not text or text[0] not in "[{\"":
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _arguments(raw: Any) -> Any:
    if isinstance(raw, str):
        parsed = loads(raw)
        return parsed if parsed is not None else raw
    return raw


def content_parts(content: Any) -> list[dict[str, Any]]:
    """OpenAI/Anthropic-style content (a string, or a list of typed blocks) → parts."""
    if content is None or content == "":
        return []
    if isinstance(content, str):
        blocks = loads(content) if content.startswith("[{") else None
        if not isinstance(blocks, list):
            return [{"type": "text", "content": content}]
        content = blocks
    if not isinstance(content, list):
        return [{"type": "text", "content": content if isinstance(content, str) else dumps(content)}]
    parts: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, str):
            parts.append({"type": "text", "content": block})
            continue
        if not isinstance(block, Mapping):
            continue
        kind = block.get("type")
        if kind in ("text", "input_text", "output_text"):
            parts.append({"type": "text", "content": block.get("text", "")})
        elif kind == "image_url":
            url = block.get("image_url")
            url = url.get("url") if isinstance(url, Mapping) else url
            parts.append({"type": "uri", "modality": "image", "uri": url})
        elif kind == "tool_use":
            parts.append({"type": "tool_call", "id": block.get("id"), "name": block.get("name"),
                          "arguments": block.get("input")})
        elif kind == "tool_result":
            parts.append({"type": "tool_call_response", "id": block.get("tool_use_id"),
                          "response": block.get("content")})
        elif kind in ("thinking", "reasoning"):
            parts.append({"type": "reasoning", "content": block.get("thinking") or block.get("text", "")})
        elif kind:
            parts.append({"type": str(kind), **{k: v for k, v in block.items() if k != "type"}})
    return parts


def tool_call_part(call: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI ``tool_calls`` entry (nested ``function`` or flat) → a tool_call part."""
    function = call.get("function") if isinstance(call.get("function"), Mapping) else call
    return {"type": "tool_call", "id": call.get("id"), "name": function.get("name"),
            "arguments": _arguments(function.get("arguments"))}


def openai_message(msg: Mapping[str, Any], finish_reason: str | None = None) -> Message:
    """An OpenAI chat message dict (role, content, tool_calls, tool_call_id) → semconv."""
    role = str(msg.get("role") or "user")
    if role == "tool" or msg.get("tool_call_id"):
        out: Message = {"role": "tool", "parts": [
            {"type": "tool_call_response", "id": msg.get("tool_call_id"), "response": msg.get("content")}]}
    else:
        parts = content_parts(msg.get("content"))
        calls = msg.get("tool_calls")
        if isinstance(calls, str):
            calls = loads(calls)
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, Mapping):
                parts.append(tool_call_part(call))
        out = {"role": role, "parts": parts}
    if msg.get("name"):
        out["name"] = msg["name"]
    if finish_reason is not None:
        out["finish_reason"] = finish_reason
    return out


def messages_from_value(value: Any, default_role: str) -> list[Message]:
    """A prompt or completion as producers logged it (JSON list of messages, one message,
    an OpenAI response, or plain text) → semconv messages."""
    parsed = loads(value) if isinstance(value, str) else value
    if parsed is None:
        return [{"role": default_role, "parts": [{"type": "text", "content": value}]}] if value else []
    if isinstance(parsed, Mapping):
        if isinstance(parsed.get("messages"), list):
            parsed = parsed["messages"]
        elif isinstance(parsed.get("choices"), list):
            return [openai_message(c.get("message") or {"role": "assistant", "content": c.get("text")},
                                   c.get("finish_reason"))
                    for c in parsed["choices"] if isinstance(c, Mapping)]
        else:
            parsed = [parsed]
    if isinstance(parsed, str):
        return [{"role": default_role, "parts": [{"type": "text", "content": parsed}]}]
    if not isinstance(parsed, list):
        return []
    return [openai_message({"role": default_role, **m}) for m in parsed if isinstance(m, Mapping)]


def unflatten(attrs: Mapping[str, str], prefix: str) -> dict[int, dict[str, str]]:
    """``{prefix}{i}.{field}`` keys → {i: {field: value}} (fields may contain dots)."""
    out: dict[int, dict[str, str]] = {}
    n = len(prefix)
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        index, _, field = key[n:].partition(".")
        if index.isdigit() and field:
            out.setdefault(int(index), {})[field] = value
    return dict(sorted(out.items()))


_TOOL_CALL = re.compile(r"^tool_calls\.(\d+)\.(?:tool_call\.)?(id|name|arguments|function\.name|function\.arguments)$")
_CONTENT_BLOCK = re.compile(r"^contents\.(\d+)\.message_content\.(type|text|image\.image\.url)$")


def flat_message(fields: Mapping[str, str], finish_reason: str | None = None) -> Message:
    """One flattened message — OpenLLMetry's ``gen_ai.prompt.{i}.*`` fields or, with the
    ``message.`` prefix stripped, OpenInference's ``llm.input_messages.{i}.message.*`` — → semconv."""
    calls: dict[int, dict[str, str]] = {}
    blocks: dict[int, dict[str, str]] = {}
    for key, value in fields.items():
        if m := _TOOL_CALL.match(key):
            calls.setdefault(int(m.group(1)), {})[m.group(2).removeprefix("function.")] = value
        elif m := _CONTENT_BLOCK.match(key):
            blocks.setdefault(int(m.group(1)), {})[m.group(2)] = value
    msg: dict[str, Any] = {"role": fields.get("role") or "user", "content": fields.get("content")}
    if blocks and not msg["content"]:
        msg["content"] = [
            {"type": "image_url", "image_url": b.get("image.image.url")} if b.get("type") == "image"
            else {"type": "text", "text": b.get("text", "")}
            for _, b in sorted(blocks.items())
        ]
    if calls:
        msg["tool_calls"] = [calls[i] for i in sorted(calls)]
    if fields.get("tool_call_id"):
        msg["tool_call_id"] = fields["tool_call_id"]
    if fields.get("name"):
        msg["name"] = fields["name"]
    return openai_message(msg, finish_reason if finish_reason is not None else fields.get("finish_reason"))


def split_system(messages: Iterable[Message]) -> tuple[list[Message], list[dict[str, Any]]]:
    """(messages, system instruction parts) for producers that logged the system prompt as a
    separate ``system`` entry while the API took it separately (e.g. Anthropic)."""
    rest, system = [], []
    for m in messages:
        if m.get("role") == "system":
            system.extend(m["parts"])
        else:
            rest.append(m)
    return rest, system
