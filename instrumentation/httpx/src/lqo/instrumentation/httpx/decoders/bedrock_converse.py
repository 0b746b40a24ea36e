"""AWS Bedrock Converse (``POST …/model/{modelId}/converse``, ``…/converse-stream``).

Bedrock's one API for every model family, as httpx-based clients call it (LiteLLM among them;
boto3 itself sends through urllib3, which this package does not instrument). The model is in the
path; parameters sit under ``inferenceConfig``; content is a list of typed blocks (``text``,
``toolUse``, ``toolResult``, ``reasoningContent``, ``image``…). A stream is AWS's binary event
stream of ``messageStart``, ``contentBlockStart/Delta/Stop``, ``messageStop`` and ``metadata``
(the usage) events, each a JSON payload. Usage: ``inputTokens`` excludes the tokens read from
or written to the prompt cache (as Anthropic's), so the semconv input count adds them.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga

from .._record import CallRecord, as_dict, as_int, as_list, as_str, text_part
from .._streams import EXCEPTION
from .base import request_params, set_usage_without_cache, tool_definitions
from .bedrock import CONVERSE, model_in_path

_MEDIA = ("image", "document", "video", "audio")


def _parts(content: Any) -> list[dict[str, Any]]:
    """Converse content blocks as semconv message parts."""
    parts: list[dict[str, Any]] = []
    for block in as_list(content):
        block = as_dict(block)
        if isinstance(block.get("text"), str):
            parts.append(text_part(block["text"]))
        elif "toolUse" in block:
            use = as_dict(block["toolUse"])
            parts.append({"type": "tool_call", "id": use.get("toolUseId"), "name": use.get("name"),
                          "arguments": use.get("input")})
        elif "toolResult" in block:
            result = as_dict(block["toolResult"])
            parts.append({"type": "tool_call_response", "id": result.get("toolUseId"), "response": result.get("content")})
        elif "reasoningContent" in block:
            text = as_dict(as_dict(block["reasoningContent"]).get("reasoningText")).get("text")
            if isinstance(text, str):
                parts.append({"type": "reasoning", "content": text})
        elif kind := next((k for k in _MEDIA if k in block), None):
            media = as_dict(block[kind])
            data = as_dict(media.get("source")).get("bytes")
            if isinstance(data, str):
                fmt = media.get("format")
                parts.append({"type": "blob", "modality": kind, "content": data,
                              **({"mime_type": f"{kind}/{fmt}"} if isinstance(fmt, str) else {})})
            else:
                parts.append({"type": kind})
        elif "cachePoint" not in block and block:
            parts.append({"type": str(next(iter(block)))})
    return parts


class Converse:
    name = "aws.bedrock.converse"
    provider = "aws.bedrock"

    def operation(self, path: str) -> str | None:
        return "chat" if model_in_path(path, CONVERSE) is not None else None

    def request(self, operation: str, body: dict[str, Any], rec: CallRecord) -> None:
        config = as_dict(body.get("inferenceConfig"))
        request_params({"temperature": config.get("temperature"), "top_p": config.get("topP"),
                        "max_tokens": config.get("maxTokens"), "stop_sequences": config.get("stopSequences")},
                       rec, {"max_tokens": ga.GEN_AI_REQUEST_MAX_TOKENS})
        if not rec.capture:
            return
        rec.input_messages = [{"role": str(m.get("role") or "user"), "parts": _parts(m.get("content"))}
                              for m in as_list(body.get("messages")) if isinstance(m, dict)]
        system = _parts(body.get("system"))
        if system:
            rec.system_instructions = system
        specs = [as_dict(as_dict(t).get("toolSpec")) for t in as_list(as_dict(body.get("toolConfig")).get("tools"))]
        tools = tool_definitions([{"name": t.get("name"), "description": t.get("description"),
                                   "parameters": as_dict(t.get("inputSchema")).get("json")} for t in specs])
        if tools:
            rec.tool_definitions = tools

    def response(self, operation: str, body: Any, rec: CallRecord) -> None:
        body = as_dict(body)
        reason = as_str(body.get("stopReason"))
        if reason:
            rec.finish_reasons = [reason]
        if rec.capture:
            message = as_dict(as_dict(body.get("output")).get("message"))
            rec.output_messages = [{"role": str(message.get("role") or "assistant"),
                                    "parts": _parts(message.get("content")), "finish_reason": reason or "error"}]
        usage = as_dict(body.get("usage"))
        set_usage_without_cache(rec, usage.get("inputTokens"), usage.get("cacheReadInputTokens"),
                                usage.get("cacheWriteInputTokens"), usage.get("outputTokens"))

    def stream(self, operation: str, rec: CallRecord) -> ConverseStream:
        return ConverseStream(self, operation, rec)


class ConverseStream:
    """Rebuilds the Converse response from the stream's events (``StreamParser``'s
    ``eventstream`` kind: each event's type and JSON payload)."""

    __slots__ = ("_blocks", "_body", "_family", "_op", "_rec")

    def __init__(self, family: Converse, operation: str, rec: CallRecord) -> None:
        self._family = family
        self._op = operation
        self._rec = rec
        self._body: dict[str, Any] = {}
        self._blocks: dict[int, dict[str, Any]] = {}  # index -> kind and pieces

    def _block(self, data: dict[str, Any], kind: str) -> dict[str, Any]:
        index = as_int(data.get("contentBlockIndex")) or 0
        return self._blocks.setdefault(index, {"kind": kind, "pieces": []})

    def event(self, name: str, data: Any) -> None:
        data = as_dict(data)
        if name == "messageStart":
            self._body.setdefault("role", data.get("role"))
        elif name == "messageStop":
            self._body["stopReason"] = data.get("stopReason")
        elif name == "metadata":
            self._body["usage"] = data.get("usage")
        elif name.startswith(EXCEPTION):  # e.g. throttlingException mid-stream
            self._rec.attrs["error.type"] = name[len(EXCEPTION):]
        elif not self._rec.capture:
            return
        elif name == "contentBlockStart":
            use = as_dict(as_dict(data.get("start")).get("toolUse"))
            if use:
                self._block(data, "toolUse").update(id=use.get("toolUseId"), name=use.get("name"))
        elif name == "contentBlockDelta":
            delta = as_dict(data.get("delta"))
            if isinstance(delta.get("text"), str):
                self._block(data, "text")["pieces"].append(delta["text"])
            elif isinstance(as_dict(delta.get("toolUse")).get("input"), str):
                self._block(data, "toolUse")["pieces"].append(delta["toolUse"]["input"])
            elif isinstance(as_dict(delta.get("reasoningContent")).get("text"), str):
                self._block(data, "reasoning")["pieces"].append(delta["reasoningContent"]["text"])

    def finish(self) -> None:
        if not self._body:
            return
        content = []
        for index in sorted(self._blocks):
            block = self._blocks[index]
            joined = "".join(block["pieces"])
            if block["kind"] == "toolUse":
                try:
                    arguments = json.loads(joined) if joined else {}
                except ValueError:
                    arguments = joined
                content.append({"toolUse": {"toolUseId": block.get("id"), "name": block.get("name"), "input": arguments}})
            elif block["kind"] == "reasoning":
                content.append({"reasoningContent": {"reasoningText": {"text": joined}}})
            else:
                content.append({"text": joined})
        body = {**self._body, "output": {"message": {"role": self._body.get("role") or "assistant", "content": content}}}
        self._family.response(self._op, body, self._rec)


FAMILY = Converse()
