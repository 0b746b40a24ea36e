"""Prices from the ``genai-prices`` package, fast enough to run on every GenAI span.

``genai_prices.calc_price`` costs ~110 µs a call (unit registry, usage decomposition, Decimal
work per unit). A model's price is linear in the token counts within a tier band (providers
charge per token, with a flat per-request fee at most; tiers switch all rates at an input-token
threshold). So for each price table (``ModelPrice``) and tier band this module asks the library
for the price of a few probe usages once, derives the per-token rates from the differences, and
prices spans with a handful of Decimal multiplications. The rates are checked once against the
library at another point of the band; a table whose prices are not linear (a unit this module
does not know, audio-second billing) keeps going through the library on every span.

Matching the model and provider, and picking the table valid at the call's start time, stay
the library's (``find_provider_model``, ``ModelInfo.get_prices``), cached per (provider, model).
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cached_property
from typing import Any

log = logging.getLogger(__name__)

ZERO = Decimal(0)
FIELDS = ("input", "cache_read", "cache_write", "output", "reasoning")


@dataclass(frozen=True)
class Usage:
    input: int
    output: int
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0

    def consistent(self) -> bool:
        """Cached tokens are part of input, reasoning tokens part of output (semconv)."""
        return self.cache_read + self.cache_write <= self.input and self.reasoning <= self.output

    def library(self) -> Any:
        import genai_prices

        usage = genai_prices.Usage(input_tokens=self.input, output_tokens=self.output)
        if self.cache_read:
            usage.cache_read_tokens = self.cache_read
        if self.cache_write:
            usage.cache_write_tokens = self.cache_write
        if self.reasoning:
            usage.output_reasoning_tokens = self.reasoning
        return usage


Prices = tuple[Decimal, Decimal]  # (input USD, output USD)


@dataclass(frozen=True)
class Band:
    """Per-token rates (input side, output side) valid for input tokens in one tier band."""

    base: Prices
    rates: dict[str, Prices]

    @cached_property
    def scaled(self) -> tuple[int, tuple[int, int], list[tuple[int, int]]]:
        """(S, base, rates per FIELDS) as exact integers in units of 10**-S USD, for vectorized
        integer pricing (every value here is a finite Decimal, so S is finite)."""
        values = [*self.base, *(r for name in FIELDS for r in self.rates[name])]
        scale = max(0, *(-v.as_tuple().exponent for v in values if v))  # type: ignore[operator]
        unit = Decimal(10) ** scale
        ints = [int(v * unit) for v in values]
        return scale, (ints[0], ints[1]), [(ints[2 + 2 * k], ints[3 + 2 * k]) for k in range(len(FIELDS))]

    def price(self, u: Usage) -> Prices:
        i, o = self.base
        for name in FIELDS:
            n = getattr(u, name)
            if n:
                ri, ro = self.rates[name]
                i += ri * n
                o += ro * n
        return i, o


class RateCard:
    """Linear rates of one ``ModelPrice``, per tier band (bands start after ``starts[k]`` tokens)."""

    def __init__(self, starts: list[int], bands: list[Band]) -> None:
        self.starts, self.bands = starts, bands

    def price(self, u: Usage) -> Prices:
        # genai-prices: a tier applies when total input tokens > its start
        return self.bands[bisect.bisect_left(self.starts, u.input)].price(u)


def derive_card(model_price: Any) -> RateCard | None:
    """The rate card of a price table, or None when its prices are not linear in the counts."""
    from genai_prices.types import TieredPrices

    starts = sorted({t.start for v in model_price.__dict__.values() if isinstance(v, TieredPrices) for t in v.tiers})
    # band k holds input counts in (starts[k-1], starts[k]]; probe just inside it
    lows = [0, *starts]
    calc = lambda u: _prices(model_price.calc_price(u.library()))  # noqa: E731
    bands = []
    try:
        for low in lows:
            i0 = low + 1
            base = Usage(i0, 0)
            at = calc(base)
            rates: dict[str, Prices] = {
                "input": _diff(calc(Usage(i0 + 1, 0)), at),
                "cache_read": _diff(calc(Usage(i0, 0, cache_read=1)), at),
                "cache_write": _diff(calc(Usage(i0, 0, cache_write=1)), at),
                "output": _diff(calc(Usage(i0, 1)), at),
            }
            rates["reasoning"] = _diff(calc(Usage(i0, 1, reasoning=1)), calc(Usage(i0, 1)))
            band = Band((at[0] - rates["input"][0] * i0, at[1] - rates["input"][1] * i0), rates)
            check = Usage(i0 + 9, 13, cache_read=5, cache_write=3, reasoning=7)
            if band.price(check) != calc(check):
                return None
            bands.append(band)
    except Exception as exc:  # a table the probes cannot price: leave it to the library per span
        log.debug("no linear rate card (%s)", type(exc).__name__)
        return None
    return RateCard(starts, bands)


def _prices(calc: Any) -> Prices:
    return calc["input_price"], calc["output_price"]


def _diff(a: Prices, b: Prices) -> Prices:
    return a[0] - b[0], a[1] - b[1]


# Lookups remembered per (provider, model): a deployment has a few dozen, but model names come
# from the spans, and a producer of per-request names (fine-tune or deployment ids, garbage)
# must not grow the memo for good. Past this many it starts over; a name too long to be a
# model's is looked up each time, not kept.
MEMO_SIZE = 4096
MEMO_KEY_CHARS = 512


def remember(memo: dict[Any, Any], key: tuple[str | None, ...], value: Any) -> None:
    if sum(len(k) for k in key if k) > MEMO_KEY_CHARS:
        return
    if len(memo) >= MEMO_SIZE:
        memo.clear()
    memo[key] = value


class PriceBook:
    """genai-prices lookups with rate cards; one per cost processor (not thread-safe)."""

    def __init__(self) -> None:
        from genai_prices import data_snapshot

        self._snapshot = data_snapshot.get_snapshot()
        self._models: dict[tuple[str | None, str], Any] = {}
        self._cards: dict[int, tuple[Any, RateCard | None]] = {}

    def resolve(self, provider_id: str | None, model: str) -> Any:
        """(Provider, ModelInfo) for a genai-prices provider id (or None: match by model), or None."""
        key = (provider_id, model)
        try:
            return self._models[key]
        except KeyError:
            pass
        found = None
        for pid in (provider_id, None) if provider_id else (None,):
            try:
                found = self._snapshot.find_provider_model(model, None, pid, None)
                break
            except LookupError:
                continue
        remember(self._models, key, found)
        return found

    def card(self, table: Any) -> RateCard | None:
        """The rate card of a price table (derived once), or None when it is not linear."""
        cached = self._cards.get(id(table))
        if cached is None or cached[0] is not table:
            # the table stays referenced here, so its id cannot be reused while cached
            cached = self._cards[id(table)] = (table, derive_card(table))
        return cached[1]

    def price(self, found: Any, start: datetime | None, usage: Usage) -> Prices:
        provider, info = found
        when = start or datetime.now(tz=UTC)
        table = info.prices if not isinstance(info.prices, list) else info.get_prices(when)
        card = self.card(table) if provider.id != "groq" else None  # groq: audio-second billing rules
        if card is not None and usage.consistent():
            return card.price(usage)
        calc = info.calc_price(usage.library(), provider, genai_request_timestamp=when)
        return calc.input_price, calc.output_price
