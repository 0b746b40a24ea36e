"""The ``prometheus`` exporter: GenAI metrics derived from the processed spans, served on the
collector's ``/metrics`` (service.telemetry.metrics.address, 8888 by default).

Producers that send only traces still get metrics, and every producer's spans are measured the
same way (after ``genai_normalize``). Names follow the OTel → Prometheus rules (DESIGN.md):

* ``gen_ai_client_token_usage`` (histogram, ``gen_ai_token_type`` = input | output)
* ``gen_ai_client_operation_duration_seconds`` (histogram, plus ``error_type``)
* ``gen_ai_client_operation_time_to_first_chunk_seconds`` (histogram; streamed calls)
* ``lqo_cost_usd_total`` (counter, from ``lqo.cost.usd``)
* ``lqo_safety_flags_total{check}`` (counter, from ``lqo.flags``)
* ``lqo_evaluation_score{check}`` (histogram of ``lqo.<check>.score``)
* ``lqo_evaluation_results_total{<common labels>, gen_ai_evaluation_name, gen_ai_evaluation_score_label}``
  and ``lqo_evaluation_result_score{<common labels>, gen_ai_evaluation_name}`` (a summary: sum and
  count): the evaluation results producers send as log records (users' feedback, evaluators'
  scores; ``lqo.collector.evaluations``), counted as they arrive, under their call's labels: the
  exporter keeps the latest ``RECENT_CALLS`` calls' span and response ids (Arrow arrays per
  batch, looked up only when results come), from the first result a producer sends on (before
  that, it reads nothing for them); a result whose call is older, or came before the first
  result, has only its service (the others empty). An evaluation's name and
  label are label values only if they look like categories (a letter, then at most 63 letters,
  digits or ``_.:-``): else ``other``, so a user's words put there never become a label.

Common labels: ``service_name``, ``gen_ai_provider_name``, ``gen_ai_request_model``,
``gen_ai_operation_name``. Label values come only from those identifying attributes, never
from message content, and each label keeps at most ``max_label_values`` distinct values: later
ones are reported as ``other`` (counted in ``lqo_prometheus_label_overflow_total``).

Aggregation is per batch with numpy (bucket counts by ``searchsorted``), not per span, and
the exposition is produced on scrape by a custom collector under one lock.

Exemplars: every histogram bucket carries the trace id of the latest span counted in it
(``{trace_id="…"}``, the span's value and end time), so a latency spike, a token outlier or a
high toxicity score in Grafana opens the trace that caused it. They are exposed in the
OpenMetrics format, which Prometheus asks for by default (and stores with
``--enable-feature=exemplar-storage``); the classic text format carries none.
"""

from __future__ import annotations

import collections
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prometheus_client import Counter
from prometheus_client.core import (
    CounterMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.samples import Exemplar
from pydantic import Field

from lqo.collector.components import ComponentContext, ExportResult, Factory, register
from lqo.collector.config import StrictModel
from lqo.collector.model.genai_events import Evaluation
from lqo.collector.model.spanbatch import DUPLICATE_OF, FLAGS, NOT_CALLS, SpanBatch, group_rows

# Semconv's advisory bucket boundaries (gen-ai-metrics.md); the instrumentation uses the same.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
SCORE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

COMMON_LABELS = ("service_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_operation_name")
EVALUATION_LABELS = ("service_name", "gen_ai_evaluation_name", "gen_ai_evaluation_score_label")
# An evaluation result's series: its call's labels (empty where the call was not among the
# latest RECENT_CALLS), and the evaluation's name and label.
RESULT_LABELS = (*COMMON_LABELS, "gen_ai_evaluation_name", "gen_ai_evaluation_score_label")
LABEL_ATTRIBUTES = ("gen_ai.provider.name", "gen_ai.request.model", "gen_ai.operation.name")
CHECKS = {"toxicity": "lqo.toxicity.score", "hallucination": "lqo.hallucination.score",
          "prompt_injection": "lqo.injection.score"}
INPUT, OUTPUT = "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"
TTFC, COST, ERROR = "gen_ai.response.time_to_first_chunk", "lqo.cost.usd", "error.type"
_NOT_CALLS = pa.array(NOT_CALLS)  # agents' and tools' spans: not calls to a model
RESPONSE_ID = "gen_ai.response.id"
READ_KEYS = (*LABEL_ATTRIBUTES, INPUT, OUTPUT, TTFC, COST, FLAGS, ERROR, DUPLICATE_OF, *CHECKS.values())
# The latest calls' span and response ids with their label sets, so that an evaluation result,
# which names its call by one of them, is counted under the call's service, provider and model.
RECENT_CALLS = 100_000
MATCH_GRACE_S = 10.0  # how long a result whose call is not known yet waits for it
MAX_UNMATCHED = 10_000
OVERFLOW = "other"
MAX_VALUE_LENGTH = 128
# An evaluation's name and label become label values only when they look like categories
# (thumbs_up, relevance, score:5): a producer that puts a user's words there (an e-mail address,
# a phone number, a sentence) must not make them metric labels.
_CATEGORY = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")


class PrometheusExporterConfig(StrictModel):
    max_label_values: int = Field(
        200, ge=1, description="distinct values kept per label; later values are reported as 'other'")
    label_limits: dict[str, int] = Field(
        default_factory=dict, description="per-label override of max_label_values, e.g. {gen_ai_request_model: 50}")


class LabelLimiter:
    """Caps the distinct values of one label; a value seen once stays itself."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: str) -> tuple[str, bool]:
        if value in self.seen:
            return value, False
        if len(self.seen) >= self.limit or len(value) > MAX_VALUE_LENGTH or not value.isprintable():
            return OVERFLOW, True
        self.seen.add(value)
        return value, False


@dataclass(frozen=True)
class Spans:
    """What an exemplar names, per observed value: the span's trace id and end time (seconds)."""

    trace_ids: pa.Array
    ends: np.ndarray

    def subset(self, mask: np.ndarray) -> Spans:
        return Spans(self.trace_ids.filter(pa.array(mask)), self.ends[mask])


@dataclass
class Histogram:
    bounds: np.ndarray
    counts: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict)
    sums: dict[tuple[str, ...], float] = field(default_factory=dict)
    # per label set and bucket: the latest span counted there
    exemplars: dict[tuple[str, ...], list[Exemplar | None]] = field(default_factory=dict)

    def observe(self, keys: list[tuple[str, ...]], group: np.ndarray, values: np.ndarray,
                spans: Spans | None = None) -> None:
        """Add ``values[i]`` under label set ``keys[group[i]]`` (one bincount for all groups);
        with ``spans``, each bucket hit keeps the last of its spans as its exemplar."""
        if not len(values):
            return
        width = len(self.bounds) + 1
        slots = np.searchsorted(self.bounds, values, side="left")  # value <= bound → that bucket
        cells = group * width + slots
        counts = np.bincount(cells, minlength=len(keys) * width).reshape(len(keys), width)
        sums = np.bincount(group, weights=values, minlength=len(keys))
        for g in np.unique(group).tolist():
            key = keys[g]
            if key not in self.counts:
                self.counts[key] = np.zeros(width, dtype=np.int64)
                self.sums[key] = 0.0
                self.exemplars[key] = [None] * width
            self.counts[key] += counts[g]
            self.sums[key] += float(sums[g])
        if spans is not None:
            # the last value of the batch in each (label set, bucket) cell: one Python step a cell
            distinct, first_from_end = np.unique(cells[::-1], return_index=True)
            last = len(cells) - 1 - first_from_end
            trace_ids = spans.trace_ids.take(pa.array(last)).to_pylist()
            for cell, i, trace_id in zip(distinct.tolist(), last.tolist(), trace_ids, strict=True):
                if trace_id:
                    g, slot = divmod(cell, width)
                    end = float(spans.ends[i])
                    self.exemplars[keys[g]][slot] = Exemplar(
                        {"trace_id": trace_id}, float(values[i]), end if np.isfinite(end) else None)

    def family(self, name: str, doc: str, labels: tuple[str, ...]) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, doc, labels=list(labels))
        edges = [_le(b) for b in self.bounds] + ["+Inf"]
        for key, counts in sorted(self.counts.items()):
            cumulative = np.cumsum(counts).tolist()
            buckets = [(edge, n, ex) if ex is not None else (edge, n)
                       for edge, n, ex in zip(edges, cumulative, self.exemplars[key], strict=True)]
            family.add_metric(list(key), buckets, self.sums[key])
        return family


def _le(bound: float) -> str:
    return repr(float(bound))


class GenAIMetrics:
    """The derived metrics' state and their exposition (a prometheus_client custom collector)."""

    def __init__(self, config: PrometheusExporterConfig, overflow: Counter) -> None:
        self._lock = threading.Lock()
        self._limiters = {
            label: LabelLimiter(config.label_limits.get(label, config.max_label_values))
            for label in (*COMMON_LABELS, *EVALUATION_LABELS[1:])
        }
        self._overflow = overflow
        self.tokens = Histogram(np.array(TOKEN_BUCKETS, dtype=float))
        self.duration = Histogram(np.array(DURATION_BUCKETS))
        self.ttfc = Histogram(np.array(DURATION_BUCKETS))
        self.scores = Histogram(np.array(SCORE_BUCKETS))
        self.cost: dict[tuple[str, ...], float] = {}
        self.flags: dict[tuple[str, ...], int] = {}
        # evaluation results: count (and the latest one naming a span, as exemplar) per label set;
        # score count and sum per service and evaluation
        self.results: dict[tuple[str, ...], list] = {}
        self.result_scores: dict[tuple[str, ...], list] = {}
        # (span ids, response ids, label sets, each call's label set), newest last
        self._recent: collections.deque[tuple[pa.Array, pa.Array, list[tuple[str, ...]], np.ndarray]] = \
            collections.deque()
        self._recent_rows = 0
        self._unmatched: list[tuple[float, Evaluation]] = []  # (first seen, result) waiting for its call
        self._evaluations_seen = False  # from the first evaluation result on, calls are remembered

    def _capped(self, columns: list[pa.Array], labels: tuple[str, ...]) -> list[pa.Array]:
        """Label columns (one value per span) with each distinct value passed once through its
        label's limiter; spans whose value overflowed are counted."""
        out = []
        for column, label in zip(columns, labels, strict=True):
            encoded = pc.fill_null(column, "").dictionary_encode()
            values, overflowed = [], []
            for value in encoded.dictionary.to_pylist():
                capped, over = self._limiters[label](value)
                values.append(capped)
                overflowed.append(over)
            if any(overflowed):
                index = encoded.indices.to_numpy(zero_copy_only=False)
                hits = np.bincount(index, minlength=len(values))[np.array(overflowed)]
                self._overflow.labels(label).inc(int(hits.sum()))
            out.append(pa.array(values, pa.string()).take(encoded.indices))
        return out

    def record(self, batch: SpanBatch) -> None:
        rows = np.nonzero(batch.genai_mask())[0]
        if not len(rows):
            return
        # calls are remembered for evaluation results only once a producer has sent some: no cost otherwise
        remember = self._evaluations_seen
        cols = batch.attribute_columns((*READ_KEYS, RESPONSE_ID) if remember else READ_KEYS, rows)
        operation = cols["gen_ai.operation.name"]
        calls = np.nonzero((_valid(operation) | _valid(cols["gen_ai.provider.name"]))
                           & ~pc.fill_null(pc.is_in(operation, _NOT_CALLS), False).to_numpy(zero_copy_only=False)
                           & ~_valid(cols[DUPLICATE_OF]))[0]
        if not len(calls):
            return  # no call behind these spans (agents, tools, some gen_ai.* key), or counted by another span
        take = pa.array(calls)
        cols = {k: v.take(take) for k, v in cols.items()}
        label_columns = [batch.table.column("ServiceName").take(pa.array(rows[calls])).combine_chunks(),
                         *(cols[k] for k in LABEL_ATTRIBUTES)]
        span_rows = pa.array(rows[calls])
        durations = batch.table.column("Duration").take(span_rows).to_numpy().astype(np.float64) / 1e9
        starts = pc.cast(batch.table.column("Timestamp").take(span_rows), pa.int64()).to_numpy()
        spans = Spans(batch.table.column("TraceId").take(span_rows).combine_chunks(), starts / 1e9 + durations)
        errors = pa.array([_error_type(v) for v in cols[ERROR].to_pylist()], pa.string()) \
            if cols[ERROR].null_count < len(calls) else pa.array([""] * len(calls), pa.string())
        with self._lock:
            keys, group = group_rows(self._capped(label_columns, COMMON_LABELS))
            if remember:
                self._remember(batch.table.column("SpanId").take(span_rows).combine_chunks(), cols[RESPONSE_ID],
                               keys, group)
            if self._unmatched:  # results that came before these calls
                self._count_results([], time.monotonic())
            pairs, dgroup = group_rows([pa.array(group), errors])  # the duration adds error_type
            self.duration.observe([(*keys[g], err) for g, err in pairs], dgroup, durations, spans)
            for kind, attr in (("input", INPUT), ("output", OUTPUT)):
                values, ok = _numbers(cols[attr])
                self.tokens.observe([(*k, kind) for k in keys], group[ok], values[ok], spans.subset(ok))
            values, ok = _numbers(cols[TTFC])
            self.ttfc.observe(keys, group[ok], values[ok], spans.subset(ok))
            values, ok = _numbers(cols[COST])
            if ok.any():
                sums = np.bincount(group[ok], weights=values[ok], minlength=len(keys))
                for g in np.unique(group[ok]).tolist():
                    self.cost[keys[g]] = self.cost.get(keys[g], 0.0) + float(sums[g])
            for check, attr in CHECKS.items():
                values, ok = _numbers(cols[attr])
                self.scores.observe([(*k, check) for k in keys], group[ok], values[ok], spans.subset(ok))
            flagged = np.nonzero(_valid(cols[FLAGS]))[0]
            for i, value in zip(flagged.tolist(), cols[FLAGS].take(pa.array(flagged)).to_pylist(), strict=True):
                for check in _flags(value):
                    key = (*keys[group[i]], check)
                    self.flags[key] = self.flags.get(key, 0) + 1

    def _remember(self, span_ids: pa.Array, response_ids: pa.Array, keys: list[tuple[str, ...]],
                  group: np.ndarray) -> None:  # under the lock
        self._recent.append((span_ids, pc.fill_null(response_ids, ""), keys, group))
        self._recent_rows += len(group)
        while self._recent_rows > RECENT_CALLS and len(self._recent) > 1:
            self._recent_rows -= len(self._recent.popleft()[3])

    def _calls_of(self, rows: list[Evaluation]) -> list[tuple[str, ...] | None]:  # under the lock
        """Each result's call's label set, where the call is among the latest (newest first):
        by the response id a result names, else by its span."""
        found: list[tuple[str, ...] | None] = [None] * len(rows)
        by_response = [i for i, r in enumerate(rows) if r.response_id]
        by_span = [i for i, r in enumerate(rows) if not r.response_id and r.span_id]
        # the ids asked for, built once: (rows, their ids, which column of a batch holds them)
        asked = [(wanted, pa.array(ids, pa.string()), column) for wanted, ids, column in (
            (by_response, [rows[i].response_id for i in by_response], 1),
            (by_span, [rows[i].span_id for i in by_span], 0)) if wanted]
        left = len(by_response) + len(by_span)
        for entry in reversed(self._recent):
            keys, group = entry[2], entry[3]
            for wanted, ids, column in asked:
                for i, hit in zip(wanted, pc.index_in(ids, value_set=entry[column]).to_pylist(), strict=True):
                    if hit is not None and found[i] is None:
                        found[i] = keys[group[hit]]
                        left -= 1
            if not left:
                break
        return found

    def record_evaluations(self, rows: list[Evaluation]) -> None:
        """Evaluation results as they arrive (``EvaluationWriter``), under their call's labels
        where it is among the latest calls; label values capped as the spans' are. A result may
        come before its call went through the pipeline (an evaluator that judges at once): one
        whose call is not known yet waits up to ``MATCH_GRACE_S`` (retried with each batch of
        spans, and each round of the writer, which calls this with no rows), then is counted
        without the call's labels."""
        with self._lock:
            self._count_results(rows, time.monotonic())

    def _count_results(self, rows: list[Evaluation], now: float) -> None:  # under the lock
        if rows:
            self._evaluations_seen = True
        waited, self._unmatched = self._unmatched, []
        pending = [row for _, row in waited] + list(rows)
        firsts = [first for first, _ in waited] + [now] * len(rows)
        if not pending:
            return
        for row, first, call in zip(pending, firsts, self._calls_of(pending), strict=True):
            if (call is None and (row.response_id or row.span_id) and now - first < MATCH_GRACE_S
                    and len(self._unmatched) < MAX_UNMATCHED):
                self._unmatched.append((first, row))
                continue
            labels = []
            for label, value in zip(EVALUATION_LABELS, (row.service, row.name, row.label), strict=True):
                if label != "service_name" and value and not _CATEGORY.fullmatch(value):
                    capped, over = OVERFLOW, True
                else:
                    capped, over = self._limiters[label](value)
                if over:
                    self._overflow.labels(label).inc()
                labels.append(capped)
            key = (*(call or (labels[0], "", "", "")), labels[1], labels[2])
            entry = self.results.setdefault(key, [0, None])
            entry[0] += 1
            if row.trace_id:
                entry[1] = Exemplar({"trace_id": row.trace_id}, 1.0, row.time_ns / 1e9)
            if row.score is not None:
                scored = self.result_scores.setdefault(key[:-1], [0, 0.0])
                scored[0] += 1
                scored[1] += row.score

    def describe(self) -> list[Metric]:
        return []  # families are known only once data arrives; no auto-describe needed

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            yield self.tokens.family("gen_ai_client_token_usage", "Tokens used per GenAI operation.",
                                     (*COMMON_LABELS, "gen_ai_token_type"))
            yield self.duration.family("gen_ai_client_operation_duration_seconds",
                                       "Duration of GenAI operations (span duration).", (*COMMON_LABELS, "error_type"))
            yield self.ttfc.family("gen_ai_client_operation_time_to_first_chunk_seconds",
                                   "Time to the first streamed chunk of GenAI operations.", COMMON_LABELS)
            cost = CounterMetricFamily("lqo_cost_usd", "USD cost of GenAI calls (lqo.cost.usd).",
                                       labels=list(COMMON_LABELS))
            for key, value in sorted(self.cost.items()):
                cost.add_metric(list(key), value)
            yield cost
            flags = CounterMetricFamily("lqo_safety_flags", "GenAI spans flagged by a safety check (lqo.flags).",
                                        labels=[*COMMON_LABELS, "check"])
            for key, n in sorted(self.flags.items()):
                flags.add_metric(list(key), n)
            yield flags
            yield self.scores.family("lqo_evaluation_score", "Scores of the quality and safety checks (0..1).",
                                     (*COMMON_LABELS, "check"))
            results = CounterMetricFamily(
                "lqo_evaluation_results", "Evaluation results producers sent (gen_ai.evaluation.result: users' "
                "feedback, evaluators' scores), by their call's labels, evaluation and label.",
                labels=list(RESULT_LABELS))
            for key, (n, exemplar) in sorted(self.results.items()):
                results.add_metric(list(key), n, exemplar=exemplar)
            yield results
            scores = SummaryMetricFamily(
                "lqo_evaluation_result_score", "Scores of the evaluation results producers sent (sum and count: "
                "rate(sum) / rate(count) is the mean).", labels=list(RESULT_LABELS[:-1]))
            for key, (n, total) in sorted(self.result_scores.items()):
                scores.add_metric(list(key), n, total)
            yield scores


def _valid(values: pa.Array) -> np.ndarray:
    return values.is_valid().to_numpy(zero_copy_only=False)


def _numbers(values: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(float values, mask of usable ones): null, unparsable, negative or non-finite are not."""
    try:
        numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        numbers = np.array([_float(v) for v in values.to_pylist()], dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(numbers) & (numbers >= 0)
    return numbers, ok


def _float(value: str | None) -> float:
    try:
        return float(value) if value is not None else np.nan
    except ValueError:
        return np.nan


def _error_type(value: str | None) -> str:
    # Exception class names and HTTP status codes; anything else is folded so it cannot explode.
    if not value:
        return ""
    return value if len(value) <= 64 and value.replace(".", "").replace("_", "").isalnum() else "_OTHER"


def _flags(value: str | None) -> list[str]:
    if not value:
        return []
    parsed = None
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
    items = parsed if isinstance(parsed, list) else value.split(",")
    known = {"pii", "toxicity", "hallucination", "prompt_injection"}
    return sorted({str(x).strip() for x in items} & known)


class PrometheusExporter:
    def __init__(self, config: PrometheusExporterConfig, ctx: ComponentContext) -> None:
        self._registry = ctx.telemetry.registry
        overflow = ctx.telemetry.counter(
            "lqo_prometheus_label_overflow", "Label values reported as 'other' (cardinality cap).", ["label"])
        self.metrics = GenAIMetrics(config, overflow)
        self._registered = False

    def start(self) -> None:
        self._registry.register(self.metrics)
        self._registered = True

    def export(self, batch: SpanBatch) -> ExportResult:
        self.metrics.record(batch)
        return ExportResult.ok()

    def record_evaluations(self, rows: list[Evaluation]) -> None:
        self.metrics.record_evaluations(rows)

    def shutdown(self) -> None:
        pass  # the admin endpoint stops with the collector; the last scrape still sees the totals


FACTORY = register("exporters", Factory(
    "prometheus", PrometheusExporterConfig, lambda config, ctx: PrometheusExporter(config, ctx)))
