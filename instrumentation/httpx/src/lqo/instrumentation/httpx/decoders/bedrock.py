"""AWS Bedrock InvokeModel (``POST …/model/{modelId}/invoke``, ``…/invoke-with-response-stream``).

The httpx client that calls it is Anthropic's SDK (``AnthropicBedrock``): the body is an
Anthropic Messages request without its model (the model is in the path), the answer an Anthropic
message, and a stream is AWS's binary event stream whose ``chunk`` events each carry one
Anthropic stream event, base64-encoded. Those are decoded as Anthropic Messages. Bodies of other
model families (Titan, Llama, Mistral, Nova…, as LiteLLM or their own clients send them) get their
span, model, provider, duration, errors and usage, the usage from what Bedrock adds to every
model's answer: the ``X-Amzn-Bedrock-Input-Token-Count`` / ``…-Output-Token-Count`` response
headers, and in a stream the last chunk's ``amazon-bedrock-invocationMetrics``; no content.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import unquote

from .._record import CallRecord, as_dict, as_str
from .._streams import EXCEPTION
from .anthropic_messages import FAMILY as MESSAGES
from .anthropic_messages import MessagesStream
from .base import set_tokens

INVOKE = frozenset(("invoke", "invoke-with-response-stream"))
CONVERSE = frozenset(("converse", "converse-stream"))


def model_in_path(path: str, actions: frozenset[str] = INVOKE | CONVERSE) -> str | None:
    """The model id (percent-decoded) of a Bedrock runtime path ending in one of ``actions``
    (default: InvokeModel's and Converse's), or None for another path."""
    _, sep, rest = path.partition("/model/")
    if not sep:
        return None
    model, sep, action = rest.rpartition("/")
    if not sep or not model or action not in actions:
        return None
    return unquote(model)


def _anthropic_request(body: dict[str, Any]) -> bool:
    return "anthropic_version" in body or isinstance(body.get("messages"), list)


class InvokeModel:
    name = "aws.bedrock.invoke_model"
    provider = "aws.bedrock"

    def operation(self, path: str) -> str | None:
        return "chat" if model_in_path(path, INVOKE) is not None else None

    def request(self, operation: str, body: dict[str, Any], rec: CallRecord) -> None:
        if _anthropic_request(body):
            MESSAGES.request(operation, body, rec)

    def response(self, operation: str, body: Any, rec: CallRecord) -> None:
        body = as_dict(body)
        if body.get("type") == "message" or isinstance(body.get("content"), list):
            MESSAGES.response(operation, body, rec)

    def headers(self, operation: str, headers: Any, rec: CallRecord) -> None:
        """Bedrock's token counts for any model (an Anthropic body's own usage, decoded after,
        wins: it has the cache counts)."""
        set_tokens(rec, _count(headers.get("x-amzn-bedrock-input-token-count")),
                   _count(headers.get("x-amzn-bedrock-output-token-count")))

    def stream(self, operation: str, rec: CallRecord) -> InvokeStream:
        return InvokeStream(MESSAGES.stream(operation, rec), rec)


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, str) and value.isdigit() and len(value) < 16 else None


class InvokeStream:
    """Bedrock's event-stream events (``chunk``, or an exception) → the Anthropic stream events
    they carry. Takes what ``StreamParser``'s ``eventstream`` kind gives: each event's type
    header and JSON payload."""

    __slots__ = ("_inner", "_rec")

    def __init__(self, inner: MessagesStream, rec: CallRecord) -> None:
        self._inner = inner
        self._rec = rec

    def event(self, name: str, data: Any) -> None:
        if name == "chunk":
            raw = as_str(as_dict(data).get("bytes"))
            if raw is None:
                return
            try:
                inner = json.loads(base64.b64decode(raw, validate=True))
            except ValueError:
                return
            if not isinstance(inner, dict):
                return
            if isinstance(inner.get("type"), str):  # an Anthropic stream event
                self._inner.event(inner["type"], inner)
                return
            # Another model family's chunk: only the counts Bedrock adds to the last one.
            metrics = as_dict(inner.get("amazon-bedrock-invocationMetrics"))
            set_tokens(self._rec, metrics.get("inputTokenCount"), metrics.get("outputTokenCount"))
        elif name.startswith(EXCEPTION):  # e.g. throttlingException mid-stream
            self._inner.event("error", {"type": "error", "error": {"type": name[len(EXCEPTION):]}})

    def finish(self) -> None:
        self._inner.finish()


FAMILY = InvokeModel()
