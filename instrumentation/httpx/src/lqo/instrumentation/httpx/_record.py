"""What one LLM call produced, filled by an API-family decoder and read by the call's telemetry."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

# A JSON string literal, and as a regex group of its characters, for decoders that read streamed
# deltas' text from their bytes (capture on) instead of decoding each event. (JSON text has no
# raw newline inside a string, so a match never runs from one streamed message into the next.)
_JSON_CHARS = rb'[^"\\\n]*(?:\\.[^"\\\n]*)*'
JSON_LITERAL = b'"' + _JSON_CHARS + b'"'
JSON_STRING = b'"(' + _JSON_CHARS + b')"'  # (the group: the literal's characters, without its quotes)


TEXT_UNLIMITED = 1 << 62


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
        "text_limit",
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
        # Characters of one streamed text past which more cannot change what is recorded: content
        # attributes are cut to at most this many bytes (``_content.bounded_json``, whose first cut
        # keeps the first half of a longer string), so a stream decoder may stop keeping a text's
        # pieces (and stop decoding them) once it holds this many characters.
        self.text_limit = TEXT_UNLIMITED


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def as_index(value: Any, default: int = 0) -> int:
    """A choice's, block's or tool call's index as sent, if an int (a key to sort and look up by);
    ``default`` for anything else a server may send."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def as_number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# An identifier (a user's, a conversation's) longer than this is left out, not cut: cut, it
# could name someone else.
MAX_ID_CHARS = 256


def as_id(value: Any) -> str | None:
    """An identifier from a request or response: a non-empty string of at most ``MAX_ID_CHARS``."""
    return value if isinstance(value, str) and value and len(value) <= MAX_ID_CHARS else None


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


class Pieces(list):  # type: ignore[type-arg]
    """A streamed text's pieces, kept until they hold ``limit`` characters (``CallRecord.text_limit``:
    more cannot change what is recorded), then dropped. Joined once at the end. Made by
    ``new_pieces(limit)``: a Python ``__init__`` would cost a stream ~1 µs per text part."""

    __slots__ = ("chars", "limit")

    def add(self, piece: str) -> None:
        if self.chars < self.limit:
            self.append(piece)
            self.chars += len(piece)

    def add_all(self, pieces: list[str]) -> None:
        if self.chars < self.limit:
            self.extend(pieces)
            self.chars += sum(map(len, pieces))


def new_pieces(limit: int) -> Pieces:
    kept = Pieces()
    kept.chars = 0
    kept.limit = limit
    return kept


def none_wanted(match: re.Match[bytes]) -> bool:
    """``read_texts``' ``keep`` for a run whose pieces are not wanted (its text already full)."""
    return False


def read_texts(run: re.Pattern[bytes], text: re.Pattern[bytes], sep: bytes, buf: bytes, start: int,
               end: int, counted: bool = True,
               keep: Callable[[re.Match[bytes]], bool] | None = None) -> tuple[list[str], re.Match[bytes]] | None:
    """Capture on: the texts of the run of text-only messages at ``start``, read from the bytes,
    and the run's match. ``run`` matches one or more whole messages at ``start``, each ending
    with ``sep``, before ``end``; ``text`` finds the one JSON string literal of each (group 1:
    its characters, ``JSON_STRING``). The literals are decoded together by the ``json`` module:
    one C call for the run instead of a decode per event, into one string where they hold no
    ``\\u`` escape. None without a run, or if its bytes do not hold one literal per message (the
    patterns rule it out; ``counted=False`` skips that check, for a ``text`` pattern that matches
    exactly once in every message ``run`` matches). ``keep(match)`` False: the run's texts are
    not wanted, only where it ends, and are neither found nor decoded. A literal the decoder
    refuses (never from a real server) makes its event one that decoding whole would drop: its
    piece is dropped, the others kept. (The rest of each event's bytes is matched, not decoded: a
    server's event corrupt elsewhere has its piece read, where decoding it whole would drop the
    event.)"""
    found = run.match(buf, start, end)
    if found is None:
        return None
    if keep is not None and not keep(found):
        return [], found
    literals = text.findall(buf, start, found.end())
    if counted and len(literals) != buf.count(sep, start, found.end()):
        return None
    joined = b"".join(literals)
    if b"\\u" not in joined:
        # One string for the run, all a caller keeps of it: the literals' characters are
        # characters and two-character escapes, which decode together as they do apart. (A
        # ``\\u`` escape may not: an escaped surrogate would pair with one in the next literal, a
        # cut one borrow its digits. Those runs are decoded literal by literal.)
        try:
            return [json.loads(b'"' + joined + b'"')], found
        except ValueError:
            pass
    try:
        return json.loads(b'["' + b'","'.join(literals) + b'"]'), found
    except ValueError:
        pass
    texts = []
    for literal in literals:
        try:
            texts.append(json.loads(b'"' + literal + b'"'))
        except ValueError:
            pass
    return texts, found


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "content": text}


def parse_arguments(raw: Any) -> Any:
    """Tool-call arguments arrive as a JSON string (OpenAI) or an object; keep them structured."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw
