"""Message-content capture: the mode from the environment and size-bounded semconv JSON."""

from __future__ import annotations

import enum
import json
import logging
import os
from typing import Any

_log = logging.getLogger(__name__)

CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
MAX_BYTES_ENV = "LQO_GENAI_CONTENT_MAX_BYTES"
DEFAULT_MAX_BYTES = 32 * 1024
TRUNCATION_MARKER = "…[truncated]"


class CaptureMode(enum.Enum):
    NO_CONTENT = "NO_CONTENT"
    SPAN_ONLY = "SPAN_ONLY"
    EVENT_ONLY = "EVENT_ONLY"
    SPAN_AND_EVENT = "SPAN_AND_EVENT"

    @property
    def on_span(self) -> bool:
        return self in (CaptureMode.SPAN_ONLY, CaptureMode.SPAN_AND_EVENT)

    @property
    def on_event(self) -> bool:
        return self in (CaptureMode.EVENT_ONLY, CaptureMode.SPAN_AND_EVENT)

    @property
    def captures(self) -> bool:
        return self is not CaptureMode.NO_CONTENT


def capture_mode_from_env(default: CaptureMode = CaptureMode.NO_CONTENT) -> CaptureMode:
    raw = os.environ.get(CAPTURE_ENV, "").strip()
    if not raw:
        return default
    # Older instrumentations used true/false; true meant "on the span".
    legacy = {"true": CaptureMode.SPAN_ONLY, "false": CaptureMode.NO_CONTENT}
    if raw.lower() in legacy:
        return legacy[raw.lower()]
    try:
        return CaptureMode[raw.upper()]
    except KeyError:
        _log.warning(
            "%s=%r is not one of %s; capturing no content",
            CAPTURE_ENV,
            raw,
            ", ".join(m.name for m in CaptureMode),
        )
        return CaptureMode.NO_CONTENT


def max_bytes_from_env() -> int:
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    try:
        value = int(raw)
        if value < 256:
            raise ValueError
        return value
    except ValueError:
        _log.warning("%s=%r must be an integer >= 256; using %d", MAX_BYTES_ENV, raw, DEFAULT_MAX_BYTES)
        return DEFAULT_MAX_BYTES


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _shorten_strings(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + TRUNCATION_MARKER
    if isinstance(value, list):
        return [_shorten_strings(v, limit) for v in value]
    if isinstance(value, dict):
        return {k: _shorten_strings(v, limit) for k, v in value.items()}
    return value


def bounded_json(value: Any, max_bytes: int) -> tuple[str, bool]:
    """Serialize to JSON of at most ``max_bytes`` UTF-8 bytes; returns (json, truncated).

    Long strings are cut (with a marker) before structure is dropped, so the value stays valid
    JSON with its roles and part types intact as long as that fits.
    """
    text = _dumps(value)
    if len(text) <= max_bytes // 4 or len(text.encode()) <= max_bytes:
        return text, False
    limit = max_bytes // 2
    while limit >= 16:
        text = _dumps(_shorten_strings(value, limit))
        if len(text.encode()) <= max_bytes:
            return text, True
        limit //= 2
    return _dumps([{"type": "text", "content": TRUNCATION_MARKER}]), True
