"""The ``cost`` processor: the USD cost of every GenAI call, from token usage.

Reads (semconv names; run ``genai_normalize`` first for other producers' spans):
``gen_ai.provider.name`` (or legacy ``gen_ai.system``), ``gen_ai.response.model`` (else
``gen_ai.request.model``), ``gen_ai.usage.input_tokens`` (cached tokens included, as semconv
and genai-prices both count them), ``gen_ai.usage.output_tokens`` (reasoning included),
``gen_ai.usage.cache_read.input_tokens``, ``gen_ai.usage.cache_creation.input_tokens``,
``gen_ai.usage.reasoning.output_tokens``, and a producer-reported ``gen_ai.usage.cost``.

Writes ``lqo.cost.usd``, ``lqo.cost.input_usd``, ``lqo.cost.output_usd`` and
``lqo.cost.source`` (``computed`` | ``reported`` | ``unknown_model``). An unknown model gets
no cost attribute (never 0) and is counted in ``lqo_cost_unknown_model_spans_total``.

Prices: the ``genai-prices`` package (provider + model matching, cache read/write rates, price
changes over time — the span's start time picks the price), unless an ``overrides`` entry
matches first (exact model, then regex, in config order; optionally per provider).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from lqo.collector.components import ComponentContext, Factory
from lqo.collector.config import StrictModel
from lqo.collector.model.spanbatch import SpanBatch

log = logging.getLogger(__name__)

PROVIDER = "gen_ai.provider.name"
SYSTEM = "gen_ai.system"
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
INPUT = "gen_ai.usage.input_tokens"
OUTPUT = "gen_ai.usage.output_tokens"
CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
CACHE_WRITE = "gen_ai.usage.cache_creation.input_tokens"
REASONING = "gen_ai.usage.reasoning.output_tokens"
REPORTED = "gen_ai.usage.cost"
COST_USD, COST_INPUT, COST_OUTPUT, COST_SOURCE = (
    "lqo.cost.usd", "lqo.cost.input_usd", "lqo.cost.output_usd", "lqo.cost.source")
READ_KEYS = (PROVIDER, SYSTEM, REQUEST_MODEL, RESPONSE_MODEL, INPUT, OUTPUT, CACHE_READ, CACHE_WRITE,
             REASONING, REPORTED)

# gen_ai.provider.name (semconv well-known values, and legacy gen_ai.system ones) -> genai-prices id.
PROVIDER_IDS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "azure.ai.openai": "azure",
    "az.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "aws.bedrock": "aws",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    "vertex_ai": "google",
    "gemini": "google",
    "google": "google",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "groq": "groq",
    "deepseek": "deepseek",
    "x_ai": "x-ai",
    "xai": "x-ai",
    "cohere": "cohere",
    "perplexity": "perplexity",
    "together": "together",
    "together_ai": "together",
    "openrouter": "openrouter",
    "fireworks": "fireworks",
}
# Self-hosted runtimes: no list price, so never guess one from the model name.
LOCAL_PROVIDERS = frozenset({"ollama", "vllm", "llama_cpp", "llama.cpp", "lmstudio", "localai", "tgi"})
MTOK = Decimal(1_000_000)


class PriceOverride(StrictModel):
    """A price you set: for self-hosted or fine-tuned models, or negotiated rates."""

    model: str | None = Field(None, description="exact model name (case-insensitive)")
    model_regex: str | None = Field(None, description="Python regex, full match on the model name")
    provider: str | None = Field(None, description="only for this gen_ai.provider.name")
    input_per_mtok: float = Field(ge=0, description="USD per million uncached input tokens")
    output_per_mtok: float = Field(ge=0, description="USD per million output tokens (reasoning included)")
    cache_read_per_mtok: float | None = Field(None, ge=0, description="default: the input rate")
    cache_write_per_mtok: float | None = Field(None, ge=0, description="default: the input rate")

    @model_validator(mode="after")
    def _one_matcher(self) -> PriceOverride:
        if (self.model is None) == (self.model_regex is None):
            raise ValueError("set exactly one of `model` (exact name) or `model_regex`")
        if self.model_regex is not None:
            try:
                re.compile(self.model_regex)
            except re.error as exc:
                raise ValueError(f"model_regex {self.model_regex!r} is not a valid regex: {exc}") from exc
        return self

    def matches(self, provider: str | None, model: str) -> bool:
        if self.provider is not None and self.provider != provider:
            return False
        if self.model is not None:
            return self.model.lower() == model.lower()
        return re.fullmatch(self.model_regex or "", model) is not None

    def price(self, usage: Usage) -> tuple[Decimal, Decimal]:
        rate = Decimal(str(self.input_per_mtok))
        read = Decimal(str(self.cache_read_per_mtok)) if self.cache_read_per_mtok is not None else rate
        write = Decimal(str(self.cache_write_per_mtok)) if self.cache_write_per_mtok is not None else rate
        uncached = max(0, usage.input - usage.cache_read - usage.cache_write)
        input_usd = (uncached * rate + usage.cache_read * read + usage.cache_write * write) / MTOK
        return input_usd, usage.output * Decimal(str(self.output_per_mtok)) / MTOK


class CostConfig(StrictModel):
    overrides: list[PriceOverride] = Field(default_factory=list, description="checked before genai-prices")
    cache_size: int = Field(65536, ge=0, description="remembered price calculations (same inputs, same answer)")


class Usage:
    __slots__ = ("cache_read", "cache_write", "input", "output", "reasoning")

    def __init__(self, attrs: dict[str, str]) -> None:
        self.input = _int(attrs.get(INPUT))
        self.output = _int(attrs.get(OUTPUT))
        self.cache_read = _int(attrs.get(CACHE_READ))
        self.cache_write = _int(attrs.get(CACHE_WRITE))
        self.reasoning = _int(attrs.get(REASONING))

    def key(self) -> tuple[int, ...]:
        return self.input, self.output, self.cache_read, self.cache_write, self.reasoning


def _int(value: str | None) -> int:
    if value is None:
        return 0
    try:
        n = int(float(value))
    except ValueError:
        return 0
    return n if n > 0 else 0


def _decimal(value: str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        d = Decimal(value)
    except ArithmeticError:
        return None
    return d if d.is_finite() and d >= 0 else None


def _usd(value: Decimal) -> str:
    return format(value.normalize(), "f")


class CostProcessor:
    def __init__(self, config: CostConfig, ctx: ComponentContext | None = None) -> None:
        self.config = config
        self._id = ctx.component_id if ctx else "cost"
        self._unknown = ctx.telemetry.counter(
            "lqo_cost_unknown_model_spans",
            "GenAI spans with usage but no known price for their model (no cost attribute written).",
            ["processor"],
        ).labels(self._id) if ctx else None
        self._calc = lru_cache(maxsize=config.cache_size)(_genai_prices) if config.cache_size else _genai_prices

    def start(self) -> None:
        import genai_prices  # noqa: F401  (fail at start, not on the first batch)

    def shutdown(self) -> None:
        pass

    def process(self, batch: SpanBatch) -> SpanBatch:
        rows = np.nonzero(batch.genai_mask())[0]
        if not len(rows):
            return batch
        found = batch.get_attributes(READ_KEYS, rows)
        starts = batch.table.column("Timestamp").to_numpy()
        out_rows, updates = [], []
        unknown = 0
        for row, attrs in zip(rows.tolist(), found, strict=True):
            update = self.price_span(attrs, starts[row])
            if update:
                out_rows.append(row)
                updates.append(update)
                unknown += update[COST_SOURCE] == "unknown_model"
        if unknown and self._unknown is not None:
            self._unknown.inc(unknown)
        return batch.with_attributes(np.array(out_rows, dtype=np.int64), updates) if out_rows else batch

    def price_span(self, attrs: dict[str, str], start: Any) -> dict[str, str] | None:
        """The cost attributes for one span's attributes, or None if it is not a priced call."""
        reported = _decimal(attrs.get(REPORTED))
        if reported is not None:
            return {COST_USD: _usd(reported), COST_SOURCE: "reported"}
        if INPUT not in attrs and OUTPUT not in attrs:
            return None  # not an inference call (tool execution, agent step…)
        model = attrs.get(RESPONSE_MODEL) or attrs.get(REQUEST_MODEL)
        if not model:
            return {COST_SOURCE: "unknown_model"}
        provider = attrs.get(PROVIDER) or attrs.get(SYSTEM)
        usage = Usage(attrs)
        for override in self.config.overrides:
            if override.matches(provider, model):
                input_usd, output_usd = override.price(usage)
                break
        else:
            day = np.datetime64(start, "D").item() if start is not None else None
            prices = self._calc(provider, model, day, *usage.key())
            if prices is None and model != attrs.get(REQUEST_MODEL) and attrs.get(REQUEST_MODEL):
                prices = self._calc(provider, attrs[REQUEST_MODEL], day, *usage.key())
            if prices is None:
                return {COST_SOURCE: "unknown_model"}
            input_usd, output_usd = prices
        return {
            COST_USD: _usd(input_usd + output_usd),
            COST_INPUT: _usd(input_usd),
            COST_OUTPUT: _usd(output_usd),
            COST_SOURCE: "computed",
        }


def _genai_prices(provider: str | None, model: str, day: Any, input_tokens: int, output_tokens: int,
                  cache_read: int, cache_write: int, reasoning: int) -> tuple[Decimal, Decimal] | None:
    """genai-prices' own calculation; None when it knows no price for the model."""
    import genai_prices

    usage = genai_prices.Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    if cache_read:
        usage.cache_read_tokens = cache_read
    if cache_write:
        usage.cache_write_tokens = cache_write
    if reasoning:
        usage.output_reasoning_tokens = reasoning
    when = datetime(day.year, day.month, day.day, 12, tzinfo=UTC) if day is not None else None
    name = (provider or "").lower()
    if name in LOCAL_PROVIDERS:
        return None
    provider_id = PROVIDER_IDS.get(name)
    for pid in (provider_id, None) if provider_id else (None,):
        try:
            calc = genai_prices.calc_price(usage, model, provider_id=pid, genai_request_timestamp=when)
        except LookupError:
            continue
        except Exception as exc:  # a price table the library cannot apply to this usage
            log.warning("genai-prices failed for a %s model (%s)", provider or "unknown provider", type(exc).__name__)
            return None
        return calc.input_price, calc.output_price
    return None


FACTORY = Factory("cost", CostConfig, lambda config, ctx: CostProcessor(config, ctx))
