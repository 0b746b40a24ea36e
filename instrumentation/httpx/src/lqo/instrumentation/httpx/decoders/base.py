"""The decoder contract: one module per API family, each exporting ``FAMILY``."""

from __future__ import annotations

from typing import Any, Protocol

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga

from .._record import CallRecord, as_id, as_int, as_list, as_number, as_str

USER_ID = "user.id"
CONVERSATION_ID = "gen_ai.conversation.id"

# Request parameters that carry the same meaning across families: body key -> attribute.
COMMON_PARAMS = {
    "temperature": ga.GEN_AI_REQUEST_TEMPERATURE,
    "top_p": ga.GEN_AI_REQUEST_TOP_P,
    "top_k": ga.GEN_AI_REQUEST_TOP_K,
    "frequency_penalty": ga.GEN_AI_REQUEST_FREQUENCY_PENALTY,
    "presence_penalty": ga.GEN_AI_REQUEST_PRESENCE_PENALTY,
    "seed": ga.GEN_AI_REQUEST_SEED,
}


class Stream(Protocol):
    """A streamed response's events, decoded JSON each, then ``finish`` at its end.

    A stream may also have ``skip(name, payload) -> bool``: asked with an event's name and raw
    JSON bytes before they are decoded; True when the event cannot change the telemetry (a
    content delta while content capture is off), so it is not decoded. It must answer from
    what it has already seen and bytes alone, and err towards False. It may also have
    ``quiet() -> re.Pattern | None``: a pattern such that, from now on, every event whose bytes
    do not match it would be skipped; the parser then passes over such events in one search.
    And ``run(buf, start, end) -> int``: asked before each message is handled, it may take a
    run of messages from ``start`` without decoding them (capture on: text-only deltas, their
    text read from the bytes, ``_record.read_texts``) and returns where the run ended, or
    ``start``. What it takes must leave the record exactly as decoding them would.
    """

    def event(self, name: str, data: Any) -> None: ...

    def finish(self) -> None: ...


class Family(Protocol):
    name: str
    provider: str

    def operation(self, path: str) -> str | None:
        """The GenAI operation a POST to ``path`` performs, or None if not this family's."""

    def request(self, operation: str, body: dict[str, Any], rec: CallRecord) -> None: ...

    def response(self, operation: str, body: Any, rec: CallRecord) -> None: ...

    def stream(self, operation: str, rec: CallRecord) -> Stream: ...

    # Optional: ``headers(operation, headers, rec)``, given the response headers before the body
    # is decoded (Bedrock gives every model's token counts there).


def request_params(body: dict[str, Any], rec: CallRecord, extra: dict[str, str] | None = None) -> None:
    attrs = rec.attrs
    for key, attr in COMMON_PARAMS.items():
        value = as_number(body.get(key))
        if value is not None:
            attrs[attr] = value
    if extra:
        for key, attr in extra.items():
            value = as_number(body.get(key))
            if value is not None:
                attrs[attr] = value
    stop = body.get("stop", body.get("stop_sequences"))
    if isinstance(stop, str):
        attrs[ga.GEN_AI_REQUEST_STOP_SEQUENCES] = [stop]
    elif isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
        attrs[ga.GEN_AI_REQUEST_STOP_SEQUENCES] = stop
    if body.get("stream") is True:
        attrs[ga.GEN_AI_REQUEST_STREAM] = True


def set_identity(rec: CallRecord, user: Any = None, conversation: Any = None) -> None:
    """The end user (``user.id``) and conversation (``gen_ai.conversation.id``) a request names.
    An identifier over ``MAX_ID_CHARS`` is left out, not cut."""
    user = as_id(user)
    if user:
        rec.attrs[USER_ID] = user
    conversation = as_id(conversation)
    if conversation:
        rec.attrs[CONVERSATION_ID] = conversation


def openai_user(body: dict[str, Any]) -> Any:
    """OpenAI's end-user identifier: ``safety_identifier``, or the older ``user`` it replaces."""
    return as_id(body.get("safety_identifier")) or body.get("user")


def set_tokens(rec: CallRecord, input_tokens: Any = None, output_tokens: Any = None) -> None:
    value = as_int(input_tokens)
    if value is not None:
        rec.input_tokens = value
    value = as_int(output_tokens)
    if value is not None:
        rec.output_tokens = value


def set_usage_without_cache(rec: CallRecord, base: Any, read: Any, written: Any, output: Any) -> None:
    """Usage from an API whose input count leaves out the tokens read from or written to the
    prompt cache (Anthropic, Bedrock): semconv's input count includes them."""
    base, read, written, output = as_int(base), as_int(read), as_int(written), as_int(output)
    if base is not None:
        rec.input_tokens = base + (read or 0) + (written or 0)
    if read is not None:
        rec.cache_read_tokens = read
    if written is not None:
        rec.cache_creation_tokens = written
    if output is not None:
        rec.output_tokens = output


def set_response_identity(rec: CallRecord, body: dict[str, Any], id_key: str = "id", model_key: str = "model") -> None:
    rid = as_str(body.get(id_key))
    if rid:
        rec.attrs[ga.GEN_AI_RESPONSE_ID] = rid
    model = as_str(body.get(model_key))
    if model:
        rec.response_model = model


def tool_definitions(tools: Any) -> list[dict[str, Any]] | None:
    """Tool definitions as semconv's ``gen_ai.tool.definitions`` (captured with content only)."""
    out = []
    for tool in as_list(tools):
        if not isinstance(tool, dict):
            continue
        fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        name = fn.get("name")
        if not isinstance(name, str):
            continue
        entry: dict[str, Any] = {"type": "function", "name": name}
        if isinstance(fn.get("description"), str):
            entry["description"] = fn["description"]
        params = fn.get("parameters", fn.get("input_schema"))
        if params is not None:
            entry["parameters"] = params
        out.append(entry)
    return out or None
