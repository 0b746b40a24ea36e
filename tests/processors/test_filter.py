"""The ``filter`` processor: keep only GenAI spans, drop spans by rule; and end to end, what a
collector with it first in the pipeline stores and counts."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pytest
import yaml
from conftest import ROOT
from opentelemetry.trace import SpanKind

from lqo.collector.config import ConfigError, validate_section
from lqo.collector.model.spanbatch import SpanBatch
from lqo.processors.filter import FilterConfig, FilterProcessor

from .spans import batch_of, chat, otlp_tracer


def _batch(spans: list[tuple[str | None, str, str | None, dict[str, str]]]) -> SpanBatch:
    """(service, span name, kind, attributes) per span."""
    batch = batch_of([attrs for _, _, _, attrs in spans])
    table = batch.table
    for column, values in (("ServiceName", [s[0] for s in spans]), ("SpanName", [s[1] for s in spans]),
                           ("SpanKind", [s[2] for s in spans])):
        i = table.schema.get_field_index(column)
        table = table.set_column(i, table.schema.field(i), pa.array(values, pa.string()))
    return SpanBatch(table, approx_bytes=1000 * len(spans))


SPANS = [
    ("shop", "chat gpt-4o", "Client", chat(user="hi")),
    ("shop", "GET /healthz", "Server", {"http.route": "/healthz", "http.response.status_code": "200"}),
    ("shop", "GET /cart", "Server", {"http.route": "/cart"}),
    ("shop", "SELECT carts", "Client", {"db.system.name": "postgresql"}),
    ("health-probe", "probe", "Internal", {}),
    ("batch-jobs", "embeddings text-embedding-3-small", "Client",
     {"gen_ai.operation.name": "embeddings", "gen_ai.request.model": "text-embedding-3-small"}),
    (None, "chat llama3", None, {"llm.model_name": "llama3"}),  # OpenInference shape, no service
]


def _kept(config: dict[str, Any], spans: list = SPANS) -> list[str]:
    processor = FilterProcessor(FilterConfig.model_validate(config))
    out = processor.process(_batch(spans))
    return out.table.column("SpanName").to_pylist()


def test_keep_genai_drops_every_other_span() -> None:
    assert _kept({"keep": "genai"}) == ["chat gpt-4o", "embeddings text-embedding-3-small", "chat llama3"]


@pytest.mark.parametrize(("rule", "dropped"), [
    ({"span_name": "GET /healthz"}, ["GET /healthz"]),
    ({"span_name": "GET /.*"}, ["GET /healthz", "GET /cart"]),
    ({"span_name": "GET"}, []),  # the whole name must match
    ({"service_name": "health-.*"}, ["probe"]),
    ({"service_name": "shop", "span_kind": "Server"}, ["GET /healthz", "GET /cart"]),  # all fields of a rule
    ({"attributes": {"http.route": "/healthz"}}, ["GET /healthz"]),
    ({"attributes": {"http.route": "/healthz", "http.response.status_code": "500"}}, []),
    ({"attributes": {"missing.key": ""}}, []),  # a missing attribute is not an empty one
    ({"genai": False, "service_name": "shop"}, ["GET /healthz", "GET /cart", "SELECT carts"]),
    ({"genai": True, "service_name": "batch-jobs"}, ["embeddings text-embedding-3-small"]),
    ({"span_kind": "Internal"}, ["probe"]),
])
def test_a_rule_drops_the_spans_all_its_fields_match(rule: dict[str, Any], dropped: list[str]) -> None:
    names = [s[1] for s in SPANS]
    assert _kept({"drop": [rule]}) == [n for n in names if n not in dropped]


def test_rules_add_up_and_combine_with_keep() -> None:
    rules = [{"span_name": "GET /healthz"}, {"service_name": "health-probe"}]
    assert _kept({"drop": rules}) == ["chat gpt-4o", "GET /cart", "SELECT carts",
                                      "embeddings text-embedding-3-small", "chat llama3"]
    assert _kept({"keep": "genai", "drop": [{"service_name": "batch-jobs"}]}) == ["chat gpt-4o", "chat llama3"]


def test_what_is_kept_is_unchanged_and_its_share_of_the_bytes_follows() -> None:
    processor = FilterProcessor(FilterConfig(keep="genai"))
    batch = _batch(SPANS)
    out = processor.process(batch)
    assert out.approx_bytes == 3000
    kept_rows = [0, 5, 6]
    assert out.table.to_pylist() == [batch.table.slice(i, 1).to_pylist()[0] for i in kept_rows]
    assert FilterProcessor(FilterConfig()).process(batch) is batch  # nothing to do: the same batch
    assert processor.process(SpanBatch.empty()).table.num_rows == 0
    everything = FilterProcessor(FilterConfig(drop=[{"genai": False}, {"genai": True}])).process(batch)
    assert len(everything) == 0 and everything.table.schema == batch.table.schema


def _traced(spans: list[tuple[str, str, dict[str, str]]]) -> SpanBatch:
    """(trace id, span name, attributes) per span."""
    batch = batch_of([attrs for _, _, attrs in spans], trace_ids=[t for t, _, _ in spans])
    i = batch.table.schema.get_field_index("SpanName")
    return SpanBatch(batch.table.set_column(i, batch.table.schema.field(i), pa.array([s[1] for s in spans])))


def _names(batch: SpanBatch) -> list[str]:
    return batch.table.column("SpanName").to_pylist()


def test_genai_traces_keeps_the_spans_of_traces_with_a_genai_span_arriving_with_or_after_it() -> None:
    processor = FilterProcessor(FilterConfig(keep="genai_traces"))
    first = _traced([("t1", "retrieve docs", {"db.system.name": "qdrant"}),  # ended before the call
                     ("t1", "chat gpt-4o", chat(user="hi")),
                     ("t2", "GET /cart", {"http.route": "/cart"}),
                     ("t3", "SELECT carts", {"db.system.name": "postgresql"})])
    assert _names(processor.process(first)) == ["retrieve docs", "chat gpt-4o"]
    later = _traced([("t1", "POST /ask", {"http.route": "/ask"}),  # the request span ends last
                     ("t2", "GET /", {}),
                     ("t4", "embeddings e5", {"gen_ai.operation.name": "embeddings"})])
    assert _names(processor.process(later)) == ["POST /ask", "embeddings e5"]


def test_genai_traces_remembers_a_bounded_number_of_traces_least_recently_seen_first() -> None:
    processor = FilterProcessor(FilterConfig(keep="genai_traces", trace_memory=2))
    for trace_id in ("t1", "t2"):
        processor.process(_traced([(trace_id, "chat", chat(user="x"))]))
    processor.process(_traced([("t1", "tool call", {})]))  # t1 seen again: now the most recent
    processor.process(_traced([("t3", "chat", chat(user="y"))]))  # t2, the least recent, is forgotten
    out = processor.process(_traced([("t1", "POST /a", {}), ("t2", "POST /b", {}), ("t3", "POST /c", {})]))
    assert _names(out) == ["POST /a", "POST /c"]
    # trace_memory 0: only spans that arrive with their GenAI span
    same_batch = FilterProcessor(FilterConfig(keep="genai_traces", trace_memory=0))
    assert _names(same_batch.process(_traced([("t1", "POST /a", {}), ("t1", "chat", chat(user="x"))]))) == [
        "POST /a", "chat"]
    assert _names(same_batch.process(_traced([("t1", "POST /late", {})]))) == []


def test_genai_traces_with_drop_rules_a_dropped_genai_span_keeps_nothing_of_its_trace() -> None:
    processor = FilterProcessor(FilterConfig(keep="genai_traces", drop=[{"span_name": "chat noisy"}]))
    out = processor.process(_traced([("t1", "chat noisy", chat(user="x")), ("t1", "POST /batch", {}),
                                     ("t2", "chat gpt-4o", chat(user="y")), ("t2", "GET /healthz", {})]))
    assert _names(out) == ["chat gpt-4o", "GET /healthz"]


def test_patterns_run_in_linear_time_on_hostile_input() -> None:
    """RE2: a pattern that backtracks exponentially in Python's re finishes at once on a long name."""
    spans = [("svc", "a" * 50_000 + "!", None, {})] * 3
    assert _kept({"drop": [{"span_name": "(a+)+$"}]}, spans) == ["a" * 50_000 + "!"] * 3


@pytest.mark.parametrize(("config", "message"), [
    ({"drop": [{}]}, "filter.drop.0: a rule with no fields would drop every span"),
    ({"drop": [{"span_name": "(?=look)ahead"}]}, "filter.drop.0.span_name: not a valid RE2 regular expression"),
    ({"drop": [{"service_name": "("}]}, "filter.drop.0.service_name: not a valid RE2 regular expression"),
    ({"drop": [{"span_kind": "server"}]}, "filter.drop.0.span_kind: Input should be 'Unspecified', 'Internal'"),
    ({"keep": "llm"}, "filter.keep: Input should be 'all', 'genai' or 'genai_traces'"),
    ({"keep": "genai_traces", "trace_memory": -1}, "filter.trace_memory: Input should be greater than or equal to 0"),
    ({"keep": "genai_traces", "trace_memory": 10**7}, "filter.trace_memory: Input should be less than or equal to 1000000"),
    ({"drop": [{"attributes": {"k": 1}}]}, "filter.drop.0.attributes.k: Input should be a valid string"),
    ({"drop": [{"span_nam": "x"}]}, "filter.drop.0.span_nam: unknown key"),
])
def test_bad_settings_name_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate_section("filter", FilterConfig, config)
    assert message in str(err.value)


def test_a_collector_stores_and_measures_only_what_the_filter_keeps(make_collector: Any) -> None:
    """Spans from the OTel SDK through a real collector: a web service's request span, its GenAI
    call, a health check, and a noisy service's GenAI calls."""
    col = make_collector({
        "processors": {"filter": {"keep": "genai", "drop": [{"service_name": "noisy-.*"}]}, "cost": {}},
        "exporters": {"prometheus": {}},
        "service": {"pipelines": {"traces": {"processors": ["filter", "cost"],
                                             "exporters": ["clickhouse", "prometheus"]}}},
    })
    for service in ("shop", "noisy-batch"):
        provider, tracer = otlp_tracer(col.http_url, service)
        call = chat(user="what is in my cart?", gen_ai__usage__input_tokens=12, gen_ai__usage__output_tokens=3)
        with (tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER, attributes={"http.route": "/cart"}),
              tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes=call)):
            pass
        with tracer.start_as_current_span("GET /healthz", kind=SpanKind.SERVER):
            pass
        provider.shutdown()

    def dropped() -> float:
        prefix = 'lqo_processor_dropped_spans_total{processor="filter",reason="filtered"} '
        lines = [line for line in col.metrics().splitlines() if line.startswith(prefix)]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    deadline = time.monotonic() + 30
    while dropped() < 5 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert dropped() == 5  # shop's request and health check, and all three of noisy-batch's spans
    assert col.wait_stored(1) == 1
    rows = col.query("SELECT ServiceName, SpanName, SpanAttributes['lqo.cost.source'] AS cost FROM otel_traces")
    assert rows == [{"ServiceName": "shop", "SpanName": "chat gpt-4o", "cost": "computed"}]
    metrics = col.metrics()
    assert 'service_name="noisy-batch"' not in metrics and 'service_name="shop"' in metrics


def test_the_docs_example_is_valid_and_does_what_it_says() -> None:
    text = (ROOT / "docs" / "processors.md").read_text()
    section = text.split("## `filter`", 1)[1].split("\n## ", 1)[0]
    example = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    config = validate_section("processors.filter", FilterConfig, example["processors"]["filter"])
    assert example["service"]["pipelines"]["traces"]["processors"][0] == "filter"
    spans = [("load-test-7", "chat gpt-4o", "Client", chat(user="x")),
             ("shop", "GET /healthz", "Server", {"gen_ai.operation.name": "x"}),
             ("shop", "embeddings e5", "Client", {"gen_ai.operation.name": "embeddings"}),
             ("shop", "chat gpt-4o", "Client", chat(user="y"))]
    out = FilterProcessor(config).process(_batch(spans))
    assert out.table.column("ServiceName").to_pylist() == ["shop"]
    assert out.table.column("SpanName").to_pylist() == ["chat gpt-4o"]


def test_a_collector_keeps_the_requests_that_led_to_llm_calls(make_collector: Any) -> None:
    """keep: genai_traces through a real collector, spans from the OTel SDK as a web service
    exports them: the request, the retrieval before the call and the call are stored; a health
    check and a request without an LLM call are not."""
    col = make_collector({"processors": {"filter": {"keep": "genai_traces"}},
                          "service": {"pipelines": {"traces": {"processors": ["filter"]}}}})
    provider, tracer = otlp_tracer(col.http_url, "assistant")
    with tracer.start_as_current_span("POST /ask", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("retrieve docs", attributes={"db.system.name": "qdrant"}):
            pass
        with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes=chat(user="why?")):
            pass
    for route in ("GET /healthz", "GET /cart"):
        with tracer.start_as_current_span(route, kind=SpanKind.SERVER):
            pass
    provider.shutdown()
    assert col.wait_stored(3) == 3
    rows = col.query("SELECT SpanName, TraceId FROM otel_traces ORDER BY Timestamp")
    assert [r["SpanName"] for r in rows] == ["POST /ask", "retrieve docs", "chat gpt-4o"]
    assert len({r["TraceId"] for r in rows}) == 1
    deadline = time.monotonic() + 10
    while 'lqo_processor_dropped_spans_total{processor="filter",reason="filtered"} 2.0' not in col.metrics():
        assert time.monotonic() < deadline, "the two other requests were not counted as filtered"
        time.sleep(0.2)
    assert col.wait_stored(3) == 3
