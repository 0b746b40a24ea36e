"""Google Gemini: ``POST …/models/{model}:generateContent``, ``:streamGenerateContent``,
``:embedContent`` and ``:batchEmbedContents``.

The httpx client that calls it is Google's ``google-genai`` SDK (on httpx2), against the Gemini
Developer API (``generativelanguage.googleapis.com/v1beta/models/…``) or Vertex AI
(``…aiplatform.googleapis.com/v1/projects/…/publishers/google/models/…``); the model is in the
path, not the body. The operation is semconv's ``generate_content`` (``embeddings`` for the
embedding methods), as the OpenTelemetry google-genai instrumentation names it. A stream
(``?alt=sse``) is SSE whose every event is a whole response with the new parts; without
``alt=sse`` the answer is one JSON array of them.

Usage: ``promptTokenCount`` already includes the cached tokens (``cachedContentTokenCount``,
semconv's cache read); the output count is ``candidatesTokenCount`` plus ``thoughtsTokenCount``,
which Gemini counts apart and bills as output (semconv's reasoning tokens), as OpenAI's output
count includes its reasoning; tokens of built-in tools' prompts (``toolUsePromptTokenCount``) are
input. Finish reasons are Gemini's, lower-cased (``stop``, ``max_tokens``, ``safety``…).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga

from .._record import CallRecord, as_dict, as_index, as_int, as_list, as_str, new_pieces, text_part
from .base import request_params, set_response_identity, tool_definitions

METHODS = {"generateContent": "generate_content", "streamGenerateContent": "generate_content",
           "embedContent": "embeddings", "batchEmbedContents": "embeddings"}

# generationConfig keys -> attributes, beside base.COMMON_PARAMS (temperature, seed).
_PARAMS = {
    "topP": ga.GEN_AI_REQUEST_TOP_P,
    "topK": ga.GEN_AI_REQUEST_TOP_K,
    "maxOutputTokens": ga.GEN_AI_REQUEST_MAX_TOKENS,
    "presencePenalty": ga.GEN_AI_REQUEST_PRESENCE_PENALTY,
    "frequencyPenalty": ga.GEN_AI_REQUEST_FREQUENCY_PENALTY,
}
_ROLES = {"model": "assistant", "user": "user", "system": "system", "function": "tool", "tool": "tool"}


def _model_and_method(path: str) -> tuple[str, str] | None:
    """(model id as sent, method) of a Gemini path ``…/models/{model}:{method}`` with one of
    ``METHODS``, or None for another path."""
    _, sep, rest = path.rpartition("/models/")
    if not sep:
        return None
    model, sep, method = rest.partition(":")
    if not sep or not model or "/" in model or method not in METHODS:
        return None
    return model, method


def model_in_path(path: str) -> str | None:
    """The model id (percent-decoded) of a Gemini path, or None for another path."""
    found = _model_and_method(path)
    return unquote(found[0]) if found else None


def _modality(mime: Any) -> str:
    kind = mime.split("/", 1)[0] if isinstance(mime, str) else ""
    return kind if kind in ("image", "audio", "video") else "document"


def _part(part: dict[str, Any]) -> dict[str, Any] | None:
    """One Gemini part as a semconv message part (None for an empty one)."""
    if "text" in part:
        if part.get("thought") is True:
            return {"type": "reasoning", "content": str(part["text"])}
        return text_part(str(part["text"]))
    call = part.get("functionCall")
    if isinstance(call, dict):
        return {"type": "tool_call", "id": call.get("id"), "name": call.get("name"), "arguments": call.get("args")}
    result = part.get("functionResponse")
    if isinstance(result, dict):
        return {"type": "tool_call_response", "id": result.get("id"), "response": result.get("response")}
    blob = part.get("inlineData")
    if isinstance(blob, dict):
        return {"type": "blob", "modality": _modality(blob.get("mimeType")), "mime_type": blob.get("mimeType"),
                "content": blob.get("data", "")}
    ref = part.get("fileData")
    if isinstance(ref, dict):
        return {"type": "uri", "modality": _modality(ref.get("mimeType")), "mime_type": ref.get("mimeType"),
                "uri": ref.get("fileUri")}
    for key in part:  # executableCode, codeExecutionResult…: named, not copied
        if key not in ("thought", "thoughtSignature", "videoMetadata", "partMetadata"):
            return {"type": key}
    return None


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [text_part(content)]
    out = []
    for part in as_list(as_dict(content).get("parts")):
        if isinstance(part, dict):
            found = _part(part)
            if found is not None:
                out.append(found)
    return out


def _role(content: dict[str, Any], parts: list[dict[str, Any]]) -> str:
    if parts and all(p["type"] == "tool_call_response" for p in parts):
        return "tool"  # Gemini sends function results in a "user" (or "function") turn
    return _ROLES.get(str(content.get("role") or "user"), str(content.get("role")))


def _usage(usage: Any, rec: CallRecord) -> None:
    usage = as_dict(usage)
    if not usage:
        return
    prompt, tool_prompt = as_int(usage.get("promptTokenCount")), as_int(usage.get("toolUsePromptTokenCount"))
    if prompt is not None or tool_prompt is not None:
        rec.input_tokens = (prompt or 0) + (tool_prompt or 0)
    output, thoughts = as_int(usage.get("candidatesTokenCount")), as_int(usage.get("thoughtsTokenCount"))
    if output is not None or thoughts is not None:
        rec.output_tokens = (output or 0) + (thoughts or 0)
    if thoughts is not None:
        rec.reasoning_tokens = thoughts
    cached = as_int(usage.get("cachedContentTokenCount"))
    if cached is not None:
        rec.cache_read_tokens = cached


def _reason(candidate: dict[str, Any]) -> str | None:
    reason = as_str(candidate.get("finishReason"))
    return reason.lower() if reason else None


def _embedding_request(body: dict[str, Any], rec: CallRecord) -> None:
    requests = [r for r in as_list(body.get("requests")) if isinstance(r, dict)] or [body]
    dims = as_int(requests[0].get("outputDimensionality"))
    if dims is not None:
        rec.attrs[ga.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = dims
    if rec.capture:
        parts = [p for r in requests for p in _parts(r.get("content"))]
        if parts:
            rec.input_messages = [{"role": "user", "parts": parts}]


class Gemini:
    name = "gcp.gemini"
    provider = "gcp.gen_ai"  # any Google GenAI endpoint: the host says which (KNOWN_HOSTS)
    path_names_model = True  # a "model" key in the body is nested, or restates the path's ("models/…")

    def operation(self, path: str) -> str | None:
        found = _model_and_method(path)
        return METHODS[found[1]] if found else None

    def request(self, operation: str, body: dict[str, Any], rec: CallRecord) -> None:
        if operation == "embeddings":
            _embedding_request(body, rec)
            return
        attrs = rec.attrs
        config = as_dict(body.get("generationConfig"))
        request_params(config, rec, _PARAMS)
        stop = config.get("stopSequences")
        if isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
            attrs[ga.GEN_AI_REQUEST_STOP_SEQUENCES] = stop
        count = as_int(config.get("candidateCount"))
        if count is not None and count != 1:
            attrs[ga.GEN_AI_REQUEST_CHOICE_COUNT] = count
        mime = as_str(config.get("responseMimeType"))
        if mime:
            attrs[ga.GEN_AI_OUTPUT_TYPE] = {"application/json": "json", "text/plain": "text"}.get(mime, mime)
        if not rec.capture:
            return
        messages = []
        for content in as_list(body.get("contents")):
            if isinstance(content, dict):
                parts = _parts(content)
                messages.append({"role": _role(content, parts), "parts": parts})
        rec.input_messages = messages
        system = body.get("systemInstruction", body.get("system_instruction"))
        if system:
            rec.system_instructions = _parts(system) or None
        functions = [fn for tool in as_list(body.get("tools")) for fn in as_list(as_dict(tool).get("functionDeclarations"))
                     if isinstance(fn, dict)]
        tools = tool_definitions([{**fn, "parameters": fn["parametersJsonSchema"]}
                                  if "parameters" not in fn and "parametersJsonSchema" in fn else fn for fn in functions])
        if tools:
            rec.tool_definitions = tools

    def response(self, operation: str, body: Any, rec: CallRecord) -> None:
        if isinstance(body, list):  # streamGenerateContent without alt=sse: the chunks in one array
            stream = self.stream(operation, rec)
            for chunk in body:
                stream.event("", chunk)
            stream.finish()
            return
        body = as_dict(body)
        if operation == "embeddings":
            first = as_dict((as_list(body.get("embeddings")) or [body.get("embedding")])[0])
            values = first.get("values")
            if isinstance(values, list) and ga.GEN_AI_EMBEDDINGS_DIMENSION_COUNT not in rec.attrs:
                rec.attrs[ga.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = len(values)
            return
        set_response_identity(rec, body, "responseId", "modelVersion")
        candidates = [c for c in as_list(body.get("candidates")) if isinstance(c, dict)]
        reasons = [_reason(c) or "error" for c in candidates]
        if candidates and any(_reason(c) for c in candidates):
            rec.finish_reasons = reasons
        elif not candidates:
            _blocked(body, rec)
        if rec.capture and candidates:
            rec.output_messages = [{"role": "assistant", "parts": _parts(c.get("content")), "finish_reason": reason}
                                   for c, reason in zip(candidates, reasons, strict=True)]
        _usage(body.get("usageMetadata"), rec)

    def stream(self, operation: str, rec: CallRecord) -> GeminiStream:
        return GeminiStream(rec)


def _blocked(body: dict[str, Any], rec: CallRecord) -> None:
    """No candidate: the prompt was blocked (``promptFeedback.blockReason``), its reason the finish."""
    reason = as_str(as_dict(body.get("promptFeedback")).get("blockReason"))
    if reason:
        rec.finish_reasons = [reason.lower()]


class GeminiStream:
    """Every event is a response with the parts new since the last; text and thought pieces of a
    candidate are joined in order (a part of another kind starts a new one), usage and finish
    reasons are the latest seen."""

    __slots__ = ("_candidates", "_rec")

    def __init__(self, rec: CallRecord) -> None:
        self._rec = rec
        self._candidates: dict[Any, dict[str, Any]] = {}

    def event(self, name: str, data: Any) -> None:
        data = as_dict(data)
        rec = self._rec
        error = data.get("error")
        if isinstance(error, dict):  # an error in the stream (quota, overload…)
            rec.attrs["error.type"] = str(error.get("status") or error.get("code") or "stream_error")
            return
        if not data:
            return
        set_response_identity(rec, data, "responseId", "modelVersion")
        for position, candidate in enumerate(as_list(data.get("candidates"))):
            if not isinstance(candidate, dict):
                continue
            index = as_index(candidate.get("index"), position)
            state = self._candidates.setdefault(index, {"parts": [], "finish": None})
            reason = _reason(candidate)
            if reason:
                state["finish"] = reason
            if rec.capture:
                self._add_parts(state["parts"], candidate.get("content"), rec.text_limit)
        if not data.get("candidates"):
            _blocked(data, rec)
        _usage(data.get("usageMetadata"), rec)

    @staticmethod
    def _add_parts(parts: list[Any], content: Any, limit: int) -> None:
        for part in _parts(content):
            kind = part["type"]
            if kind in ("text", "reasoning") and parts and parts[-1][0] == kind:
                parts[-1][1].add(part["content"])
            elif kind in ("text", "reasoning"):
                kept = new_pieces(limit)
                kept.add(part["content"])
                parts.append((kind, kept))
            else:
                parts.append((kind, part))

    def finish(self) -> None:
        rec = self._rec
        if not self._candidates:
            return
        states = [self._candidates[k] for k in sorted(self._candidates, key=lambda i: i if isinstance(i, int) else 0)]
        if any(s["finish"] for s in states):
            rec.finish_reasons = [s["finish"] or "error" for s in states]
        if rec.capture:
            rec.output_messages = [
                {"role": "assistant",
                 "parts": [{"type": kind, "content": "".join(value)} if kind in ("text", "reasoning") else value
                           for kind, value in s["parts"]],
                 "finish_reason": s["finish"] or "error"}
                for s in states]


FAMILY = Gemini()
