"""The ``pii`` processor: personal data in GenAI message content, found by Presidio and redacted
before any exporter sees the batch.

Scans every attribute that can hold message text (``gen_ai.input.messages``,
``gen_ai.output.messages``, ``gen_ai.system_instructions``, tool-call arguments and results,
and the producers' original content attributes that ``genai_normalize`` keeps), and the
attributes of GenAI events. In JSON values only free text is scanned and rewritten (``role``,
``type``, ids stay), and JSON stays valid.

Actions: ``redact`` (default) replaces a value with ``<ENTITY_TYPE>``; ``hash`` with
``<ENTITY_TYPE:hmac>`` (HMAC-SHA256 under ``hash_key``, stable across spans, so one person's
messages can still be linked); ``detect`` leaves text unchanged. Writes ``lqo.pii.count``,
``lqo.pii.entities`` (types, never values), ``lqo.pii.action``, flags ``pii``.

Spans the sampler sheds have their content dropped (``skipped_content: drop``, the default) —
an unscanned value must not reach storage — and carry ``lqo.pii.skipped=sampled``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
from collections import ChainMap
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Literal

import numpy as np
from pydantic import Field, SecretStr, model_validator

from lqo.collector.components import ComponentContext, Factory
from lqo.collector.model.spanbatch import SpanBatch
from lqo.processors.safety.content import (
    CONTENT_KEYS,
    CONTENT_PREFIXES,
    STRUCTURAL_KEYS,
    rewrite_leaves,
    text_leaves,
)
from lqo.processors.safety.evaluation import (
    CheckConfig,
    Sampler,
    TextCache,
    Verdict,
    write_verdicts,
)
from lqo.processors.safety.folding import Folded, lowered
from lqo.processors.safety.pii_engine import DEFAULT_MODEL, Finding, PiiAnalyzer, resolve

log = logging.getLogger(__name__)

DEFAULT_ENTITIES = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "US_ITIN", "IBAN_CODE",
                    "IP_ADDRESS", "LOCATION", "US_BANK_NUMBER", "US_PASSPORT", "US_DRIVER_LICENSE", "UK_NHS",
                    "CRYPTO", "MEDICAL_LICENSE", "CREDENTIAL")
_MIN_SPREAD_CHARS = 3  # shorter values ("Al", "NY") would match ordinary words elsewhere
# Event attributes that are never message text.
_EVENT_STRUCTURAL = STRUCTURAL_KEYS | {"gen_ai.system", "gen_ai.provider.name", "event.name", "index",
                                       "finish_reason", "gen_ai.evaluation.name", "gen_ai.evaluation.score.label",
                                       "gen_ai.evaluation.score.value", "gen_ai.evaluation.explanation"}
DROPPED = "[lqo: content dropped: pii check skipped]"
_SKIP = frozenset(" \t\r\n")


class PiiConfig(CheckConfig):
    action: Literal["redact", "hash", "detect"] = Field("redact", description=(
        "redact: <TYPE> placeholder; hash: <TYPE:keyed hash>; detect: report only, text unchanged"))
    entities: list[str] = Field(default_factory=lambda: list(DEFAULT_ENTITIES),
                                description="Presidio entity types to find")
    score_threshold: float = Field(0.4, ge=0.0, le=1.0, description="minimum Presidio score of a finding")
    allow_list: list[str] = Field(default_factory=list, description="values never reported (exact match)")
    hash_key: SecretStr | None = Field(None, description="key of the HMAC for action: hash (e.g. ${env:LQO_PII_KEY})")
    spacy_model: str = Field(DEFAULT_MODEL, description="installed spaCy model package name or directory")
    gate_ner: bool = Field(True, description=(
        "run NER only around words that can be part of a name, five tokens either side (and on all-lower-case text)"))
    workers: int = Field(0, ge=0, le=64, description="worker processes for analysis (0: in the pipeline thread)")
    cache_size: int = Field(16384, ge=0, description="distinct texts whose findings are remembered "
                                                        "(and at most 32 M characters of them)")
    scan_events: bool = Field(True, description="also scan and rewrite the attributes of GenAI events")
    skipped_content: Literal["drop", "keep"] = Field("drop", description=(
        "what happens to the content of spans shed by sampling: drop (default) or keep unscanned"))

    @model_validator(mode="after")
    def _hash_needs_key(self) -> PiiConfig:
        if self.action == "hash" and (self.hash_key is None or not self.hash_key.get_secret_value()):
            raise ValueError("action: hash needs hash_key (a secret, e.g. hash_key: ${env:LQO_PII_KEY})")
        if not self.entities:
            raise ValueError("entities is empty: list the Presidio entity types to find")
        return self


_worker_analyzer: PiiAnalyzer | None = None


def _worker_init(entities: list[str], threshold: float, allow: list[str], model: str, gate: bool) -> None:
    global _worker_analyzer
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _worker_analyzer = PiiAnalyzer(entities, threshold, allow, model, gate)  # without torch (UNUSED_MODULES)


def _worker_analyze(texts: list[str]) -> list[list[Finding]]:
    assert _worker_analyzer is not None
    return _worker_analyzer.analyze(texts)


class PiiProcessor:
    check = flag = "pii"

    def __init__(self, config: PiiConfig, ctx: ComponentContext | None = None) -> None:
        self.config = config
        self.sampler = Sampler(config.sampling)
        self._analyzer: PiiAnalyzer | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._cache: TextCache[list[Finding]] = TextCache(config.cache_size, name="pii.findings")
        self._key = config.hash_key.get_secret_value().encode() if config.hash_key else b""
        self._found = ctx.telemetry.counter("lqo_pii_findings", "PII values found in GenAI content, by type.",
                                            ["entity_type"]) if ctx else None

    @property
    def offloads(self) -> bool:
        """With workers the analysis runs in other processes: the pipeline runs the processors
        after this one on the previous batch meanwhile. (Inline, only spaCy's matrix products
        release the GIL; overlapping gained nothing measurable, bench/BENCHMARKS.md.)"""
        return self.config.workers > 0

    def start(self) -> None:
        c = self.config
        args = (c.entities, c.score_threshold, c.allow_list, c.spacy_model, c.gate_ner)
        if c.workers:
            self._pool = ProcessPoolExecutor(c.workers, mp_context=get_context("spawn"),
                                             initializer=_worker_init, initargs=args)
            # Load the model in every worker now, not on the first batch.
            list(self._pool.map(_worker_analyze, [["warm up"]] * c.workers))
        else:
            self._analyzer = PiiAnalyzer(*args)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    # --- analysis, distinct texts once ---

    def _analyze(self, texts: Sequence[str]) -> dict[str, list[Finding]]:
        return self._cache.resolve(texts, self._run, lambda t: [] if len(t) < 2 or _SKIP.issuperset(t) else None)

    def _run(self, texts: list[str]) -> list[list[Finding]]:
        if self._pool is None:
            if self._analyzer is None:
                self.start()
            assert self._analyzer is not None
            return self._analyzer.analyze(texts)
        # Balance by characters, not count: one long document costs as much as many short lines.
        n = self.config.workers
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        shares: list[list[int]] = [[] for _ in range(n)]
        loads = [0] * n
        for i in order:
            w = loads.index(min(loads))
            shares[w].append(i)
            loads[w] += len(texts[i])
        out: list[list[Finding]] = [[] for _ in texts]
        parts = [s for s in shares if s]
        for share, result in zip(parts, self._pool.map(_worker_analyze, [[texts[i] for i in s] for s in parts]),
                                 strict=True):
            for i, findings in zip(share, result, strict=True):
                out[i] = findings
        return out

    # --- rewriting ---

    def _replacement(self, entity_type: str, value: str) -> str:
        if self.config.action == "hash":
            digest = hmac.new(self._key, value.encode(), hashlib.sha256).hexdigest()[:12]
            return f"<{entity_type}:{digest}>"
        return f"<{entity_type}>"

    def _rewrite(self, text: str, findings: Mapping[str, list[Finding]], types: list[str]) -> str:
        hits = findings.get(text) or []
        if not hits:
            return text
        types.extend(f.entity_type for f in hits)
        if self.config.action == "detect":
            return text
        out, last = [], 0
        for f in hits:
            out.append(text[last:f.start])
            out.append(self._replacement(f.entity_type, text[f.start:f.end]))
            last = f.end
        out.append(text[last:])
        return "".join(out)

    def process(self, batch: SpanBatch) -> SpanBatch:
        if not len(batch):
            return batch
        keys = batch.attribute_keys(CONTENT_KEYS, CONTENT_PREFIXES)
        event_names = [n for n in batch.event_names() if n.startswith("gen_ai.") and n != "gen_ai.evaluation.result"]
        with_events = batch.rows_with_events(event_names) if self.config.scan_events and event_names else \
            np.zeros(len(batch), dtype=bool)
        candidates = np.nonzero(batch.rows_with_keys(keys) | with_events)[0] if keys or with_events.any() else \
            np.zeros(0, dtype=np.int64)
        if not len(candidates):
            return batch
        rows, skipped = self.sampler.split(batch, candidates)
        if len(skipped) and self.config.skipped_content == "drop":
            batch = self._drop_content(batch, skipped, keys, skipped[with_events[skipped]], event_names)
        attrs = batch.get_attributes(keys, rows) if keys else [{} for _ in rows]
        event_rows = rows[with_events[rows]]
        events = dict(zip(event_rows.tolist(), batch.events(event_rows), strict=True)) if len(event_rows) else {}
        span_texts, leaves = [], []
        for row, a in zip(rows.tolist(), attrs, strict=True):
            leaves.append({k: text_leaves(v) for k, v in a.items()})
            own = [t for texts in leaves[-1].values() for t in texts]
            own.extend(t for name, _, ea in events.get(row, ()) if name in event_names
                       for k, v in ea.items() if k not in _EVENT_STRUCTURAL for t in text_leaves(v))
            span_texts.append(own)
        findings = self._analyze([t for own in span_texts for t in own])
        verdicts, new_events = [], {}
        for row, a, own, texts_of in zip(rows.tolist(), attrs, span_texts, leaves, strict=True):
            types: list[str] = []
            echoed = spread(own, findings)
            found = ChainMap(echoed, findings) if echoed else findings
            # A value none of whose texts has a finding stays as it is (no JSON round trip).
            rewritten = {k: self._rewrite_value(v, found, types) if any(found.get(t) for t in texts_of[k]) else v
                         for k, v in a.items()}
            if row in events:
                evs = [(name, ts, {k: (self._rewrite_value(v, found, types)
                                       if name in event_names and k not in _EVENT_STRUCTURAL else v)
                                   for k, v in ea.items()}) for name, ts, ea in events[row]]
                if evs != events[row]:
                    new_events[row] = evs
            verdicts.append(self._verdict(a, rewritten, types))
        if new_events:
            ordered = sorted(new_events)
            batch = batch.with_events(np.array(ordered, dtype=np.int64), [new_events[r] for r in ordered])
        return write_verdicts(batch, self.check, self.flag, rows, verdicts, skipped, "lqo.pii.skipped",
                              self.config.emit_events)

    def redact_texts(self, texts: list[str]) -> list[str]:
        """Free text that is not on a span (the explanations of evaluation results producers send,
        ``lqo.collector.evaluations``), rewritten as message text is: by ``action``."""
        findings = self._analyze([t for t in texts if t])
        types: list[str] = []
        return [self._rewrite(t, findings, types) if t else t for t in texts]

    def _rewrite_value(self, value: str, findings: Mapping[str, list[Finding]], types: list[str]) -> str:
        return rewrite_leaves(value, lambda text: self._rewrite(text, findings, types))

    def _verdict(self, original: dict[str, str], rewritten: dict[str, str], types: list[str]) -> Verdict:
        attributes = {k: v for k, v in rewritten.items() if v != original[k]}
        kinds = sorted(set(types))
        if self._found is not None:
            for kind in types:
                self._found.labels(kind).inc()
        action = {"redact": "redacted", "hash": "hashed", "detect": "detected"}[self.config.action]
        attributes["lqo.pii.count"] = str(len(types))
        if types:
            attributes["lqo.pii.entities"] = ",".join(kinds)
            attributes["lqo.pii.action"] = action
        return Verdict(attributes, float(len(types)), "pii" if types else "clean", ",".join(kinds), bool(types))

    def _drop_content(self, batch: SpanBatch, rows: np.ndarray, keys: list[str], event_rows: np.ndarray,
                      event_names: list[str]) -> SpanBatch:
        """Shed spans: every content attribute, and the text of their GenAI events, replaced by
        a marker (an unscanned value must not reach storage)."""
        if keys:
            present = batch.get_attributes(keys, rows)
            batch = batch.with_attributes(rows, [dict.fromkeys(a, DROPPED) for a in present])
        if len(event_rows):
            dropped = [[(name, ts, {k: (DROPPED if name in event_names and k not in _EVENT_STRUCTURAL else v)
                                    for k, v in ea.items()}) for name, ts, ea in evs]
                       for evs in batch.events(event_rows)]
            batch = batch.with_events(event_rows, dropped)
        return batch


def spread(texts: Sequence[str], findings: Mapping[str, list[Finding]]) -> dict[str, list[Finding]]:
    """Findings for every other place a span repeats a value found in one of its texts (as
    whole words, in any case): an answer that echoes a name the model caught only in the
    user's message (text typed in lower case, a name at a sentence start) must not keep it.
    A person's name spreads in parts as well: "Tracy" after "Tracy Sukhorukova"."""
    values: dict[str, Finding] = {}
    for text in texts:
        for f in findings.get(text) or ():
            value = text[f.start:f.end].strip()
            for part in [value, *(value.split() if f.entity_type == "PERSON" else ())]:
                if len(part) >= _MIN_SPREAD_CHARS:
                    values.setdefault(part.lower(), f)
    if not values:
        return {}
    pattern = Folded(r"(?<!\w)(?:" + "|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))
                     + r")(?!\w)")
    out = {}
    for text in set(texts):
        # Most texts hold none of the values: where the text is searched lowered, a substring test first.
        if pattern.fast(text) and not any(v in lowered(text) for v in values):
            continue
        matches = pattern.finditer(text)
        own = findings.get(text) or []
        extra = [Finding(seed.entity_type, m.start(), m.end(), seed.score)
                 for m in matches if (seed := values.get(m.group().lower())) is not None
                 and not any(f.start < m.end() and m.start() < f.end for f in own)]
        if extra:
            out[text] = resolve([*own, *extra])
    return out


def _available() -> bool:
    from importlib.util import find_spec

    return find_spec("presidio_analyzer") is not None and find_spec(DEFAULT_MODEL) is not None


FACTORY = Factory("pii", PiiConfig, lambda config, ctx: PiiProcessor(config, ctx), _available)
