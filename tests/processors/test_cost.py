"""The cost processor (issue #4, acceptance 2): our numbers against genai-prices' own
calculation — cached and reasoning tokens, Anthropic cache writes — the override path, the
unknown-model path, reported costs, and the attributes stored through a running collector."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import genai_prices
import numpy as np
import pyarrow as pa
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from lqo.collector.components import ComponentContext, factories
from lqo.collector.model.spanbatch import SCHEMA, SpanBatch
from lqo.collector.telemetry import SelfTelemetry
from lqo.processors.cost import CostConfig, CostProcessor
from lqo.processors.prices import MEMO_KEY_CHARS, MEMO_SIZE

WHEN = datetime(2026, 11, 1, 12, tzinfo=UTC)


def _batch(spans: list[dict[str, Any]]) -> SpanBatch:
    rows = []
    for attrs in spans:
        row: dict[str, Any] = {name: None for name in SCHEMA.names}
        row.update(Timestamp=WHEN.replace(tzinfo=None), SpanName="chat", TraceId="t", SpanId="s",
                   SpanAttributes=[(k, str(v)) for k, v in attrs.items()])
        for name in SCHEMA.names:
            if name.startswith(("Events.", "Links.")):
                row[name] = []
        rows.append(row)
    return SpanBatch(pa.Table.from_pylist(rows, schema=SCHEMA))


def _processed(spans: list[dict[str, Any]], config: dict[str, Any] | None = None,
               registry: CollectorRegistry | None = None) -> list[dict[str, str]]:
    ctx = ComponentContext("cost", SelfTelemetry(registry)) if registry is not None else None
    proc = CostProcessor(CostConfig(**(config or {})), ctx)
    proc.start()
    out = proc.process(_batch(spans))
    return [dict(kv) for kv in out.table.column("SpanAttributes").to_pylist()]


def _library(model: str, provider: str, **usage: int) -> Any:
    return genai_prices.calc_price(genai_prices.Usage(**usage), model, provider_id=provider,
                                   genai_request_timestamp=WHEN)


@pytest.mark.parametrize(
    ("attrs", "model", "provider", "usage"),
    [
        pytest.param(  # OpenAI: cached input tokens are part of input_tokens, at the cache-read rate
            {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
             "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.usage.input_tokens": 12000,
             "gen_ai.usage.output_tokens": 800, "gen_ai.usage.cache_read.input_tokens": 9000},
            "gpt-4o-mini-2024-07-18", "openai",
            {"input_tokens": 12000, "output_tokens": 800, "cache_read_tokens": 9000}, id="openai-cached"),
        pytest.param(  # reasoning tokens are inside output_tokens
            {"gen_ai.provider.name": "openai", "gen_ai.request.model": "o3-mini",
             "gen_ai.usage.input_tokens": 1500, "gen_ai.usage.output_tokens": 4200,
             "gen_ai.usage.reasoning.output_tokens": 3800},
            "o3-mini", "openai",
            {"input_tokens": 1500, "output_tokens": 4200, "output_reasoning_tokens": 3800}, id="openai-reasoning"),
        pytest.param(  # Anthropic: cache reads and cache writes, each at its own rate
            {"gen_ai.provider.name": "anthropic", "gen_ai.request.model": "claude-sonnet-4-5-20250929",
             "gen_ai.usage.input_tokens": 20000, "gen_ai.usage.output_tokens": 600,
             "gen_ai.usage.cache_read.input_tokens": 15000, "gen_ai.usage.cache_creation.input_tokens": 4000},
            "claude-sonnet-4-5-20250929", "anthropic",
            {"input_tokens": 20000, "output_tokens": 600, "cache_read_tokens": 15000, "cache_write_tokens": 4000},
            id="anthropic-cache-read-write"),
        pytest.param(  # legacy gen_ai.system names the provider
            {"gen_ai.system": "anthropic", "gen_ai.request.model": "claude-3-5-haiku-20241022",
             "gen_ai.usage.input_tokens": 300, "gen_ai.usage.output_tokens": 50},
            "claude-3-5-haiku-20241022", "anthropic", {"input_tokens": 300, "output_tokens": 50}, id="legacy-system"),
    ],
)
def test_cost_matches_genai_prices(attrs: dict[str, Any], model: str, provider: str, usage: dict[str, int]) -> None:
    (out,) = _processed([attrs])
    expected = _library(model, provider, **usage)
    assert Decimal(out["lqo.cost.input_usd"]) == expected.input_price
    assert Decimal(out["lqo.cost.output_usd"]) == expected.output_price
    assert Decimal(out["lqo.cost.usd"]) == expected.total_price
    assert out["lqo.cost.source"] == "computed"
    assert expected.total_price > 0
    # and the cached/reasoning split mattered: the same tokens without it cost something else
    plain = _library(model, provider, input_tokens=usage["input_tokens"], output_tokens=usage["output_tokens"])
    if len(usage) > 2 and "output_reasoning_tokens" not in usage:
        assert plain.total_price != expected.total_price


def test_unknown_model_gets_no_cost_and_is_counted() -> None:
    registry = CollectorRegistry()
    spans = [{"gen_ai.provider.name": "openai", "gen_ai.request.model": "my-finetune-xyz",
              "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5}] * 3
    spans.append({"gen_ai.provider.name": "ollama", "gen_ai.request.model": "llama3.2",
                  "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5})
    out = _processed(spans, registry=registry)
    for attrs in out:
        assert attrs["lqo.cost.source"] == "unknown_model"
        assert not any(k.startswith("lqo.cost.") and k.endswith("usd") for k in attrs)  # absent, never 0
    assert registry.get_sample_value("lqo_cost_unknown_model_spans_total", {"processor": "cost"}) == 4


def test_overrides_exact_then_regex_and_per_provider() -> None:
    config = {"overrides": [
        {"model": "my-finetune-xyz", "input_per_mtok": 2.0, "output_per_mtok": 8.0, "cache_read_per_mtok": 0.5},
        {"model_regex": "llama.*", "provider": "ollama", "input_per_mtok": 0.1, "output_per_mtok": 0.2},
        {"model": "gpt-4o-mini", "input_per_mtok": 100, "output_per_mtok": 100},
    ]}
    out = _processed([
        {"gen_ai.provider.name": "openai", "gen_ai.request.model": "MY-FINETUNE-XYZ",
         "gen_ai.usage.input_tokens": 1_000_000, "gen_ai.usage.output_tokens": 500_000,
         "gen_ai.usage.cache_read.input_tokens": 400_000},
        {"gen_ai.provider.name": "ollama", "gen_ai.request.model": "llama3.2",
         "gen_ai.usage.input_tokens": 2_000_000, "gen_ai.usage.output_tokens": 1_000_000},
        {"gen_ai.provider.name": "vllm", "gen_ai.request.model": "llama3.2",  # regex is ollama-only
         "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 10},
        {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",  # override beats the library
         "gen_ai.usage.input_tokens": 1_000_000, "gen_ai.usage.output_tokens": 0},
    ], config)
    assert Decimal(out[0]["lqo.cost.input_usd"]) == Decimal("1.2") + Decimal("0.2")  # 600k uncached + 400k read
    assert Decimal(out[0]["lqo.cost.output_usd"]) == Decimal("4")
    assert Decimal(out[0]["lqo.cost.usd"]) == Decimal("5.4")
    assert Decimal(out[1]["lqo.cost.usd"]) == Decimal("0.4")
    assert out[2]["lqo.cost.source"] == "unknown_model"
    assert Decimal(out[3]["lqo.cost.usd"]) == Decimal("100")


def test_reported_cost_wins() -> None:
    (out,) = _processed([{"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
                          "gen_ai.usage.input_tokens": 100, "gen_ai.usage.output_tokens": 10,
                          "gen_ai.usage.cost": "0.0123"}])
    assert out["lqo.cost.usd"] == "0.0123" and out["lqo.cost.source"] == "reported"


def test_spans_without_usage_or_genai_are_untouched() -> None:
    spans = [{"http.method": "GET"}, {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "search"}]
    out = _processed(spans)
    assert out == [{k: str(v) for k, v in s.items()} for s in spans]


@pytest.mark.parametrize("bad", [
    {"overrides": [{"input_per_mtok": 1, "output_per_mtok": 1}]},
    {"overrides": [{"model": "a", "model_regex": "b", "input_per_mtok": 1, "output_per_mtok": 1}]},
    {"overrides": [{"model_regex": "(", "input_per_mtok": 1, "output_per_mtok": 1}]},
    {"overrides": [{"model": "a", "input_per_mtok": -1, "output_per_mtok": 1}]},
    {"overrides": [{"model": "a", "input_per_mtok": 1, "output_per_mtok": 1, "typo": 1}]},
])
def test_bad_config_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        CostConfig(**bad)


def test_malformed_usage_values_do_not_break_the_batch() -> None:
    out = _processed([{"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
                       "gen_ai.usage.input_tokens": "lots", "gen_ai.usage.output_tokens": "-5",
                       "gen_ai.usage.cost": "NaN"}])
    assert out[0]["lqo.cost.source"] == "computed" and Decimal(out[0]["lqo.cost.usd"]) == 0


def test_registered_through_the_entry_point() -> None:
    assert "cost" in factories("processors")


def test_cost_through_the_collector(make_collector: Any) -> None:
    col = make_collector({"processors": {"cost": {"overrides": [
        {"model": "house-model", "input_per_mtok": 1, "output_per_mtok": 2}]}},
        "service": {"pipelines": {"traces": {"processors": ["cost"]}}}})
    provider = TracerProvider(resource=Resource.create({"service.name": "costs"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{col.http_url}/v1/traces")))
    tracer = provider.get_tracer("test")
    cases = {
        "a": {"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
              "gen_ai.usage.input_tokens": 12000, "gen_ai.usage.output_tokens": 800,
              "gen_ai.usage.cache_read.input_tokens": 9000},
        "b": {"gen_ai.provider.name": "openai", "gen_ai.request.model": "house-model",
              "gen_ai.usage.input_tokens": 1000, "gen_ai.usage.output_tokens": 1000},
        "c": {"gen_ai.provider.name": "openai", "gen_ai.request.model": "nobody-knows",
              "gen_ai.usage.input_tokens": 1, "gen_ai.usage.output_tokens": 1},
    }
    for name, attrs in cases.items():
        tracer.start_span(name, attributes=attrs).end()
    tracer.start_span("plain", attributes={"http.method": "GET"}).end()
    provider.shutdown()
    col.wait_stored(4)
    rows = {r["SpanName"]: r for r in col.query(
        "SELECT SpanName, SpanAttributes['lqo.cost.usd'] AS usd, SpanAttributes['lqo.cost.source'] AS source, "
        "mapContains(SpanAttributes, 'lqo.cost.usd') AS has_usd FROM otel_traces")}
    now = datetime.now(UTC)
    expected = genai_prices.calc_price(genai_prices.Usage(input_tokens=12000, output_tokens=800, cache_read_tokens=9000),
                                       "gpt-4o-mini", provider_id="openai", genai_request_timestamp=now)
    assert Decimal(rows["a"]["usd"]) == expected.total_price and rows["a"]["source"] == "computed"
    assert Decimal(rows["b"]["usd"]) == Decimal("0.003")
    assert rows["c"]["source"] == "unknown_model" and not int(rows["c"]["has_usd"])
    assert rows["plain"]["source"] == "" and not int(rows["plain"]["has_usd"])
    metrics = col.metrics()
    assert 'lqo_cost_unknown_model_spans_total{processor="cost"} 1.0' in metrics


def test_with_attributes_on_a_sliced_batch() -> None:
    batch = _batch([{"gen_ai.request.model": f"m{i}", "k": i} for i in range(6)]).slice(2, 3)
    rows = np.array([0, 2])
    out = batch.with_attributes(rows, [{"k": "new", "x": "1"}, {"y": "2"}])
    attrs = [dict(kv) for kv in out.table.column("SpanAttributes").to_pylist()]
    assert attrs == [{"gen_ai.request.model": "m2", "k": "new", "x": "1"},
                     {"gen_ai.request.model": "m3", "k": "3"},
                     {"gen_ai.request.model": "m4", "k": "4", "y": "2"}]
    assert out.get_attributes(["k", "y"], rows) == [{"k": "new"}, {"k": "4", "y": "2"}]


def test_amounts_formatted_in_c_match_the_arrow_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    from lqo.processors import cost

    if cost._native_decimals is None:
        pytest.skip("the C extension is not built here")
    rng = np.random.default_rng(5)
    for scale in range(19):
        values = np.concatenate([rng.integers(0, 2**62, 500), rng.integers(0, 10**6, 500),
                                 [0, 1, 10**scale, 7 * 10**scale, 2**63 - 1]]).astype(np.int64)
        fast = cost._decimal_strings(values, scale)
        with monkeypatch.context() as m:
            m.setattr(cost, "_native_decimals", None)
            slow = cost._decimal_strings(values, scale)
        assert fast.equals(slow), scale
        assert all(Decimal(s) == Decimal(int(v)).scaleb(-scale) for s, v in zip(fast.to_pylist()[-5:], values[-5:], strict=True))
    assert cost._decimal_strings(np.array([185, 120000, 0]), 6).to_pylist() == ["0.000185", "0.12", "0"]
    with pytest.raises(ValueError, match="negative"):
        cost._native_decimals(np.array([-1], dtype=np.int64), 3)
    with pytest.raises(ValueError, match="scale"):
        cost._native_decimals(np.array([1], dtype=np.int64), 19)


def test_per_request_model_names_do_not_grow_the_lookups_for_good() -> None:
    """Model names come from the spans: a producer of per-request names (deployment or fine-tune
    ids, garbage) must not make the processor keep every one; known models are still priced."""
    proc = CostProcessor(CostConfig())
    proc.start()
    usage = {"gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 5}
    for start in range(0, 3 * MEMO_SIZE, 1000):
        proc.process(_batch([{"gen_ai.provider.name": "openai", "gen_ai.request.model": f"ft:gpt-4o:acme:{i}",
                              **usage} for i in range(start, start + 1000)]))
    long_name = {"gen_ai.provider.name": "openai", "gen_ai.request.model": "m" * 100_000, **usage}
    proc.process(_batch([long_name]))
    assert proc._book is not None
    for memo in (proc._cards, proc._book._models):
        assert 0 < len(memo) <= MEMO_SIZE
        assert all(sum(len(k) for k in key if k) <= MEMO_KEY_CHARS for key in memo)
    out = proc.process(_batch([{"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini", **usage}]))
    [attrs] = [dict(kv) for kv in out.table.column("SpanAttributes").to_pylist()]
    expected = _library("gpt-4o-mini", "openai", input_tokens=10, output_tokens=5)
    assert Decimal(attrs["lqo.cost.usd"]) == expected.total_price
