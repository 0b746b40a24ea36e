"""What every safety check shares: its config (threshold, events, load shedding), which spans it
looks at, and how its verdicts are written to the batch.

Each check writes its attributes (``lqo.<check>.*``), appends its name to ``lqo.flags`` (a JSON
list) when tripped, and adds one standard ``gen_ai.evaluation.result`` event per span it
scored. Spans it had to skip to keep up carry ``lqo.<check>.skipped=sampled`` instead.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from pydantic import Field

from lqo.collector.config import StrictModel
from lqo.collector.model.spanbatch import EVALUATION_EVENT, FLAGS, SpanBatch
from lqo.collector.telemetry import watch_cache

V = TypeVar("V")


TEXT_CACHE_CHARS = 32_000_000  # characters of text a TextCache keeps, whatever its count


class TextCache(Generic[V]):
    """A check's result per distinct text (system prompts and stock answers repeat), the least
    recently used dropped beyond ``size`` entries or ``chars`` characters of text (so a producer
    of very long messages cannot make the cache hold GBs); what is missing is computed in one
    batch (:meth:`resolve`) or one at a time (:meth:`get`). ``name``: reported in the collector's
    ``lqo_cache_entries`` / ``lqo_cache_capacity`` while it lives."""

    def __init__(self, size: int, chars: int = TEXT_CACHE_CHARS, name: str | None = None) -> None:
        self.size = size
        self.chars = chars
        self.held = 0  # characters of the texts kept
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        if name is not None:
            watch_cache(self, name, TextCache.usage)

    def usage(self) -> tuple[int, int]:
        """(entries, the most it keeps)."""
        return len(self._entries), self.size

    def clear(self) -> None:
        self._entries.clear()
        self.held = 0

    def get(self, key: Hashable, compute: Callable[[], V]) -> V:
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
            return hit
        value = compute()
        if self.size:
            self._add(key, value)
            self._evict()
        return value

    def resolve(self, texts: Iterable[str], compute: Callable[[list[str]], Iterable[V]],
                trivial: Callable[[str], V | None] = lambda text: None,
                keep: Callable[[str], bool] = lambda text: True) -> dict[str, V]:
        """Each distinct text's result: cached, ``trivial(text)`` when not None (never cached),
        else from one ``compute(missing texts)`` call (remembered where ``keep(text)``)."""
        found: dict[str, V] = {}
        todo: list[str] = []
        for text in dict.fromkeys(texts):
            hit = self._entries.get(text)
            if hit is not None:
                self._entries.move_to_end(text)
                found[text] = hit
            elif (quick := trivial(text)) is not None:
                found[text] = quick
            else:
                todo.append(text)
        if todo:
            for text, result in zip(todo, compute(todo), strict=True):
                found[text] = result
                if self.size and keep(text):
                    self._add(text, result)
            self._evict()
        return found

    def _add(self, key: Hashable, value: V) -> None:
        self._entries[key] = value
        self.held += _chars(key)

    def _evict(self) -> None:
        while len(self._entries) > self.size or (self.held > self.chars and self._entries):
            key, _ = self._entries.popitem(last=False)
            self.held -= _chars(key)


def _chars(key: Hashable) -> int:
    return len(key) if isinstance(key, str) else 0


class SamplingConfig(StrictModel):
    rate: float = Field(1.0, ge=0.0, le=1.0, description=(
        "fraction of GenAI spans checked, chosen by trace id (a trace is checked whole or not at "
        "all); the others are marked lqo.<check>.skipped=sampled"))
    max_spans_per_second: float | None = Field(None, gt=0, description=(
        "shed load above this rate (token bucket, one second of burst): spans over it are marked "
        "lqo.<check>.skipped=sampled instead of stalling ingestion"))


class CheckConfig(StrictModel):
    emit_events: bool = Field(True, description="add a gen_ai.evaluation.result event per checked span")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)


@dataclass
class Verdict:
    """One span's result: its attributes, and the event's score, label, explanation and any
    attributes of the check's own (e.g. per-class scores)."""

    attributes: dict[str, str] = field(default_factory=dict)
    score: float | None = None
    label: str = ""
    explanation: str = ""
    flagged: bool = False
    event_attributes: dict[str, str] = field(default_factory=dict)


class Sampler:
    """Which GenAI spans a check may look at now (rate by trace id, then a token bucket)."""

    def __init__(self, config: SamplingConfig) -> None:
        self.config = config
        self._tokens = config.max_spans_per_second or 0.0
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def split(self, batch: SpanBatch, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows to check, rows skipped)."""
        keep = np.ones(len(rows), dtype=bool)
        if self.config.rate < 1.0 and len(rows):
            trace_ids = batch.table.column("TraceId").take(rows).to_pylist()
            cut = int(self.config.rate * 0xFFFFFFFF)
            keep &= np.array([zlib.crc32((t or "").encode()) <= cut for t in trace_ids], dtype=bool)
        limit = self.config.max_spans_per_second
        if limit is not None:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(limit, self._tokens + (now - self._last) * limit)
                self._last = now
                allowed = int(self._tokens)
                kept = np.nonzero(keep)[0]
                keep[kept[allowed:]] = False
                self._tokens -= min(allowed, len(kept))
        return rows[keep], rows[~keep]

    def set_limit(self, spans_per_second: float) -> None:
        """A new token-bucket rate (the tokens already earned are kept, capped at the new rate)."""
        with self._lock:
            self.config = self.config.model_copy(update={"max_spans_per_second": spans_per_second})
            self._tokens = min(self._tokens, spans_per_second)


def genai_rows(batch: SpanBatch) -> np.ndarray:
    return np.nonzero(batch.genai_mask())[0] if len(batch) else np.zeros(0, dtype=np.int64)


def merged_flags(existing: str | None, add: str) -> str:
    flags: list[str] = []
    if existing:
        try:
            parsed = json.loads(existing)
            flags = [str(f) for f in parsed] if isinstance(parsed, list) else [existing]
        except ValueError:
            flags = [f.strip() for f in existing.split(",") if f.strip()]
    if add not in flags:
        flags.append(add)
    return json.dumps(flags, separators=(",", ":"))


def write_verdicts(batch: SpanBatch, check: str, flag: str, rows: np.ndarray, verdicts: Sequence[Verdict],
                   skipped: np.ndarray, skipped_key: str, emit_events: bool) -> SpanBatch:
    """``batch`` with the verdicts of ``rows`` (ascending) and the skip marks of ``skipped``."""
    all_rows = np.concatenate([rows, skipped])
    order = np.argsort(all_rows, kind="stable")
    all_rows = all_rows[order]
    if not len(all_rows):
        return batch
    existing = batch.attribute_columns([FLAGS], rows)[FLAGS].to_pylist() if len(rows) else []
    updates: list[dict[str, str]] = []
    for verdict, flags in zip(verdicts, existing, strict=True):
        update = dict(verdict.attributes)
        if verdict.flagged:
            update[FLAGS] = merged_flags(flags, flag)
        updates.append(update)
    updates.extend({skipped_key: "sampled"} for _ in range(len(skipped)))
    out = batch.with_attributes(all_rows, [updates[i] for i in order.tolist()])
    if not emit_events or not len(rows):
        return out
    scored = [i for i, v in enumerate(verdicts) if v.score is not None or v.label]
    if not scored:
        return out
    event_rows = rows[scored]
    ends = (batch.table.column("Timestamp").take(event_rows).cast("int64").to_numpy()
            + batch.table.column("Duration").take(event_rows).cast("int64").to_numpy())
    events = out.events(event_rows)
    for evs, i, end in zip(events, scored, ends.tolist(), strict=True):
        verdict = verdicts[i]
        attrs = {**verdict.event_attributes, "gen_ai.evaluation.name": check}
        if verdict.score is not None:
            attrs["gen_ai.evaluation.score.value"] = _number(verdict.score)
        if verdict.label:
            attrs["gen_ai.evaluation.score.label"] = verdict.label
        if verdict.explanation:
            attrs["gen_ai.evaluation.explanation"] = verdict.explanation
        evs.append((EVALUATION_EVENT, int(end), attrs))
    return out.with_events(event_rows, events)


def _number(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if value else "0"


class CheckProcessor:
    """A processor that scores each GenAI span from its attributes: subclasses set ``check``
    (the evaluation name), ``flag`` (its ``lqo.flags`` entry), ``prefix`` (``lqo.<prefix>.*``),
    ``read_keys``, and implement :meth:`evaluate` for a list of spans' attributes."""

    check = ""
    flag = ""
    prefix = ""
    read_keys: tuple[str, ...] = ()

    def __init__(self, config: CheckConfig) -> None:
        self.config = config
        self.sampler = Sampler(config.sampling)

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def evaluate(self, spans: list[dict[str, str]]) -> list[Verdict | None]:
        raise NotImplementedError

    def process(self, batch: SpanBatch) -> SpanBatch:
        candidates = genai_rows(batch)
        if not len(candidates):
            return batch
        # Only spans that carry text this check reads; the rest are not its business.
        candidates = candidates[batch.rows_with_keys(self.read_keys)[candidates]]
        rows, skipped = self.sampler.split(batch, candidates)
        verdicts = self.evaluate(batch.get_attributes(self.read_keys, rows)) if len(rows) else []
        kept = [i for i, v in enumerate(verdicts) if v is not None]
        return write_verdicts(batch, self.check, self.flag, rows[kept], [verdicts[i] for i in kept], skipped,
                              f"lqo.{self.prefix}.skipped", self.config.emit_events)
