"""genai_normalize on batches directly: what it leaves alone, what wins, dropping originals, and
hostile input. (Real producers through the collector: test_normalize_producers.py.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from lqo.collector.components import factories
from lqo.collector.model.spanbatch import SCHEMA, SpanBatch
from lqo.processors.normalize import NormalizeConfig, NormalizeProcessor

WHEN = datetime(2026, 11, 1, 12)


def _batch(spans: list[dict[str, Any]], events: list[list[tuple[str, int, dict[str, str]]]] | None = None,
           status: str = "Unset") -> SpanBatch:
    rows = []
    for i, attrs in enumerate(spans):
        evs = (events or [[] for _ in spans])[i]
        row: dict[str, Any] = {name: [] if name.startswith(("Events.", "Links.")) else None for name in SCHEMA.names}
        row.update(Timestamp=WHEN, SpanName="span", TraceId="t", SpanId=f"s{i}", StatusCode=status,
                   SpanAttributes=[(k, str(v)) for k, v in attrs.items()],
                   **{"Events.Name": [e[0] for e in evs],
                      "Events.Timestamp": [datetime.fromtimestamp(e[1] / 1e9, UTC).replace(tzinfo=None) for e in evs],
                      "Events.Attributes": [list(e[2].items()) for e in evs]})
        rows.append(row)
    return SpanBatch(pa.Table.from_pylist(rows, schema=SCHEMA))


def _run(batch: SpanBatch, **config: Any) -> list[dict[str, str]]:
    out = NormalizeProcessor(NormalizeConfig(**config)).process(batch)
    return [dict(kv) for kv in out.table.column("SpanAttributes").to_pylist()]


def test_current_semconv_and_plain_spans_are_left_as_they_are() -> None:
    batch = _batch([
        {"gen_ai.provider.name": "openai", "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 3},
        {"http.request.method": "GET", "session.id": "abc"},  # not GenAI: session.id is no reason to touch it
    ])
    out = NormalizeProcessor(NormalizeConfig()).process(batch)
    assert out is batch


def test_a_semconv_value_already_present_wins() -> None:
    [a] = _run(_batch([{"gen_ai.system": "openai", "gen_ai.provider.name": "azure.ai.openai",
                        "gen_ai.usage.prompt_tokens": 10, "gen_ai.usage.input_tokens": 12}]))
    assert a["gen_ai.provider.name"] == "azure.ai.openai"
    assert a["gen_ai.usage.input_tokens"] == "12"


@pytest.mark.parametrize(("system", "provider"), [
    ("openai", "openai"), ("OpenAI", "openai"), ("az.ai.openai", "azure.ai.openai"), ("vertex_ai", "gcp.vertex_ai"),
    ("mistralai", "mistral_ai"), ("xai", "x_ai"), ("some-new-vendor", "some-new-vendor"),
])
def test_provider_names(system: str, provider: str) -> None:
    [a] = _run(_batch([{"gen_ai.system": system}]))
    assert a["gen_ai.provider.name"] == provider


def test_openinference_host_names_the_provider() -> None:
    [a] = _run(_batch([{"llm.system": "openai", "llm.provider": "azure", "openinference.span.kind": "LLM"}]))
    assert a["gen_ai.provider.name"] == "azure.ai.openai"


def test_keep_originals_false_drops_what_was_moved() -> None:
    [a] = _run(_batch([{
        "gen_ai.system": "openai", "gen_ai.usage.prompt_tokens": 10, "gen_ai.usage.completion_tokens": 2,
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "hi", "llm.usage.total_tokens": 12,
        "gen_ai.request.model": "gpt-4o",
    }]), keep_originals=False)
    assert a == {
        "gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": "10", "gen_ai.usage.output_tokens": "2",
        "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"hi"}]}]',
        "llm.usage.total_tokens": "12", "gen_ai.request.model": "gpt-4o",
    }


def test_who_and_which_conversation_get_semconv_names() -> None:
    """OpenLLMetry's end-user id and OpenInference's session become ``user.id`` and
    ``gen_ai.conversation.id`` (the GenAI table's UserId and ConversationId); one already there wins."""
    [a, b, c] = _run(_batch([
        {"gen_ai.system": "openai", "gen_ai.user": "u-1", "session.id": "s-1"},
        {"gen_ai.system": "openai", "llm.user": "u-2"},
        {"gen_ai.system": "openai", "gen_ai.user": "u-3", "user.id": "app-user", "session.id": "s-3",
         "gen_ai.conversation.id": "conv-3"},
    ]), keep_originals=False)
    assert (a["user.id"], a["gen_ai.conversation.id"], b["user.id"]) == ("u-1", "s-1", "u-2")
    assert not {"gen_ai.user", "llm.user", "session.id"} & (set(a) | set(b))
    assert (c["user.id"], c["gen_ai.conversation.id"]) == ("app-user", "conv-3")


def test_openinference_tool_span_becomes_genai() -> None:
    batch = _batch([{"openinference.span.kind": "TOOL", "tool.name": "search"}])
    out = NormalizeProcessor(NormalizeConfig()).process(batch)
    assert dict(out.table.column("SpanAttributes")[0].as_py())["gen_ai.operation.name"] == "execute_tool"
    assert out.genai_mask().tolist() == [True]


def test_first_token_event_gives_time_to_first_chunk() -> None:
    start = int(WHEN.replace(tzinfo=UTC).timestamp() * 1e9)
    [a] = _run(_batch([{"llm.system": "openai", "openinference.span.kind": "LLM"}],
                      [[("First Token Stream Event", start + 250_000_000, {})]]))
    assert float(a["gen_ai.response.time_to_first_chunk"]) == pytest.approx(0.25)


@pytest.mark.parametrize("attrs", [
    {"openinference.span.kind": "LLM", "input.value": "{not json", "input.mime_type": "application/json",
     "output.value": "[[[[", "output.mime_type": "application/json", "llm.invocation_parameters": "null"},
    {"gen_ai.system": "openai", "gen_ai.prompt.99999999999999999999.content": "x", "gen_ai.prompt.x.role": "user",
     "gen_ai.completion.0.tool_calls.0.arguments": "{\"a\":"},
    {"gen_ai.system": "openai", "gen_ai.prompt": "[" * 100_000 + "]" * 100_000},
    {"llm.system": "openai", "llm.tools.0.tool.json_schema": "[1,2]", "llm.input_messages.0.message.contents.0."
     "message_content.type": "image"},
    {"gen_ai.system": "", "llm.request.type": "", "gen_ai.usage.prompt_tokens": ""},
])
def test_hostile_input_is_mapped_or_left_but_never_fails(attrs: dict[str, str]) -> None:
    events = [[("gen_ai.choice", 0, {"message": "{\"content\": [1, {\"type\": null}]}"}),
               ("gen_ai.user.message", 0, {"content": "[{\"type\": \"image_url\", \"image_url\": 3}]"}),
               ("gen_ai.content.prompt", 0, {"gen_ai.prompt": "{\"messages\": 5}"})]]
    [a] = _run(_batch([attrs], events))
    for key, value in attrs.items():
        assert a[key] == str(value)  # originals intact
    for key in ("gen_ai.input.messages", "gen_ai.output.messages"):
        if key in a:
            assert isinstance(json.loads(a[key]), list)


def test_error_status_without_exception_event() -> None:
    [a] = _run(_batch([{"gen_ai.system": "openai"}], status="Error"))
    assert a["error.type"] == "_OTHER"


def test_registered_and_config_checked() -> None:
    assert "genai_normalize" in factories("processors")
    with pytest.raises(ValidationError):
        NormalizeConfig(keep_originals="sometimes")
    with pytest.raises(ValidationError):
        NormalizeConfig(unknown=1)


def test_keep_originals_false_keeps_what_could_not_be_mapped() -> None:
    [a] = _run(_batch([{"gen_ai.system": "openai", "llm.tools.0.tool.json_schema": "not json",
                        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "hi"}]), keep_originals=False)
    assert a["llm.tools.0.tool.json_schema"] == "not json"  # no tool definitions came of it: kept
    assert "gen_ai.prompt.0.content" not in a and "gen_ai.input.messages" in a
