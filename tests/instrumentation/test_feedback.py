"""``record_evaluation``: one semconv ``gen_ai.evaluation.result`` log record about one call, by
its response id or its span; never raising into the application. (Through a collector into its
evaluations table: test_zero_code.py, tests/collector/test_evaluations.py.)"""

from __future__ import annotations

import logging
import math
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider

from lqo.instrumentation.httpx import feedback as feedback_module
from lqo.instrumentation.httpx import record_evaluation


@pytest.fixture
def logs() -> Any:
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    feedback_module._warned.clear()
    yield provider, exporter
    provider.shutdown()


def _records(exporter: Any) -> list[Any]:
    return [r.log_record for r in exporter.get_finished_logs()]


def test_feedback_by_response_id_names_no_span(logs: Any) -> None:
    provider, exporter = logs
    tracer = TracerProvider().get_tracer("app")
    with tracer.start_as_current_span("POST /feedback"):  # the request that brings the feedback
        assert record_evaluation("user_feedback", label="thumbs_down", score=0, explanation="wrong total",
                                 response_id="chatcmpl-9", attributes={"app.channel": "web"},
                                 logger_provider=provider)
    [record] = _records(exporter)
    assert record.event_name == "gen_ai.evaluation.result"
    assert dict(record.attributes) == {
        "gen_ai.evaluation.name": "user_feedback", "gen_ai.evaluation.score.label": "thumbs_down",
        "gen_ai.evaluation.score.value": 0.0, "gen_ai.evaluation.explanation": "wrong total",
        "gen_ai.response.id": "chatcmpl-9", "app.channel": "web"}
    # not the current span's ids: the collector would take that span for the call's
    assert not record.span_id and not record.trace_id


def test_feedback_in_the_calls_span_context(logs: Any) -> None:
    provider, exporter = logs
    call = TracerProvider().get_tracer("app").start_span("chat gpt-4o")
    call.end()
    assert record_evaluation("relevance", score=0.8, context=trace.set_span_in_context(call), logger_provider=provider)
    [record] = _records(exporter)
    ids = call.get_span_context()
    assert (record.trace_id, record.span_id) == (ids.trace_id, ids.span_id)
    assert "gen_ai.response.id" not in record.attributes


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"name": "", "response_id": "r"}, "needs a name"),
    ({"name": "x"}, "names no call"),
    ({"name": "x", "context": trace.set_span_in_context(trace.INVALID_SPAN)}, "names no call"),
    ({"name": "x", "response_id": "r", "score": math.nan}, "finite number"),
    ({"name": "x", "response_id": "r", "score": "0.5"}, "finite number"),
    ({"name": "x", "response_id": "r", "score": True}, "finite number"),
])
def test_what_it_cannot_send_is_said_once_and_dropped(logs: Any, caplog: pytest.LogCaptureFixture,
                                                      kwargs: dict[str, Any], says: str) -> None:
    provider, exporter = logs
    name = kwargs.pop("name")
    with caplog.at_level(logging.WARNING, "lqo.instrumentation.httpx"):
        assert not record_evaluation(name, logger_provider=provider, **kwargs)
        assert not record_evaluation(name, logger_provider=provider, **kwargs)
    assert _records(exporter) == []
    assert len([r for r in caplog.records if says in r.getMessage()]) == 1  # said once, not per call


def test_a_failing_logs_pipeline_never_reaches_the_application(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def get_logger(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("exporter misconfigured")

    feedback_module._warned.clear()
    with caplog.at_level(logging.WARNING, "lqo.instrumentation.httpx"):
        assert not record_evaluation("user_feedback", response_id="r", logger_provider=Broken())
    assert "failed (RuntimeError)" in caplog.text
