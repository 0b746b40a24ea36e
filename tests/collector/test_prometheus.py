"""The ``prometheus`` exporter (issue #4, acceptance 3): a real Prometheus (Debian package,
started here on loopback) scrapes a running collector; PromQL answers — cost by model, p95 of
operation duration, token usage rate by type — match what the sent spans imply, and
``promtool check metrics`` finds nothing to complain about. Plus the cardinality cap and the
rule that label values never carry content."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import genai_prices
import numpy as np
import pyarrow as pa
import pytest
from conftest import CollectorProcess
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import generate_latest
from promstack import NEEDS, PROMTOOL, wait_until
from promstack import query as _query

from lqo.collector.components import ComponentContext
from lqo.collector.exporters.prometheus import (
    DURATION_BUCKETS,
    PrometheusExporter,
    PrometheusExporterConfig,
)
from lqo.collector.model.spanbatch import SCHEMA, SpanBatch
from lqo.collector.telemetry import SelfTelemetry

# (model, provider, input, output tokens, duration seconds): one wave of calls
WAVE = [
    *[("gpt-4o-mini", "openai", 1200, 300, d) for d in (0.05, 0.07, 0.09, 0.15, 0.3, 0.35, 0.5, 0.9, 1.1, 2.0)],
    *[("claude-3-5-haiku-20241022", "anthropic", 800, 100, d) for d in (0.12, 0.2, 0.6, 3.0, 6.0)],
]


def _send(url: str, wave: list[tuple[str, str, int, int, float]], streamed_ttfc: float | None = None) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "promsvc"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces")))
    tracer = provider.get_tracer("t")
    start = time.time_ns()
    for model, prov, inp, out, seconds in wave:
        attrs: dict[str, Any] = {
            "gen_ai.system": prov,  # legacy name on purpose: genai_normalize maps it first
            "gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": out,
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
                {"type": "text", "content": "my card is 4111 1111 1111 1111"}]}]),
        }
        if streamed_ttfc is not None:
            attrs["gen_ai.response.time_to_first_chunk"] = streamed_ttfc
        span = tracer.start_span(f"chat {model}", attributes=attrs, start_time=start)
        span.end(end_time=start + int(seconds * 1e9))
    provider.shutdown()


def _prom_quantile(q: float, values: list[float], bounds: tuple[float, ...]) -> float:
    """Prometheus' histogram_quantile over the buckets these values fall in (linear within a bucket)."""
    counts = np.cumsum(np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds) + 1))
    rank = q * counts[-1]
    b = int(np.searchsorted(counts, rank, side="left"))
    assert b < len(bounds), "the test's durations must keep p95 under the last bound"
    lower = bounds[b - 1] if b > 0 else 0.0
    below = counts[b - 1] if b > 0 else 0
    return lower + (bounds[b] - lower) * (rank - below) / (counts[b] - below)


def _prometheus(daemons: Any, scrape_port: int) -> str:
    return daemons.prometheus(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: lqo, static_configs: [{{targets: ['127.0.0.1:{scrape_port}']}}]}}]\n")


def _wait_for(prom: str, expr: str, value: float, timeout: float = 30.0) -> None:
    def seen() -> bool:
        result = _query(prom, expr)
        return bool(result) and float(result[0]["value"][1]) == value

    wait_until(f"{expr} == {value}", seen, timeout)


def _by(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


def test_prometheus_scrapes_the_collector_and_promql_agrees(make_collector: Any, daemons: Any) -> None:
    col: CollectorProcess = make_collector({
        "processors": {"genai_normalize": {}, "cost": {}},
        "exporters": {"prometheus": {}},
        "service": {"pipelines": {"traces": {"processors": ["genai_normalize", "cost"],
                                             "exporters": ["clickhouse", "prometheus"]}}},
    })
    prom = _prometheus(daemons, col.metrics_port)
    _send(col.http_url, WAVE)
    count = "sum(gen_ai_client_operation_duration_seconds_count)"
    _wait_for(prom, count, len(WAVE))
    _send(col.http_url, WAVE)  # a second, identical wave: the rate covers it
    _wait_for(prom, count, 2 * len(WAVE))
    time.sleep(2.5)  # a couple more scrapes at the final values

    # cost by model = genai-prices' price of each call, summed
    cost = _by(_query(prom, "sum by (gen_ai_request_model) (lqo_cost_usd_total)"), "gen_ai_request_model")
    expected_cost: dict[str, float] = {}
    for model, prov, inp, out, _ in WAVE * 2:
        price = genai_prices.calc_price(genai_prices.Usage(input_tokens=inp, output_tokens=out), model, provider_id=prov)
        expected_cost[model] = expected_cost.get(model, 0.0) + float(price.total_price)
    assert cost.keys() == expected_cost.keys()
    for model, usd in expected_cost.items():
        assert cost[model] == pytest.approx(usd, rel=1e-9)

    # p95 of operation duration, over all calls and per model
    durations = [w[4] for w in WAVE] * 2
    [p95] = _query(prom, "histogram_quantile(0.95, sum by (le) (gen_ai_client_operation_duration_seconds_bucket))")
    assert float(p95["value"][1]) == pytest.approx(_prom_quantile(0.95, durations, DURATION_BUCKETS), rel=1e-9)
    per_model = _by(_query(prom, "histogram_quantile(0.95, sum by (le, gen_ai_request_model) "
                                 "(gen_ai_client_operation_duration_seconds_bucket))"), "gen_ai_request_model")
    for model in expected_cost:
        mine = [w[4] for w in WAVE if w[0] == model] * 2
        assert per_model[model] == pytest.approx(_prom_quantile(0.95, mine, DURATION_BUCKETS), rel=1e-9)

    # token usage by type: totals, and rates in the ratio the calls imply
    totals = _by(_query(prom, "sum by (gen_ai_token_type) (gen_ai_client_token_usage_sum)"), "gen_ai_token_type")
    assert totals == {"input": 2 * sum(w[2] for w in WAVE), "output": 2 * sum(w[3] for w in WAVE)}
    rates = _by(_query(prom, "sum by (gen_ai_token_type) (rate(gen_ai_client_token_usage_sum[1m]))"),
                "gen_ai_token_type")
    assert rates["input"] > 0 and rates["output"] > 0
    assert rates["input"] / rates["output"] == pytest.approx(totals["input"] / totals["output"], rel=1e-6)
    counts = _by(_query(prom, "sum by (gen_ai_token_type) (gen_ai_client_token_usage_count)"), "gen_ai_token_type")
    assert counts == {"input": 2 * len(WAVE), "output": 2 * len(WAVE)}

    # labels: the common ones, bounded values, never the message content
    series = _query(prom, "gen_ai_client_operation_duration_seconds_count")
    assert {s["metric"]["gen_ai_provider_name"] for s in series} == {"openai", "anthropic"}
    assert {s["metric"]["service_name"] for s in series} == {"promsvc"}
    assert {s["metric"]["gen_ai_operation_name"] for s in series} == {"chat"}
    # (the card number's text; "4111" alone turns up in a memory size, process_virtual_memory_bytes)
    assert "4111 1111" not in col.metrics() and "my card" not in col.metrics()

    # the exposition passes promtool's checks
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=col.metrics().encode(), capture_output=True)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), lint.stdout + lint.stderr


# --- the exporter on batches: cardinality cap, hostile values, flags and scores ------------------

def _batch(spans: list[dict[str, Any]]) -> SpanBatch:
    rows = []
    for i, attrs in enumerate(spans):
        row: dict[str, Any] = {n: [] if n.startswith(("Events.", "Links.")) else None for n in SCHEMA.names}
        row.update(TraceId="t", SpanId=f"s{i}", ServiceName="svc", Duration=250_000_000,
                   SpanAttributes=[(k, str(v)) for k, v in attrs.items()])
        rows.append(row)
    return SpanBatch(pa.Table.from_pylist(rows, schema=SCHEMA))


def _exporter(**config: Any) -> tuple[PrometheusExporter, SelfTelemetry]:
    telemetry = SelfTelemetry()
    exporter = PrometheusExporter(PrometheusExporterConfig(**config), ComponentContext("prometheus", telemetry))
    exporter.start()
    return exporter, telemetry


def test_label_values_are_capped_and_overflow_is_counted() -> None:
    exporter, telemetry = _exporter(label_limits={"gen_ai_request_model": 3})
    spans = [{"gen_ai.operation.name": "chat", "gen_ai.request.model": f"model-{i}",
              "gen_ai.usage.input_tokens": 10} for i in range(10)]
    exporter.export(_batch(spans))
    r = telemetry.registry
    models = {s.labels["gen_ai_request_model"] for m in r.collect() if m.name == "gen_ai_client_token_usage"
              for s in m.samples if s.name.endswith("_count")}
    assert models == {"model-0", "model-1", "model-2", "other"}
    assert r.get_sample_value("gen_ai_client_token_usage_count", {
        "service_name": "svc", "gen_ai_provider_name": "", "gen_ai_request_model": "other",
        "gen_ai_operation_name": "chat", "gen_ai_token_type": "input"}) == 7
    assert r.get_sample_value("lqo_prometheus_label_overflow_total", {"label": "gen_ai_request_model"}) == 7
    exporter.export(_batch(spans[:1]))  # a value seen before the cap was reached stays itself
    assert r.get_sample_value("gen_ai_client_token_usage_count", {
        "service_name": "svc", "gen_ai_provider_name": "", "gen_ai_request_model": "model-0",
        "gen_ai_operation_name": "chat", "gen_ai_token_type": "input"}) == 2


def test_hostile_values_never_become_labels_or_break_the_exposition() -> None:
    exporter, telemetry = _exporter()
    exporter.export(_batch([
        {"gen_ai.operation.name": "chat", "gen_ai.request.model": "evil\nmodel{x=\"1\"}",
         "gen_ai.usage.input_tokens": "NaN", "gen_ai.usage.output_tokens": "-5", "lqo.cost.usd": "inf",
         "error.type": "Traceback: secret prompt text here"},
        {"gen_ai.operation.name": "chat", "gen_ai.request.model": "x" * 1000, "gen_ai.usage.input_tokens": "1e3"},
    ]))
    text = generate_latest(telemetry.registry).decode()
    assert "evil" not in text and "xxxx" not in text and "secret" not in text
    assert 'gen_ai_request_model="other"' in text and 'error_type="_OTHER"' in text
    r = telemetry.registry
    assert r.get_sample_value("gen_ai_client_token_usage_sum", {
        "service_name": "svc", "gen_ai_provider_name": "", "gen_ai_request_model": "other",
        "gen_ai_operation_name": "chat", "gen_ai_token_type": "input"}) == 1000.0
    assert PROMTOOL, NEEDS
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_flags_scores_and_time_to_first_chunk() -> None:
    exporter, telemetry = _exporter()
    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "m"}
    exporter.export(_batch([
        {**base, "lqo.flags": '["pii","toxicity"]', "lqo.toxicity.score": "0.93",
         "gen_ai.response.time_to_first_chunk": "0.03"},
        {**base, "lqo.flags": "pii,not_a_check", "lqo.hallucination.score": "0.15", "lqo.injection.score": "0.05"},
        {"http.method": "GET"},  # not GenAI: no series
    ]))
    r = telemetry.registry
    labels = {"service_name": "svc", "gen_ai_provider_name": "openai", "gen_ai_request_model": "m",
              "gen_ai_operation_name": "chat"}
    assert r.get_sample_value("lqo_safety_flags_total", {**labels, "check": "pii"}) == 2
    assert r.get_sample_value("lqo_safety_flags_total", {**labels, "check": "toxicity"}) == 1
    assert r.get_sample_value("lqo_safety_flags_total", {**labels, "check": "not_a_check"}) is None
    assert r.get_sample_value("lqo_evaluation_score_bucket", {**labels, "check": "toxicity", "le": "0.9"}) == 0
    assert r.get_sample_value("lqo_evaluation_score_bucket", {**labels, "check": "toxicity", "le": "1.0"}) == 1
    assert r.get_sample_value("lqo_evaluation_score_count", {**labels, "check": "prompt_injection"}) == 1
    assert r.get_sample_value("gen_ai_client_operation_time_to_first_chunk_seconds_bucket",
                              {**labels, "le": "0.04"}) == 1
    assert r.get_sample_value("gen_ai_client_operation_duration_seconds_sum", {**labels, "error_type": ""}) == 0.5


def test_histogram_buckets_carry_the_latest_span_as_exemplar_in_openmetrics_only() -> None:
    """A bucket's exemplar is the last span of the latest batch counted in it: its trace id, value
    and end time. The OpenMetrics exposition (what Prometheus asks for) carries them; the classic
    text format cannot."""
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    exporter, telemetry = _exporter()
    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "m"}
    first = _batch([{**base, "gen_ai.usage.input_tokens": 10, "lqo.toxicity.score": "0.95"},
                    {**base, "gen_ai.usage.input_tokens": 12}])
    ids = ["1" * 32, "2" * 32]
    first = SpanBatch(first.table.set_column(first.table.schema.get_field_index("TraceId"), "TraceId",
                                             pa.array(ids)).set_column(
        first.table.schema.get_field_index("Timestamp"), "Timestamp",
        pa.array([1_760_000_000_000_000_000] * 2, pa.timestamp("ns"))))
    exporter.export(first)
    encoder, content_type = choose_encoder("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    text = encoder(telemetry.registry).decode()
    exemplars = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.exemplar is not None:
                exemplars[(sample.name, sample.labels.get("le"), sample.labels.get("check"),
                           sample.labels.get("gen_ai_token_type"))] = sample.exemplar
    tokens = exemplars[("gen_ai_client_token_usage_bucket", "16.0", None, "input")]
    assert tokens.labels == {"trace_id": "2" * 32} and tokens.value == 12  # the later of the two spans
    assert (tokens.timestamp.sec, tokens.timestamp.nsec) == (1_760_000_000, 250_000_000)  # the span's end
    toxic = exemplars[("lqo_evaluation_score_bucket", "1.0", "toxicity", None)]
    assert toxic.labels == {"trace_id": "1" * 32} and toxic.value == 0.95
    duration = exemplars[("gen_ai_client_operation_duration_seconds_bucket", "0.32", None, None)]
    assert duration.labels["trace_id"] == "2" * 32 and duration.value == 0.25
    # buckets no span fell in have none; the count of exemplars is one per hit bucket
    assert len([k for k in exemplars if k[0] == "gen_ai_client_operation_duration_seconds_bucket"]) == 1
    plain = choose_encoder("text/plain")[0](telemetry.registry).decode()
    assert "trace_id" not in plain and "# {" not in plain


def test_evaluation_results_are_counted_with_capped_labels_and_exemplars(monkeypatch: pytest.MonkeyPatch) -> None:
    """Users' feedback and evaluators' scores (``EvaluationWriter`` hands them over as they arrive):
    counted by evaluation and label, their scores summed; producer strings capped like span labels;
    a result that names its span carries it as the exemplar."""
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    from lqo.collector.exporters import prometheus
    from lqo.collector.model.genai_events import Evaluation

    monkeypatch.setattr(prometheus, "MATCH_GRACE_S", 0.0)  # their calls are unknown: counted at once

    exporter, telemetry = _exporter(label_limits={"gen_ai_evaluation_score_label": 2})

    def result(label: str, score: float | None, trace_id: str = "", name: str = "user_feedback") -> Evaluation:
        return Evaluation(1_760_000_000_000_000_000, trace_id, "ab" * 8 if trace_id else "", "" if trace_id else "r-1",
                          "svc", name, score, label, "", {})

    exporter.record_evaluations([result("thumbs_up", 1.0), result("thumbs_up", 1.0, "3" * 32),
                                 result("thumbs_down", 0.0), result("meh\n{x}", None),
                                 result("", 0.8, name="relevance")])
    # a user's words where a category belongs never become a label value, whatever the cap
    exporter.record_evaluations([result("call me at 415-555-0132", 0.0, name="me@example.com"),
                                 result("415-555-0132", 0.0), result("ann@example.com", 0.0)])
    r = telemetry.registry
    counted = {(s.labels["gen_ai_evaluation_name"], s.labels["gen_ai_evaluation_score_label"]): s.value
               for m in r.collect() if m.name == "lqo_evaluation_results" for s in m.samples
               if s.name == "lqo_evaluation_results_total"}
    assert counted == {("user_feedback", "thumbs_up"): 2, ("user_feedback", "thumbs_down"): 1,
                       ("user_feedback", "other"): 3, ("relevance", "other"): 1, ("other", "other"): 1}
    assert r.get_sample_value("lqo_prometheus_label_overflow_total", {"label": "gen_ai_evaluation_score_label"}) == 5
    assert r.get_sample_value("lqo_prometheus_label_overflow_total", {"label": "gen_ai_evaluation_name"}) == 1
    values = {v for m in r.collect() for s in m.samples for v in s.labels.values()}
    # ("415" alone turns up in the process's memory figures: only label values are checked)
    assert not any("415" in v or "example.com" in v for v in values)
    assert "415-555" not in generate_latest(r).decode()
    # their calls are not among the ones this exporter saw: only the service is known
    feedback = {"service_name": "svc", "gen_ai_provider_name": "", "gen_ai_request_model": "",
                "gen_ai_operation_name": "", "gen_ai_evaluation_name": "user_feedback"}
    assert r.get_sample_value("lqo_evaluation_result_score_count", feedback) == 5  # the one without a score: not
    assert r.get_sample_value("lqo_evaluation_result_score_sum", feedback) == 2.0
    text = choose_encoder("application/openmetrics-text; version=1.0.0")[0](r).decode()
    [exemplar] = [s.exemplar for f in text_string_to_metric_families(text) for s in f.samples
                  if s.name == "lqo_evaluation_results_total" and s.exemplar is not None]
    assert exemplar.labels == {"trace_id": "3" * 32}
    lint = subprocess.run([PROMTOOL, "check", "metrics"], input=generate_latest(r), capture_output=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_evaluation_results_are_counted_under_their_calls_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A result names its call by response id (else by span); if the exporter counted that call
    lately, the result gets its service, provider, model and operation: feedback by model."""
    from lqo.collector.model.genai_events import Evaluation

    exporter, telemetry = _exporter()
    base = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai"}
    exporter.export(_batch([{**base, "gen_ai.request.model": "gpt-4o", "gen_ai.response.id": "resp-0"}]))
    assert exporter.metrics._recent_rows == 0  # no producer has sent a result yet: nothing kept for them
    exporter.record_evaluations([])  # (the writer's tick is not a result)
    exporter.metrics._count_results([], 0.0)
    assert not exporter.metrics._evaluations_seen
    monkeypatch.setattr(exporter.metrics, "_evaluations_seen", True)  # as after a producer's first result
    exporter.export(_batch([{**base, "gen_ai.request.model": "gpt-4o", "gen_ai.response.id": "resp-1"},
                            {**base, "gen_ai.request.model": "gpt-4o-mini"}]))  # SpanIds s0, s1
    exporter.export(_batch([{"http.request.method": "GET"}]))  # a later batch, no call

    def result(label: str, response_id: str = "", span_id: str = "") -> Evaluation:
        return Evaluation(1, "t" if span_id else "", span_id, response_id, "svc-of-the-feedback", "user_feedback",
                          1.0 if label == "thumbs_up" else 0.0, label, "", {})

    early = result("thumbs_down", response_id="resp-2")  # a judge faster than the pipeline: its call comes next
    exporter.record_evaluations([result("thumbs_up", response_id="resp-1"), result("thumbs_down", span_id="s1"),
                                 result("thumbs_down", response_id="resp-unknown"), early])
    r = telemetry.registry
    assert r.get_sample_value("lqo_evaluation_results_total", {
        "service_name": "svc-of-the-feedback", "gen_ai_provider_name": "", "gen_ai_request_model": "",
        "gen_ai_operation_name": "", "gen_ai_evaluation_name": "user_feedback",
        "gen_ai_evaluation_score_label": "thumbs_down"}) is None  # the two unknown ones wait for their call
    exporter.export(_batch([{**base, "gen_ai.request.model": "o3", "gen_ai.response.id": "resp-2"}]))
    from lqo.collector.exporters import prometheus

    monkeypatch.setattr(prometheus, "MATCH_GRACE_S", 0.0)
    exporter.record_evaluations([])  # the writer's tick: the grace is over for the one never seen

    def count(model: str, label: str, service: str = "svc", provider: str = "openai", operation: str = "chat") -> Any:
        return r.get_sample_value("lqo_evaluation_results_total", {
            "service_name": service, "gen_ai_provider_name": provider, "gen_ai_request_model": model,
            "gen_ai_operation_name": operation, "gen_ai_evaluation_name": "user_feedback",
            "gen_ai_evaluation_score_label": label})

    assert count("gpt-4o", "thumbs_up") == 1 and count("gpt-4o-mini", "thumbs_down") == 1
    assert count("o3", "thumbs_down") == 1  # matched when its call came
    assert count("", "thumbs_down", service="svc-of-the-feedback", provider="", operation="") == 1
    assert r.get_sample_value("lqo_evaluation_result_score_sum", {
        "service_name": "svc", "gen_ai_provider_name": "openai", "gen_ai_request_model": "gpt-4o",
        "gen_ai_operation_name": "chat", "gen_ai_evaluation_name": "user_feedback"}) == 1.0


def test_the_calls_it_keeps_for_results_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from lqo.collector.exporters import prometheus
    from lqo.collector.model.genai_events import Evaluation

    monkeypatch.setattr(prometheus, "RECENT_CALLS", 3)
    monkeypatch.setattr(prometheus, "MATCH_GRACE_S", 0.0)
    exporter, telemetry = _exporter()
    exporter.record_evaluations([Evaluation(1, "", "", "resp-before", "svc", "user_feedback", 1.0, "up", "", {})])
    for model in ("old", "new-1", "new-2", "new-3"):  # a batch of one call each, the same span ids
        exporter.export(_batch([{"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                                 "gen_ai.response.id": f"resp-{model}"}]))
    assert exporter.metrics._recent_rows == 3
    exporter.record_evaluations([Evaluation(1, "", "", f"resp-{m}", "svc", "user_feedback", 1.0, "up", "", {})
                                 for m in ("old", "new-1")])
    models = {s.labels["gen_ai_request_model"] for m in telemetry.registry.collect()
              if m.name == "lqo_evaluation_results" for s in m.samples}
    assert models == {"", "new-1"}  # the oldest call was let go (and the first result matched nothing)


def test_one_prometheus_exporter_per_collector() -> None:
    from lqo.collector.config import ConfigError, load_yaml
    from lqo.collector.service import validate_config

    text = """
receivers: {otlp: {protocols: {http: {}}}}
exporters: {prometheus: {}, prometheus/two: {max_label_values: 5}}
service: {pipelines: {traces: {receivers: [otlp], exporters: [prometheus, prometheus/two]}}}
"""
    with pytest.raises(ConfigError, match="use one prometheus exporter"):
        validate_config(load_yaml(text, "t.yaml", {}))
    with pytest.raises(ConfigError, match=r"exporters\.prometheus\.max_label_values"):
        validate_config(load_yaml(text.replace("max_label_values: 5", "").replace(
            "prometheus: {}", "prometheus: {max_label_values: 0}"), "t.yaml", {}))
