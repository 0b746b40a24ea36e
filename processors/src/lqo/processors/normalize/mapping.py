"""One span's attributes and events, as another producer wrote them → current GenAI semconv.

Producers covered: older OTel GenAI conventions (``gen_ai.system``, ``prompt_tokens``…, the
``gen_ai.*.message`` / ``gen_ai.choice`` / ``gen_ai.content.*`` events), OpenLLMetry (flattened
``gen_ai.prompt.{i}.*`` / ``gen_ai.completion.{i}.*``, ``llm.request.type``, its token variants),
OpenInference (``llm.*``, ``input.value``/``output.value``, ``llm.input_messages.*``) and OpenLIT
(``gen_ai.usage.cost``, ``gen_ai.server.ttft``, its operation names).

A value already present under the semconv name always wins: normalizing never overwrites what
the producer said in the current conventions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from lqo.processors.normalize.messages import (
    Message,
    dumps,
    flat_message,
    loads,
    messages_from_value,
    openai_message,
    split_system,
    unflatten,
)

OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
FINISH_REASONS = "gen_ai.response.finish_reasons"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE = "gen_ai.usage.cache_creation.input_tokens"
REASONING = "gen_ai.usage.reasoning.output_tokens"
INPUT_MESSAGES = "gen_ai.input.messages"
OUTPUT_MESSAGES = "gen_ai.output.messages"
SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
TOOL_DEFINITIONS = "gen_ai.tool.definitions"
TTFC = "gen_ai.response.time_to_first_chunk"
REPORTED_COST = "gen_ai.usage.cost"  # not semconv: OpenLIT's; the cost processor reads it
ERROR_TYPE = "error.type"

# old name → semconv name, for values that only moved.
RENAMES: dict[str, str] = {
    "gen_ai.usage.prompt_tokens": INPUT_TOKENS,
    "gen_ai.usage.completion_tokens": OUTPUT_TOKENS,
    "llm.usage.prompt_tokens": INPUT_TOKENS,
    "llm.usage.completion_tokens": OUTPUT_TOKENS,
    "gen_ai.usage.cache_read_input_tokens": CACHE_READ,
    "gen_ai.usage.cache_creation_input_tokens": CACHE_WRITE,
    "gen_ai.usage.reasoning_tokens": REASONING,
    "gen_ai.usage.completion_tokens_details.reasoning_tokens": REASONING,
    "llm.token_count.prompt": INPUT_TOKENS,
    "llm.token_count.completion": OUTPUT_TOKENS,
    "llm.token_count.prompt_details.cache_read": CACHE_READ,
    "llm.token_count.prompt_details.cache_write": CACHE_WRITE,
    "llm.token_count.completion_details.reasoning": REASONING,
    "llm.model_name": RESPONSE_MODEL,
    "embedding.model_name": RESPONSE_MODEL,
    "gen_ai.openai.request.seed": "gen_ai.request.seed",
    "gen_ai.openai.request.response_format": "gen_ai.output.type",
    "gen_ai.openai.response.service_tier": "openai.response.service_tier",
    "gen_ai.server.ttft": TTFC,
    "session.id": "gen_ai.conversation.id",
    "gen_ai.user": "user.id",  # OpenLLMetry: the request's `user` (OpenAI's end-user id)
    "llm.user": "user.id",  # (older OpenLLMetry)
    "llm.cost.total": REPORTED_COST,
}
PROVIDER_KEYS = ("gen_ai.system", "llm.provider", "llm.system")
OPERATION_KEYS = ("llm.request.type", "gen_ai.type", "openinference.span.kind")
OTHER_KEYS = ("input.value", "output.value", "llm.invocation_parameters", "embedding.invocation_parameters",
              "llm.finish_reason", "gen_ai.openai.api_base", "gen_ai.prompt", "gen_ai.completion")
# Spans with any of these keys (or key prefixes), or events, need this module's Python work.
TRIGGER_KEYS = frozenset(RENAMES) | frozenset(PROVIDER_KEYS) | frozenset(OPERATION_KEYS) | frozenset(OTHER_KEYS)
TRIGGER_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.", "llm.input_messages.", "llm.output_messages.",
                    "llm.tools.", "llm.request.functions.")
MESSAGE_EVENTS = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                  "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}
TRIGGER_EVENTS = frozenset(MESSAGE_EVENTS) | {
    "gen_ai.choice", "gen_ai.content.prompt", "gen_ai.content.completion",
    "gen_ai.client.inference.operation.details", "First Token Stream Event",
}

# gen_ai.system / llm.system / llm.provider values → gen_ai.provider.name well-known values.
PROVIDER_NAMES = {
    "az.ai.openai": "azure.ai.openai", "azure": "azure.ai.openai", "azure_openai": "azure.ai.openai",
    "az.ai.inference": "azure.ai.inference", "aws": "aws.bedrock", "bedrock": "aws.bedrock",
    "vertex_ai": "gcp.vertex_ai", "vertexai": "gcp.vertex_ai", "gemini": "gcp.gemini", "google": "gcp.gen_ai",
    "mistralai": "mistral_ai", "mistral": "mistral_ai", "xai": "x_ai", "watsonx": "ibm.watsonx.ai",
}
# Operation values producers use → semconv gen_ai.operation.name.
OPERATION_NAMES = {
    "chat": "chat", "completion": "text_completion", "text_completion": "text_completion",
    "embedding": "embeddings", "embeddings": "embeddings", "tool": "execute_tool", "agent": "invoke_agent",
}
# llm.invocation_parameters keys → semconv request attributes.
REQUEST_PARAMS = {
    "temperature": "gen_ai.request.temperature", "top_p": "gen_ai.request.top_p", "top_k": "gen_ai.request.top_k",
    "max_tokens": "gen_ai.request.max_tokens", "max_completion_tokens": "gen_ai.request.max_tokens",
    "max_output_tokens": "gen_ai.request.max_tokens", "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty", "seed": "gen_ai.request.seed",
    "n": "gen_ai.request.choice.count", "stop": "gen_ai.request.stop_sequences",
}


@dataclass
class Span:
    """What the mapping sees of one span."""

    attrs: Mapping[str, str]
    events: list[tuple[str, int, dict[str, str]]] = field(default_factory=list)
    start_ns: int = 0
    status: str = "Unset"


@dataclass
class Result:
    attrs: Mapping[str, str]
    updates: dict[str, str] = field(default_factory=dict)
    mapped: set[str] = field(default_factory=set)  # producer keys whose meaning now lives elsewhere

    def put(self, key: str, value: Any, source: str | None = None, replace: bool = False) -> None:
        """Set ``key`` unless the span (or an earlier rule) already has it; note ``source`` as
        mapped. Empty values are not written."""
        if value is None or value == "" or value == []:
            return
        if source is not None:
            self.mapped.add(source)
        if replace or (key not in self.attrs and key not in self.updates):
            self.updates[key] = _scalar(value)

    def mark(self, source: str) -> None:
        self.mapped.add(source)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return dumps(value)


def normalize(span: Span) -> Result:
    attrs = span.attrs
    res = Result(attrs)

    for old, new in RENAMES.items():
        if old in attrs:
            res.put(new, attrs[old], old)
    _request_side(attrs, res)
    _provider(attrs, res)
    _operation(attrs, res)
    _messages(span, res)
    _response(attrs, res)
    _from_events(span, res)
    if span.status == "Error" and ERROR_TYPE not in attrs:
        exc = next((a.get("exception.type") for n, _, a in span.events if n == "exception"), None)
        res.put(ERROR_TYPE, exc or "_OTHER")
    if "gen_ai.openai.api_base" in attrs and "server.address" not in attrs:
        url = urlsplit(attrs["gen_ai.openai.api_base"])
        if url.hostname:
            res.put("server.address", url.hostname)
            res.put("server.port", str(url.port or (443 if url.scheme == "https" else 80)))
    return res


def _request_side(attrs: Mapping[str, str], res: Result) -> None:
    """OpenInference: the request model and parameters from ``*.invocation_parameters``."""
    for key in ("llm.invocation_parameters", "embedding.invocation_parameters"):
        params = loads(attrs.get(key))
        if isinstance(params, Mapping):
            res.put(REQUEST_MODEL, params.get("model"), key)
            for name, target in REQUEST_PARAMS.items():
                value = params.get(name)
                if name == "stop" and isinstance(value, str):
                    value = [value]
                if isinstance(value, int | float | list) and not isinstance(value, bool):
                    res.put(target, value)
    request = loads(attrs.get("input.value")) if attrs.get("input.mime_type", "").endswith("json") else None
    if isinstance(request, Mapping):
        res.put(REQUEST_MODEL, request.get("model"))
    res.put(REQUEST_MODEL, attrs.get("llm.model_name") or attrs.get("embedding.model_name"))


def _provider(attrs: Mapping[str, str], res: Result) -> None:
    if PROVIDER in attrs:
        return
    # OpenInference: llm.provider names the host (azure, aws, google), llm.system the API family.
    host = (attrs.get("llm.provider") or "").lower()
    system = (attrs.get("gen_ai.system") or attrs.get("llm.system") or "").lower()
    value = host if host in ("azure", "aws", "google") or not system else system
    for key in PROVIDER_KEYS:
        if key in attrs:
            res.put(PROVIDER, PROVIDER_NAMES.get(value, value), key)


def _operation(attrs: Mapping[str, str], res: Result) -> None:
    current = attrs.get(OPERATION)
    if current is not None:
        if OPERATION_NAMES.get(current, current) != current:
            # OpenLIT's "embedding": a non-semconv value under the semconv key is replaced.
            res.put(OPERATION, OPERATION_NAMES[current], replace=True)
        return
    for key in ("llm.request.type", "gen_ai.type"):
        if key in attrs:
            res.put(OPERATION, OPERATION_NAMES.get(attrs[key].lower(), attrs[key].lower()), key)
            return
    kind = attrs.get("openinference.span.kind", "").upper()
    if kind == "LLM":
        chat = any(k.startswith("llm.input_messages.") for k in attrs) or '"messages"' in attrs.get("input.value", "")
        res.put(OPERATION, "chat" if chat else "text_completion")
    elif kind in ("EMBEDDING", "TOOL", "AGENT"):
        res.put(OPERATION, OPERATION_NAMES[kind.lower()])


def _messages(span: Span, res: Result) -> None:
    attrs = span.attrs
    inputs: list[Message] = []
    outputs: list[Message] = []
    oi_in = unflatten(attrs, "llm.input_messages.")
    if oi_in:
        inputs = [flat_message({k.removeprefix("message."): v for k, v in f.items()}) for f in oi_in.values()]
    ll_in = unflatten(attrs, "gen_ai.prompt.")
    if ll_in and not inputs:
        inputs = [flat_message(f) for f in ll_in.values()]
    oi_out = unflatten(attrs, "llm.output_messages.")
    finish = attrs.get("llm.finish_reason")
    if oi_out:
        outputs = [flat_message({k.removeprefix("message."): v for k, v in f.items()}, finish)
                   for f in oi_out.values()]
    ll_out = unflatten(attrs, "gen_ai.completion.")
    if ll_out and not outputs:
        outputs = [flat_message(f) for f in ll_out.values()]
    if not inputs and "gen_ai.prompt" in attrs:
        inputs = messages_from_value(attrs["gen_ai.prompt"], "user")
    if not outputs and "gen_ai.completion" in attrs:
        outputs = messages_from_value(attrs["gen_ai.completion"], "assistant")
    if not inputs and "input.value" in attrs and "openinference.span.kind" in attrs:
        inputs = messages_from_value(attrs["input.value"], "user") if _is_llm(attrs) else []
    if not outputs and "output.value" in attrs and _is_llm(attrs):
        outputs = messages_from_value(attrs["output.value"], "assistant")
    _put_messages(attrs, inputs, outputs, res)
    tools = unflatten(attrs, "llm.tools.")
    if tools:
        defs = [_tool_definition(d) for d in (loads(t.get("tool.json_schema")) for t in tools.values())
                if isinstance(d, Mapping)]
        res.put(TOOL_DEFINITIONS, dumps(defs) if defs else None)
    functions = unflatten(attrs, "llm.request.functions.")
    if functions:
        res.put(TOOL_DEFINITIONS, dumps([{"type": "function", "name": f.get("name"), "description": f.get("description"),
                                      "parameters": loads(f.get("parameters"))} for f in functions.values()]))
    # what now lives in the semconv attributes (only families that produced something)
    moved: tuple[str, ...] = ()
    if inputs:
        moved += ("llm.input_messages.", "gen_ai.prompt.", "gen_ai.prompt")
    if outputs:
        moved += ("llm.output_messages.", "gen_ai.completion.", "gen_ai.completion")
    if TOOL_DEFINITIONS in res.updates:
        moved += ("llm.tools.", "llm.request.functions.")
    for key in attrs:
        if moved and key.startswith(moved) and (key.count(".") > 1 or key in moved):
            res.mark(key)
    if finish:
        res.put(FINISH_REASONS, [finish], "llm.finish_reason")


def _is_llm(attrs: Mapping[str, str]) -> bool:
    return attrs.get("openinference.span.kind", "").upper() == "LLM"


def _put_messages(attrs: Mapping[str, str], inputs: list[Message], outputs: list[Message], res: Result) -> None:
    provider = attrs.get(PROVIDER) or (attrs.get("gen_ai.system") or attrs.get("llm.system") or "").lower()
    if inputs and provider == "anthropic" and SYSTEM_INSTRUCTIONS not in attrs:
        inputs, system = split_system(inputs)
        res.put(SYSTEM_INSTRUCTIONS, dumps(system) if system else None)
    if inputs:
        res.put(INPUT_MESSAGES, dumps(inputs))
    if outputs:
        res.put(OUTPUT_MESSAGES, dumps(outputs))
        reasons = [m["finish_reason"] for m in outputs if m.get("finish_reason")]
        if reasons:
            res.put(FINISH_REASONS, reasons)


def _tool_definition(schema: Mapping[str, Any]) -> dict[str, Any]:
    function = schema.get("function") if isinstance(schema.get("function"), Mapping) else schema
    return {"type": schema.get("type", "function"), "name": function.get("name"),
            "description": function.get("description"),
            "parameters": function.get("parameters") or function.get("input_schema")}


def _response(attrs: Mapping[str, str], res: Result) -> None:
    """OpenInference keeps the raw response in ``output.value``: its id is the response id."""
    if RESPONSE_ID in attrs or not attrs.get("output.mime_type", "").endswith("json"):
        return
    response = loads(attrs.get("output.value"))
    if isinstance(response, Mapping) and isinstance(response.get("id"), str):
        res.put(RESPONSE_ID, response["id"])


def _from_events(span: Span, res: Result) -> None:
    inputs: list[Message] = []
    outputs: list[Message] = []
    for name, stamp, ev in span.events:
        if name in MESSAGE_EVENTS:
            inputs.append(_event_message(ev, MESSAGE_EVENTS[name]))
        elif name == "gen_ai.choice":
            message = loads(ev.get("message"))
            if not isinstance(message, Mapping):
                message = {"content": ev.get("message.content") or ev.get("content"),
                           "tool_calls": ev.get("message.tool_calls") or ev.get("tool_calls")}
            outputs.append(openai_message({"role": "assistant", **message}, ev.get("finish_reason")))
        elif name == "gen_ai.content.prompt" and "gen_ai.prompt" in ev:
            inputs.extend(messages_from_value(ev["gen_ai.prompt"], "user"))
        elif name == "gen_ai.content.completion" and "gen_ai.completion" in ev:
            outputs.extend(messages_from_value(ev["gen_ai.completion"], "assistant"))
        elif name == "gen_ai.client.inference.operation.details":
            for key in (INPUT_MESSAGES, OUTPUT_MESSAGES, SYSTEM_INSTRUCTIONS, TOOL_DEFINITIONS):
                res.put(key, ev.get(key))
        elif name == "First Token Stream Event" and stamp and span.start_ns:
            res.put(TTFC, _seconds(stamp - span.start_ns))
    _put_messages(span.attrs, inputs, outputs, res)


def _event_message(ev: Mapping[str, str], role: str) -> Message:
    msg: dict[str, Any] = {"role": ev.get("role") or role}
    content = ev.get("content")
    parsed = loads(content)
    msg["content"] = parsed if isinstance(parsed, list) else content
    if ev.get("tool_calls"):
        msg["tool_calls"] = ev["tool_calls"]
    if role == "tool" or ev.get("id"):
        msg["tool_call_id"] = ev.get("id") or ev.get("tool_call_id")
    return openai_message(msg)


def _seconds(ns: int) -> str:
    return repr(max(ns, 0) / 1e9)
