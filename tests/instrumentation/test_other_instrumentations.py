"""Another instrumentation recording the same LLM calls as lqo's: each call would be two GenAI
spans, stored, counted and priced twice. lqo-distro leaves the known SDK instrumentations out
(``lqo.distro.duplicates``; the zero-code runs are in test_zero_code.py); in any setup, lqo's
instrumentation warns once per instrumentation whose span encloses a call's and records it."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import openai
import pytest
from opentelemetry import trace
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

from lqo.distro import duplicates

from .replay import RECORDINGS, ReplayServer, load_cassette

CHAT = RECORDINGS / "openai" / "openai__test_chat_completion_no_content.yaml"
OPENAI_V2 = "opentelemetry.instrumentation.openai_v2"


def _ep(value: str, name: str = "openai") -> Any:
    return SimpleNamespace(name=name, value=value)


@pytest.fixture(autouse=True)
def _no_pending_report() -> Any:
    yield
    duplicates._skipped.clear()


@pytest.mark.parametrize("value", [
    "opentelemetry.instrumentation.openai_v2:OpenAIInstrumentor",
    "opentelemetry.instrumentation.openai:OpenAIInstrumentor",  # OpenLLMetry's
    "openinference.instrumentation.openai:OpenAIInstrumentor",
    "opentelemetry.instrumentation.anthropic:AnthropicInstrumentor",
    "opentelemetry.instrumentation.ollama:OllamaInstrumentor",
])
def test_sdk_instrumentations_of_calls_lqo_records_are_left_out(value: str) -> None:
    assert duplicates.skip(_ep(value), {})
    assert duplicates._skipped and duplicates._skipped[-1].startswith("openai (")


@pytest.mark.parametrize("value", [
    "lqo.instrumentation.httpx:HttpxGenAIInstrumentor",
    "opentelemetry.instrumentation.httpx:HTTPXClientInstrumentor",  # HTTP spans: children, not copies
    "opentelemetry.instrumentation.google_genai:GoogleGenAiSdkInstrumentor",  # aiohttp: lqo may miss calls
    "opentelemetry.instrumentation.cohere:CohereInstrumentor",
    "opentelemetry.instrumentation.langchain:LangchainInstrumentor",
    "opentelemetry.instrumentation.openai_v2.extra:Other",  # a module, not a prefix
    "",
])
def test_other_instrumentations_load(value: str) -> None:
    assert not duplicates.skip(_ep(value), {})
    assert not duplicates._skipped


@pytest.mark.parametrize(("env", "skipped"), [
    ({"LQO_GENAI_SKIP_DUPLICATES": "false"}, False),
    ({"LQO_GENAI_SKIP_DUPLICATES": "0"}, False),
    ({"LQO_GENAI_SKIP_DUPLICATES": " Off "}, False),
    ({"LQO_GENAI_SKIP_DUPLICATES": "true"}, True),
    ({"LQO_GENAI_SKIP_DUPLICATES": ""}, True),
    # lqo's own is not loaded: nothing to leave out for it
    ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "flask, lqo_genai_httpx"}, False),
    ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "*"}, False),
    ({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "flask,lqo_genai"}, True),
])
def test_the_switch_and_lqo_disabled(env: dict[str, str], skipped: bool) -> None:
    assert duplicates.skip(_ep(f"{OPENAI_V2}:OpenAIInstrumentor"), env) is skipped


def test_report_is_one_line_a_warning_unless_chosen(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "lqo.distro")
    for value in (f"{OPENAI_V2}:OpenAIInstrumentor", "openinference.instrumentation.openai:X"):
        duplicates.skip(_ep(value), {})
    duplicates.report({})
    duplicates.report({})  # said once
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "left out 2 instrumentor(s)" in record.getMessage()
    assert "opentelemetry-instrumentation-openai-v2" in record.getMessage()
    assert "openinference-instrumentation-openai" in record.getMessage()
    assert "LQO_GENAI_SKIP_DUPLICATES=false" in record.getMessage()
    caplog.clear()
    duplicates.skip(_ep(f"{OPENAI_V2}:OpenAIInstrumentor"), {"LQO_GENAI_SKIP_DUPLICATES": "true"})
    duplicates.report({"LQO_GENAI_SKIP_DUPLICATES": "true"})
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def _calls(url: str, n: int) -> None:
    client = openai.OpenAI(base_url=url + "/v1", api_key="test-key", max_retries=0)
    for _ in range(n):
        client.chat.completions.create(model="gpt-4o-mini",
                                       messages=[{"role": "user", "content": "Say this is a test"}])


@pytest.mark.parametrize("defer", [True, False])
def test_an_sdk_instrumentation_around_lqo_is_reported_once(instrument: Any, caplog: pytest.LogCaptureFixture,
                                                            defer: bool) -> None:
    caplog.set_level(logging.WARNING, "lqo.instrumentation.httpx")
    inst = instrument(defer=defer)
    peer = OpenAIInstrumentor()
    peer.instrument(tracer_provider=inst.tracer_provider, meter_provider=inst.meter_provider)
    try:
        with ReplayServer(load_cassette(CHAT) * 3) as srv:
            _calls(srv.url, 3)
        ours = inst.genai_spans()
    finally:
        peer.uninstrument()
    outer = [s for s in inst.exporter.get_finished_spans() if s.instrumentation_scope.name == OPENAI_V2]
    assert len(ours) == len(outer) == 3  # the situation warned about: every call twice
    assert {s.parent.span_id for s in ours} == {s.context.span_id for s in outer}
    [warning] = [r for r in caplog.records if "also recorded by another instrumentation" in r.getMessage()]
    assert OPENAI_V2 in warning.getMessage()
    assert "Say this is a test" not in caplog.text  # no content in logs


@pytest.mark.parametrize(("attributes", "reported"), [
    ({"llm.request.type": "chat", "gen_ai.system": "openai"}, True),  # OpenLLMetry's convention
    ({"openinference.span.kind": "LLM"}, True),  # OpenInference's
    ({"gen_ai.operation.name": "chat"}, True),  # a framework's model call (semconv)
    ({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "helper"}, False),  # an agent: a real parent
    ({"gen_ai.operation.name": "execute_tool"}, False),
    ({"http.route": "/ask"}, False),  # the app's server span
    ({}, False),
])
def test_which_enclosing_spans_are_reported(instrument: Any, caplog: pytest.LogCaptureFixture,
                                            attributes: dict[str, str], reported: bool) -> None:
    caplog.set_level(logging.WARNING, "lqo.instrumentation.httpx")
    inst = instrument()
    tracer = inst.tracer_provider.get_tracer("some.framework")
    with ReplayServer(load_cassette(CHAT)) as srv, tracer.start_as_current_span("llm", attributes=attributes):
        _calls(srv.url, 1)
    [span] = inst.genai_spans()
    assert span.parent is not None
    warnings = [r.getMessage() for r in caplog.records if "also recorded" in r.getMessage()]
    assert len(warnings) == reported
    assert all("(some.framework)" in w for w in warnings)


def test_no_sdk_span_no_check(instrument: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A parent from another API implementation (no attributes to read) is left alone."""
    caplog.set_level(logging.WARNING, "lqo.instrumentation.httpx")
    inst = instrument()
    parent = trace.NonRecordingSpan(trace.SpanContext(1, 2, False, trace.TraceFlags(1)))
    with ReplayServer(load_cassette(CHAT)) as srv, trace.use_span(parent):
        _calls(srv.url, 1)
    [span] = inst.genai_spans()
    assert span.parent.span_id == 2
    assert not caplog.records
