"""Is a POST to an LLM API path an LLM call? Its model says so, read without parsing the body."""

from __future__ import annotations

import json
import re
from typing import Any

from .decoders.bedrock import model_in_path
from .decoders.gemini import model_in_path as gemini_model

# The string's body as an unrolled loop (runs of plain bytes, then escapes): half the time of
# an alternation per byte.
_MODEL_KEY = re.compile(rb'"model"\s*:\s*"([^"\\]{0,512}(?:\\.[^"\\]{0,512}){0,256})"')


def sniff_model(body: bytes) -> str | None:
    """The request's model without parsing the body: the first ``"model": "…"`` pair.

    SDKs put the top-level key before or after the messages, whose text is escaped JSON and
    cannot fake a match; a nested object with its own ``model`` key could. The worker parses
    the body and corrects the span if the sniffed value was not the top-level one. The key is
    found with ``bytes.find`` (a vectorized scan) and only matched where it is: a regex search
    over a long prompt costs several times more.
    """
    at = body.find(b'"model"')
    while at >= 0:
        m = _MODEL_KEY.match(body, at)
        if m is not None:
            break
        at = body.find(b'"model"', at + 7)
    else:
        return None
    raw = m.group(1)
    if len(raw) > 512:  # not a model name: the worker reads the body
        return None
    try:
        value = json.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()
    except ValueError:
        return None
    return value or None


def model_of(body: bytes, path: str) -> str:
    """The call's model, or "" where there is none: then it is not an LLM call (an LLM API path
    with a JSON body, but no model: another service's ``/api/chat`` or ``/v1/messages``)."""
    if ":" in path:  # Gemini: the model is in the path (a "model" key in the body is nested)
        model = gemini_model(path)
        if model:
            return model
    model = sniff_model(body)
    if model is None:
        if "/deployments/" in path:  # Azure OpenAI: the deployment names the model
            model = path.split("/deployments/", 1)[1].split("/", 1)[0]
        elif "/model/" in path:  # AWS Bedrock (InvokeModel, Converse): so does the path
            model = model_in_path(path)
    return model or ""


def request_model(request: Any) -> str:
    """``model_of`` an httpx request: "" also for a body that is not a JSON object (LLM APIs take
    one) or that was not read (a streamed upload: not an LLM call we can read)."""
    try:
        content = request.content
    except Exception:
        return ""
    if content[:1] != b"{" and content[:64].lstrip()[:1] != b"{":
        return ""
    return model_of(content, request.url.path)
