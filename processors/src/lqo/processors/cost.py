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
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from lqo.collector.components import ComponentContext, Factory
from lqo.collector.config import StrictModel
from lqo.collector.model.spanbatch import SpanBatch, group_rows
from lqo.processors.prices import FIELDS, ZERO, Band, PriceBook, RateCard, Usage, remember

try:  # the collector's optional C extension: amounts formatted in one pass
    from lqo.collector.model._otlp_native import decimal_strings as _native_decimals
except ImportError:  # pragma: no cover - built without a C compiler
    _native_decimals = None

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
USAGE_KEYS = (INPUT, CACHE_READ, CACHE_WRITE, OUTPUT, REASONING)  # in prices.FIELDS order
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

    def card(self) -> RateCard:
        """These prices as linear rates (for consistent usage: cached tokens within input)."""
        per_token = lambda v: Decimal(str(v)) / MTOK  # noqa: E731
        rate = per_token(self.input_per_mtok)
        read = per_token(self.cache_read_per_mtok) if self.cache_read_per_mtok is not None else rate
        write = per_token(self.cache_write_per_mtok) if self.cache_write_per_mtok is not None else rate
        return RateCard([], [Band((ZERO, ZERO), {
            "input": (rate, ZERO), "cache_read": (read - rate, ZERO), "cache_write": (write - rate, ZERO),
            "output": (ZERO, per_token(self.output_per_mtok)), "reasoning": (ZERO, ZERO)})])

    def price(self, usage: Usage) -> tuple[Decimal, Decimal]:
        rate = Decimal(str(self.input_per_mtok))
        read = Decimal(str(self.cache_read_per_mtok)) if self.cache_read_per_mtok is not None else rate
        write = Decimal(str(self.cache_write_per_mtok)) if self.cache_write_per_mtok is not None else rate
        uncached = max(0, usage.input - usage.cache_read - usage.cache_write)
        input_usd = (uncached * rate + usage.cache_read * read + usage.cache_write * write) / MTOK
        return input_usd, usage.output * Decimal(str(self.output_per_mtok)) / MTOK


class CostConfig(StrictModel):
    overrides: list[PriceOverride] = Field(default_factory=list, description="checked before genai-prices")


def _usage(attrs: dict[str, str]) -> Usage:
    return Usage(_int(attrs.get(INPUT)), _int(attrs.get(OUTPUT)), _int(attrs.get(CACHE_READ)),
                 _int(attrs.get(CACHE_WRITE)), _int(attrs.get(REASONING)))


MAX_TOKENS = 2**53  # a larger count is garbage, not usage: treated as absent


def _int(value: str | None) -> int:
    if value is None:
        return 0
    try:
        n = int(float(value))
    except (ValueError, OverflowError):
        return 0
    return n if 0 < n <= MAX_TOKENS else 0


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
        self._book: PriceBook | None = None
        self._cards: dict[tuple[str | None, str, str | None], RateCard | None] = {}

    def start(self) -> None:
        self._book = PriceBook()  # loads genai-prices: fail at start, not on the first batch

    def shutdown(self) -> None:
        pass

    def process(self, batch: SpanBatch) -> SpanBatch:
        rows = np.nonzero(batch.genai_mask())[0]
        if not len(rows):
            return batch
        cols = batch.attribute_columns(READ_KEYS, rows)
        out = _Columns(len(rows))
        counts = np.stack([_counts(cols[key]) for key in USAGE_KEYS])  # rows × FIELDS order
        has_usage = _valid(cols[INPUT]) | _valid(cols[OUTPUT])
        reported = _valid(cols[REPORTED])
        slow = list(np.nonzero(reported)[0])  # reported costs: the per-span path parses them
        candidates = np.nonzero(has_usage & ~reported)[0]
        if len(candidates):
            take = pa.array(candidates)
            keys, group = group_rows([pc.coalesce(cols[PROVIDER], cols[SYSTEM]).take(take),
                                      pc.coalesce(cols[RESPONSE_MODEL], cols[REQUEST_MODEL]).take(take),
                                      cols[REQUEST_MODEL].take(take)])
            slow.extend(self._price_groups(keys, group, candidates, counts[:, candidates], out))
        if slow:
            starts = batch.table.column("Timestamp").take(pa.array(rows[slow])).cast(pa.int64()).to_pylist()
            attrs = batch.get_attributes(READ_KEYS, rows[np.sort(slow)])
            by_row = dict(zip(np.sort(slow).tolist(), attrs, strict=True))
            for pos, start in zip(slow, starts, strict=True):
                update = self.price_span(by_row[pos], start)
                if update:
                    out.set_one(pos, update)
        if out.unknown and self._unknown is not None:
            self._unknown.inc(out.unknown)
        return batch.with_attribute_columns(rows, out.columns())

    def _price_groups(self, keys: list[tuple[Any, ...]], group: np.ndarray, positions: np.ndarray,
                      usage: np.ndarray, out: _Columns) -> list[int]:
        """Price every span whose (provider, model, request model) group has linear rates, in one
        pass of integer arithmetic; returns the positions left for the per-span path."""
        bands: list[Band] = []
        band_of = np.full(len(positions), -1, dtype=np.int64)
        unknown = np.zeros(len(positions), dtype=bool)
        per_span = np.zeros(len(positions), dtype=bool)
        for g, (provider, model, request_model) in enumerate(keys):
            members = group == g
            card = self._card(provider, model, request_model) if model else None
            if card is None:  # no price known, or no linear rates (time-dependent table)
                if not model or self._group_is_unknown(provider, model, request_model):
                    unknown |= members
                else:
                    per_span |= members
                continue
            first = len(bands)
            bands.extend(card.bands)
            if len(card.bands) == 1:
                band_of[members] = first
            else:  # genai-prices: a tier applies when total input tokens > its start
                band_of[members] = first + np.searchsorted(np.array(card.starts), usage[0, members], side="left")
        out.set_unknown(positions[unknown])
        inp, cache_read, cache_write, output, reasoning = usage
        priced = (band_of >= 0) & (cache_read + cache_write <= inp) & (reasoning <= output)
        if bands and priced.any():
            scale = max(b.scaled[0] for b in bands)
            # every band's base and rates as integers of 10**-scale USD (exact: Python ints)
            ints = [[v * 10 ** (scale - b.scaled[0]) for v in (*b.scaled[1], *(r for pair in b.scaled[2] for r in pair))]
                    for b in bands]
            magnitude = np.array([[float(abs(v)) for v in row] for row in ints])  # bands × (2 + 2*FIELDS)
            b = band_of.clip(0)
            rate_mag = np.maximum(magnitude[:, 2::2], magnitude[:, 3::2])  # bands × FIELDS
            bound = magnitude[b, :2].max(axis=1) + (rate_mag[b] * usage.T).sum(axis=1)
            priced &= bound < INT_LIMIT  # int64 cannot overflow; larger amounts go per span
            sel = np.nonzero(priced)[0]
            if len(sel):
                table = np.array(ints, dtype=object)
                table = table.astype(np.int64) if magnitude.max() < INT_LIMIT else None
            if len(sel) and table is not None:
                bs = band_of[sel]
                in_int, out_int = table[bs, 0].copy(), table[bs, 1].copy()
                for k in range(len(FIELDS)):
                    in_int += table[bs, 2 + 2 * k] * usage[k, sel]
                    out_int += table[bs, 3 + 2 * k] * usage[k, sel]
                out.set_computed(positions[sel], in_int, out_int, scale)
            elif len(sel):
                priced[:] = False
        return positions[~priced & ~unknown].tolist()

    def _card(self, provider: str | None, model: str, request_model: str | None) -> RateCard | None:
        """Linear rates for every span of this (provider, model), or None (unknown, or per span)."""
        key = (provider, model, request_model)
        try:
            return self._cards[key]
        except KeyError:
            pass
        card = self._find_card(provider, model, request_model)
        remember(self._cards, key, card)
        return card

    def _find_card(self, provider: str | None, model: str, request_model: str | None) -> RateCard | None:
        for override in self.config.overrides:
            if override.matches(provider, model):
                return override.card()
        name = (provider or "").lower()
        if name in LOCAL_PROVIDERS:
            return None
        found = self._resolve(provider, model, request_model)
        if found is None or isinstance(found[1].prices, list):
            return None  # unknown, or prices that change over time: the per-span path
        assert self._book is not None
        return self._book.card(found[1].prices) if found[0].id != "groq" else None

    def _group_is_unknown(self, provider: str | None, model: str, request_model: str | None) -> bool:
        if any(o.matches(provider, model) for o in self.config.overrides):
            return False
        return (provider or "").lower() in LOCAL_PROVIDERS or self._resolve(provider, model, request_model) is None

    def _resolve(self, provider: str | None, model: str, request_model: str | None) -> Any:
        if self._book is None:
            self.start()
        assert self._book is not None
        provider_id = PROVIDER_IDS.get((provider or "").lower())
        found = self._book.resolve(provider_id, model)
        if found is None and request_model and request_model != model:
            found = self._book.resolve(provider_id, request_model)
        return found

    def price_span(self, attrs: dict[str, str], start_ns: int | None = None) -> dict[str, str] | None:
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
        usage = _usage(attrs)
        for override in self.config.overrides:
            if override.matches(provider, model):
                input_usd, output_usd = override.price(usage)
                break
        else:
            prices = self._library_price(provider, model, attrs.get(REQUEST_MODEL), start_ns, usage)
            if prices is None:
                return {COST_SOURCE: "unknown_model"}
            input_usd, output_usd = prices
        return {
            COST_USD: _usd(input_usd + output_usd),
            COST_INPUT: _usd(input_usd),
            COST_OUTPUT: _usd(output_usd),
            COST_SOURCE: "computed",
        }

    def _library_price(self, provider: str | None, model: str, request_model: str | None,
                       start_ns: int | None, usage: Usage) -> tuple[Decimal, Decimal] | None:
        """genai-prices' price (rates derived from it), None when it knows no price for the model."""
        name = (provider or "").lower()
        if name in LOCAL_PROVIDERS:
            return None
        found = self._resolve(provider, model, request_model)
        if found is None:
            return None
        when = datetime.fromtimestamp(start_ns / 1e9, UTC) if start_ns else None
        try:
            return self._book.price(found, when, usage)
        except Exception as exc:  # a price table the library cannot apply to this usage
            log.warning("genai-prices failed for a %s model (%s)", provider or "unknown provider", type(exc).__name__)
            return None


FACTORY = Factory("cost", CostConfig, lambda config, ctx: CostProcessor(config, ctx))


# --------------------------------------------------------------------------- vectorized pricing

INT_LIMIT = 2**62


def _valid(values: pa.Array) -> np.ndarray:
    return values.is_valid().to_numpy(zero_copy_only=False)


def _counts(values: pa.Array) -> np.ndarray:
    """Token counts as int64: null, unparsable, negative or non-finite → 0."""
    try:
        numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        numbers = np.array([_int(v) for v in values.to_pylist()], dtype=np.float64)
    numbers = np.nan_to_num(numbers, nan=0.0, posinf=0.0, neginf=0.0)
    numbers[(numbers < 1) | (numbers > MAX_TOKENS)] = 0
    return numbers.astype(np.int64)


def _decimal_strings(unscaled: np.ndarray, scale: int) -> pa.Array:
    """Non-negative integers in units of 10**-scale → plain decimal strings ("0.000185")."""
    if _native_decimals is not None and 0 <= scale <= 18:
        offsets, data = _native_decimals(np.ascontiguousarray(unscaled, dtype=np.int64), scale)
        return pa.Array.from_buffers(pa.string(), len(unscaled), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    if scale == 0:
        return pc.cast(pa.array(unscaled), pa.string())
    unit = 10**scale
    whole = pc.cast(pa.array(unscaled // unit), pa.string())
    frac = pc.utf8_lpad(pc.cast(pa.array(unscaled % unit), pa.string()), width=scale, padding="0")
    joined = pc.binary_join_element_wise(whole, frac, ".")
    return pc.utf8_rtrim(pc.utf8_rtrim(joined, characters="0"), characters=".")


class _Columns:
    """The four cost attributes for a batch's GenAI rows, gathered in chunks, assembled once."""

    KEYS = (COST_USD, COST_INPUT, COST_OUTPUT, COST_SOURCE)

    def __init__(self, n: int) -> None:
        self.n = n
        self.chunks: dict[str, list[tuple[np.ndarray, pa.Array]]] = {k: [] for k in self.KEYS}
        self.unknown = 0

    def set_computed(self, positions: np.ndarray, in_int: np.ndarray, out_int: np.ndarray, scale: int) -> None:
        if (in_int < 0).any() or (out_int < 0).any():  # cannot happen for consistent usage; be safe
            raise ArithmeticError("negative price")
        for key, values in ((COST_INPUT, in_int), (COST_OUTPUT, out_int), (COST_USD, in_int + out_int)):
            self.chunks[key].append((positions, _decimal_strings(values, scale)))
        self.chunks[COST_SOURCE].append((positions, pa.repeat(pa.scalar("computed"), len(positions))))

    def set_unknown(self, positions: np.ndarray) -> None:
        self.unknown += len(positions)
        self.chunks[COST_SOURCE].append((positions, pa.repeat(pa.scalar("unknown_model"), len(positions))))

    def set_one(self, pos: int, update: dict[str, str]) -> None:
        self.unknown += update.get(COST_SOURCE) == "unknown_model"
        for key, value in update.items():
            self.chunks[key].append((np.array([pos]), pa.array([value], pa.string())))

    def columns(self) -> dict[str, pa.Array]:
        out = {}
        for key, chunks in self.chunks.items():
            if not chunks:
                continue
            values = pa.concat_arrays([c[1] for c in chunks])
            index = np.full(self.n, -1, dtype=np.int64)
            index[np.concatenate([c[0] for c in chunks])] = np.arange(len(values))
            out[key] = values.take(pa.array(index, mask=index < 0))
        return out
