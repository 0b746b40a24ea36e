"""The cost processor's rate cards against genai-prices itself: for every model of the major
providers in the installed price data, random usages (tier thresholds crossed, cache and
reasoning tokens, inconsistent counts) price exactly as ``genai_prices.calc_price`` does."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
import pytest
from genai_prices import data_snapshot
from genai_prices.types import ModelPrice, TieredPrices

from lqo.processors.prices import PriceBook, Usage, derive_card

PROVIDERS = ("openai", "anthropic", "google", "mistral", "deepseek", "x-ai", "aws", "azure", "groq", "cohere")
WHEN = datetime(2026, 11, 1, 15, 30, tzinfo=UTC)


def _usages(rng: random.Random, thresholds: list[int]) -> list[Usage]:
    out = [Usage(0, 0), Usage(1, 1), Usage(250, 40, cache_read=100, reasoning=10),
           Usage(10, 5, cache_read=20), Usage(3, 9, reasoning=12)]  # the last two are inconsistent
    for t in thresholds:
        out += [Usage(t, 100, cache_read=t // 2), Usage(t + 1, 100, cache_read=t // 2, cache_write=7)]
    for _ in range(6):
        inp = rng.randrange(0, 400_000)
        out.append(Usage(inp, rng.randrange(0, 20_000), cache_read=rng.randrange(0, inp + 1) // 2,
                         cache_write=rng.randrange(0, inp + 1) // 3, reasoning=rng.randrange(0, 500)))
    return out


def _thresholds(price: ModelPrice) -> list[int]:
    return sorted({t.start for v in price.__dict__.values() if isinstance(v, TieredPrices) for t in v.tiers})


def test_rate_cards_price_exactly_as_the_library() -> None:
    rng = random.Random(7)
    book = PriceBook()
    checked = tiered = 0
    for provider in data_snapshot.get_snapshot().providers:
        if provider.id not in PROVIDERS:
            continue
        for model in provider.models:
            found = book.resolve(provider.id, model.id)
            if found is None or found[1] is not model:
                continue  # an id another entry of this provider matches first
            table = model.get_prices(WHEN)
            card = derive_card(table)
            assert card is not None, (provider.id, model.id)  # priced by rates, not the slow path
            tiered += len(card.bands) > 1
            for usage in _usages(rng, _thresholds(table)):
                try:
                    lib = genai_prices.calc_price(usage.library(), model.id, provider_id=provider.id,
                                                  genai_request_timestamp=WHEN)
                except Exception as exc:
                    with pytest.raises(type(exc)):
                        book.price(found, WHEN, usage)
                    continue
                ours = book.price(found, WHEN, usage)
                assert ours == (lib.input_price, lib.output_price), (provider.id, model.id, usage)
                checked += 1
    assert checked > 2000 and tiered > 10, (checked, tiered)


def test_vectorized_batch_pricing_equals_the_per_span_path() -> None:
    """The cost processor prices a batch with integer arithmetic per (model, tier band); every
    span must get exactly what the per-span path (``price_span``) gives it — including spans the
    batch path hands over: reported costs, inconsistent or garbage counts, unknown and local models."""
    from lqo.processors.cost import CostConfig, CostProcessor
    from tests.processors.test_cost import _batch  # one batch builder for the cost tests

    rng = random.Random(11)
    models = [("openai", "gpt-4o-mini"), ("openai", "o3-mini"), ("anthropic", "claude-sonnet-4-20250514"),
              ("anthropic", "claude-3-5-haiku-20241022"), ("gcp.gemini", "gemini-2.5-pro"),
              ("deepseek", "deepseek-chat"), ("openai", "no-such-model"), ("ollama", "llama3"),
              ("mistral_ai", "mistral-large-latest"), ("openai", "gpt-4.1")]
    spans = []
    for i in range(600):
        provider, model = rng.choice(models)
        inp = rng.choice([rng.randrange(0, 5000), rng.randrange(150_000, 300_000), 200_000, 200_001])
        attrs = {"gen_ai.provider.name": provider, "gen_ai.request.model": model,
                 "gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": rng.randrange(0, 4000),
                 "gen_ai.usage.cache_read.input_tokens": rng.randrange(0, inp + 1) // 2,
                 "gen_ai.usage.reasoning.output_tokens": rng.randrange(0, 50)}
        if i % 7 == 0:
            attrs["gen_ai.usage.cache_creation.input_tokens"] = rng.randrange(0, 1000)
        if i % 53 == 0:
            attrs["gen_ai.usage.cost"] = "0.0125"
        if i % 41 == 0:
            attrs["gen_ai.usage.input_tokens"] = rng.choice(["abc", "-5", "1e30", "NaN", " 12 "])
        if i % 29 == 0:
            del attrs["gen_ai.usage.output_tokens"]
        spans.append(attrs)
    spans.append({"gen_ai.operation.name": "execute_tool"})  # no usage: untouched
    overrides = [{"model": "gpt-4.1", "input_per_mtok": 1.75, "output_per_mtok": 7.25, "cache_read_per_mtok": 0.4}]
    proc = CostProcessor(CostConfig(overrides=overrides))
    proc.start()
    out = proc.process(_batch(spans))
    got = [dict(kv) for kv in out.table.column("SpanAttributes").to_pylist()]
    start = int(datetime(2026, 11, 1, 12, tzinfo=UTC).timestamp() * 1e9)
    sources = set()
    for attrs, stored in zip(spans, got, strict=True):
        expected = proc.price_span({k: str(v) for k, v in attrs.items()}, start) or {}
        mine = {k: v for k, v in stored.items() if k.startswith("lqo.cost.")}
        assert mine.keys() == expected.keys(), (attrs, mine, expected)
        for key, value in expected.items():
            if key == "lqo.cost.source":
                assert mine[key] == value
            else:
                assert Decimal(mine[key]) == Decimal(value), (attrs, key, mine, expected)
                assert "E" not in mine[key] and not ("." in mine[key] and mine[key].endswith(("0", ".")))
        sources.add(expected.get("lqo.cost.source"))
    assert sources == {"computed", "reported", "unknown_model", None}
