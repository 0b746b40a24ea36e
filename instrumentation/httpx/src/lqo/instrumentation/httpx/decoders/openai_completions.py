"""OpenAI legacy Completions: ``POST …/completions`` (not ``/chat/completions``)."""

from __future__ import annotations

import re
from typing import Any

from .._record import CallRecord, as_dict, as_index, as_list, new_pieces, text_part
from .openai_chat import (
    CARRIES,
    by_index,
    carries,
    chunk_meta,
    common_openai_request,
    openai_response_meta,
    openai_usage,
    single_choice,
)


def _prompt_messages(prompt: Any) -> list[dict[str, Any]]:
    prompts = prompt if isinstance(prompt, list) else [prompt]
    return [{"role": "user", "parts": [text_part(p)]} for p in prompts if isinstance(p, str)]


class Completions:
    name = "openai.completions"
    provider = "openai"

    def operation(self, path: str) -> str | None:
        if path.endswith("/completions") and not path.endswith("/chat/completions"):
            return "text_completion"
        return None

    def request(self, operation: str, body: dict[str, Any], rec: CallRecord) -> None:
        common_openai_request(body, rec)
        if rec.capture:
            rec.input_messages = _prompt_messages(body.get("prompt"))

    def response(self, operation: str, body: Any, rec: CallRecord) -> None:
        body = as_dict(body)
        openai_response_meta(body, rec)
        choices = [c for c in as_list(body.get("choices")) if isinstance(c, dict)]
        rec.finish_reasons = [str(c.get("finish_reason") or "error") for c in choices]
        if rec.capture:
            rec.output_messages = [
                {"role": "assistant", "parts": [text_part(str(c.get("text") or ""))],
                 "finish_reason": str(c.get("finish_reason") or "error")}
                for c in choices
            ]
        openai_usage(body.get("usage"), rec)

    def stream(self, operation: str, rec: CallRecord) -> CompletionsStream:
        return CompletionsStream(rec)


class CompletionsStream:
    __slots__ = ("_choices", "_quiet", "_rec")

    def __init__(self, rec: CallRecord) -> None:
        self._rec = rec
        self._choices: dict[Any, list[Any]] = {}
        self._quiet = False  # later chunks without finish reason or usage are skipped

    def event(self, name: str, data: Any) -> None:
        if not isinstance(data, dict):
            return
        rec = self._rec
        chunk_meta(data, rec)
        for choice in as_list(data.get("choices")):
            if isinstance(choice, dict):
                index = as_index(choice.get("index"))
                state = self._choices.get(index)
                if state is None:
                    state = self._choices[index] = [new_pieces(rec.text_limit), None]
                if rec.capture and isinstance(choice.get("text"), str):
                    state[0].add(choice["text"])
                if choice.get("finish_reason"):
                    state[1] = choice["finish_reason"]
        self._quiet = not rec.capture and single_choice(rec, self._choices)

    def finish(self) -> None:
        if not self._choices:
            return
        ordered = by_index(self._choices)
        self._rec.finish_reasons = [str(s[1] or "error") for s in ordered]
        if self._rec.capture:
            self._rec.output_messages = [
                {"role": "assistant", "parts": [text_part("".join(s[0]))], "finish_reason": str(s[1] or "error")}
                for s in ordered
            ]

    def skip(self, name: str, payload: bytes) -> bool:
        return self._quiet and not carries(payload)

    def quiet(self) -> re.Pattern[bytes] | None:
        return CARRIES if self._quiet else None


FAMILY = Completions()
