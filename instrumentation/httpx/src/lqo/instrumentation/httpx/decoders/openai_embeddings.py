"""OpenAI embeddings (and compatible servers): ``POST …/embeddings``."""

from __future__ import annotations

from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga

from .._record import CallRecord, as_dict, as_int, as_list, as_str, text_part
from .base import set_identity
from .openai_chat import openai_usage


class Embeddings:
    name = "openai.embeddings"
    provider = "openai"

    def operation(self, path: str) -> str | None:
        return "embeddings" if path.endswith("/embeddings") else None

    def request(self, operation: str, body: dict[str, Any], rec: CallRecord) -> None:
        fmt = as_str(body.get("encoding_format"))
        if fmt:
            rec.attrs[ga.GEN_AI_REQUEST_ENCODING_FORMATS] = [fmt]
        dims = as_int(body.get("dimensions"))
        if dims is not None:
            rec.attrs[ga.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = dims
        set_identity(rec, body.get("user"))
        if rec.capture:
            inputs = body.get("input")
            inputs = inputs if isinstance(inputs, list) else [inputs]
            texts = [i for i in inputs if isinstance(i, str)]
            if texts:
                rec.input_messages = [{"role": "user", "parts": [text_part(t) for t in texts]}]

    def response(self, operation: str, body: Any, rec: CallRecord) -> None:
        body = as_dict(body)
        model = as_str(body.get("model"))
        if model:
            rec.response_model = model
        openai_usage(body.get("usage"), rec)
        if ga.GEN_AI_EMBEDDINGS_DIMENSION_COUNT not in rec.attrs:
            first = as_dict((as_list(body.get("data")) or [None])[0]).get("embedding")
            if isinstance(first, list):
                rec.attrs[ga.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = len(first)

    def stream(self, operation: str, rec: CallRecord) -> Any:
        return None


FAMILY = Embeddings()
