"""Who made a call, and in which conversation: chosen W3C baggage entries on each GenAI span.

An application knows its end user and conversation where a request comes in, far from the LLM
client. OpenTelemetry carries such facts in *baggage*: set once (``baggage.set_baggage`` in a
request handler, or a ``baggage`` header from the service in front, which the default
propagators extract), it is in the context of every call made under it, in this process and
in the services it calls. The instrumentation copies the entries named in
``LQO_GENAI_BAGGAGE_KEYS`` (default ``DEFAULT_KEYS``) onto each GenAI span as attributes of the
same name, so the collector's GenAI table has ``UserId`` and ``ConversationId`` for every call.

Only GenAI spans get them, and only the keys listed: baggage also arrives from outside, and a
listed key's value is whatever the caller sent (see docs/instrumentation.md, "Who and which
conversation"). An entry's W3C properties (``value;prop=1``) are not part of it. Values longer than ``MAX_VALUE_CHARS`` are left out, not cut: a cut identifier
would name someone else. A value the instrumentation read from the request itself (OpenAI's
``safety_identifier``, Anthropic's ``metadata.user_id``, a Responses ``conversation``) wins over
baggage. This runs on the telemetry worker, from the call's context as the call path kept it:
nothing on the call path. (opentelemetry-processor-baggage copies baggage onto *every* span at
its start; it sees lqo's spans too, since they start in the call's context.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from opentelemetry import baggage

from ._record import MAX_ID_CHARS

_log = logging.getLogger("lqo.instrumentation.httpx")

BAGGAGE_ENV = "LQO_GENAI_BAGGAGE_KEYS"
DEFAULT_KEYS = ("user.id", "enduser.id", "enduser.pseudo.id", "session.id", "gen_ai.conversation.id")
MAX_VALUE_CHARS = MAX_ID_CHARS


class BaggageKeys:
    """Which baggage entries a GenAI span gets: exact keys, and prefixes written ``key.*``."""

    def __init__(self, keys: str | list[str] | tuple[str, ...] | None = None) -> None:
        if keys is None:
            keys = os.environ.get(BAGGAGE_ENV)
            if keys is None or not keys.strip():
                keys = DEFAULT_KEYS
        if isinstance(keys, str):
            keys = () if keys.strip().lower() == "none" else keys.split(",")
        names = [k.strip() for k in keys if isinstance(k, str) and k.strip()]
        self.exact = frozenset(k for k in names if not k.endswith("*"))
        self.prefixes = tuple(k[:-1] for k in names if k.endswith("*"))
        if "" in self.prefixes:  # "*": every entry, whatever sent it
            _log.warning("%s names every baggage entry (*); copying only the listed keys is safer", BAGGAGE_ENV)
        self._too_long: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes)

    def attributes(self, ctx: Any, out: Mapping[str, Any]) -> dict[str, str]:
        """The listed entries of ``ctx``'s baggage that ``out`` (the span's own attributes) lacks."""
        if ctx is None:
            return {}
        entries = baggage.get_all(ctx)
        if not entries:
            return {}
        found: dict[str, str] = {}
        for key, value in entries.items():
            if key in out or not (key in self.exact or (self.prefixes and key.startswith(self.prefixes))):
                continue
            if not isinstance(value, str):
                continue
            # Python's W3C propagator keeps an entry's properties (``;k=v``) in its value; ";" is
            # not a value character in the header, so the value ends there.
            value = value.split(";", 1)[0].strip()
            if not value:
                continue
            if len(value) > MAX_VALUE_CHARS:
                if key not in self._too_long:
                    self._too_long.add(key)
                    _log.warning("baggage entry %s is longer than %d characters; not copied to GenAI spans",
                                 key, MAX_VALUE_CHARS)
                continue
            found[key] = value
        return found
