"""What one LLM call produced, filled by an API-family decoder and read by the call's telemetry."""

from __future__ import annotations

import re
from json.decoder import scanstring
from typing import Any

# A JSON string literal, quotes included, as a regex group for decoders that read a streamed
# delta's text from its bytes (capture on) instead of decoding the whole event.
JSON_STRING = rb'("[^"\\]*(?:\\.[^"\\]*)*")'


class CallRecord:
    """Plain slots, one per call: decoders write here, `_call.Call` turns it into telemetry.

    ``attrs`` holds span attributes keyed by their semconv names. Message lists are built only
    when ``capture`` is true, so the no-content path never walks message bodies.
    """

    __slots__ = (
        "attrs",
        "cache_creation_tokens",
        "cache_read_tokens",
        "capture",
        "finish_reasons",
        "input_messages",
        "input_tokens",
        "operation",
        "output_messages",
        "output_tokens",
        "reasoning_tokens",
        "request_model",
        "response_model",
        "system_instructions",
        "tool_definitions",
    )

    def __init__(self, operation: str, capture: bool) -> None:
        self.operation = operation
        self.capture = capture
        self.attrs: dict[str, Any] = {}
        self.request_model: str | None = None
        self.response_model: str | None = None
        self.finish_reasons: list[str] | None = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cache_read_tokens: int | None = None
        self.cache_creation_tokens: int | None = None
        self.reasoning_tokens: int | None = None
        self.input_messages: list[dict[str, Any]] | None = None
        self.output_messages: list[dict[str, Any]] | None = None
        self.system_instructions: list[dict[str, Any]] | None = None
        self.tool_definitions: list[dict[str, Any]] | None = None


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def as_number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def json_string(found: re.Match[bytes] | None, group: int = 1) -> str | None:
    """The text of the JSON string literal a ``JSON_STRING`` group matched, by the ``json``
    module's own string scanner: ~4× cheaper than decoding the event around it. None without a
    match, or if it is not valid UTF-8 or JSON (then the whole decode decides)."""
    if found is None:
        return None
    try:
        return scanstring(found.group(group).decode("utf-8"), 1)[0]
    except ValueError:
        return None


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "content": text}


def parse_arguments(raw: Any) -> Any:
    """Tool-call arguments arrive as a JSON string (OpenAI) or an object; keep them structured."""
    if isinstance(raw, str):
        import json

        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw
