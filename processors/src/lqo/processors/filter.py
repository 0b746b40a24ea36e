"""The ``filter`` processor: which spans go on to the other processors, the store and the metrics.

Zero-code instrumentation (``opentelemetry-instrument``) traces a whole service: web requests,
database calls, health checks. ``keep: genai`` keeps only the GenAI spans (any ``gen_ai.*`` or
``llm.*`` attribute, the test every processor here uses); ``keep: genai_traces`` also keeps the
other spans of their traces that arrive with or after a GenAI span (the request that led to the
call, its tools); ``drop`` rules remove spans by service, name, kind, attribute values or
GenAI-ness. Put it first in the pipeline, so that the rest never pays for what it drops. Dropped
spans are counted in ``lqo_processor_dropped_spans_total{processor="filter", reason="filtered"}``.

``genai_traces`` remembers the last ``trace_memory`` traces that had a kept GenAI span. SDKs end
and export a child before its parent, so the request span that led to an LLM call arrives in
the same export as the call or after it, and is kept; a span of the trace exported before the
first GenAI span (a separate export, seconds earlier) is already gone. Each collector remembers
its own traces: behind a load balancer, send a trace's spans to one collector.

Matching is columnar (Arrow compute, RE2 regular expressions: linear time whatever the pattern
or the input); nothing is done per span in Python.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, field_validator, model_validator

from lqo.collector.components import ComponentContext, Factory
from lqo.collector.config import StrictModel
from lqo.collector.model.otlp import SPAN_KINDS
from lqo.collector.model.spanbatch import SpanBatch


def _check_regex(pattern: str | None) -> str | None:
    if pattern is not None:
        try:
            pc.match_substring_regex(pa.array([""], pa.string()), pattern=_whole(pattern))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(f"not a valid RE2 regular expression: {exc}") from None
    return pattern


def _whole(pattern: str) -> str:
    return f"^(?:{pattern})$"


class DropRule(StrictModel):
    """A span is dropped when every field the rule sets matches it."""

    service_name: str | None = Field(None, description="RE2 regex; the whole service.name must match")
    span_name: str | None = Field(None, description="RE2 regex; the whole span name must match")
    span_kind: Literal[SPAN_KINDS] | None = None  # type: ignore[valid-type]
    attributes: dict[str, str] = Field(default_factory=dict, description="span attributes, exact values")
    genai: bool | None = Field(None, description="true: only GenAI spans; false: only the others")

    _regexes = field_validator("service_name", "span_name")(_check_regex)

    @model_validator(mode="after")
    def _not_empty(self) -> DropRule:
        if (self.service_name is None and self.span_name is None and self.span_kind is None
                and not self.attributes and self.genai is None):
            raise ValueError("a rule with no fields would drop every span; set service_name, span_name, "
                             "span_kind, attributes or genai")
        return self


class FilterConfig(StrictModel):
    keep: Literal["all", "genai", "genai_traces"] = Field(
        "all", description="genai: only GenAI spans; genai_traces: and the spans of their traces")
    trace_memory: int = Field(100_000, ge=0, le=1_000_000,
                              description="genai_traces: how many traces with a GenAI span are remembered "
                                          "(~170 bytes each)")
    drop: list[DropRule] = Field(default_factory=list)


class FilterProcessor:
    def __init__(self, config: FilterConfig, ctx: ComponentContext | None = None) -> None:
        self.config = config
        # genai_traces: trace ids with a kept GenAI span, least recently seen first
        self._traces: OrderedDict[str, None] = OrderedDict()

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def process(self, batch: SpanBatch) -> SpanBatch:
        n = len(batch)
        if not n or (self.config.keep == "all" and not self.config.drop):
            return batch
        drop = np.zeros(n, dtype=bool)
        for rule in self.config.drop:
            drop |= self._matches(batch, rule)
        if self.config.keep == "genai":
            drop |= ~batch.genai_mask()
        elif self.config.keep == "genai_traces":
            drop |= ~self._in_genai_traces(batch, batch.genai_mask() & ~drop)
        if not drop.any():
            return batch
        table = batch.table.filter(pa.array(~drop))
        approx = batch.approx_bytes * table.num_rows // n
        return SpanBatch(table, approx)

    def _in_genai_traces(self, batch: SpanBatch, genai: np.ndarray) -> np.ndarray:
        """Per span: does its trace have a GenAI span, in this batch (``genai``) or remembered?"""
        trace_ids = batch.table.column("TraceId")
        new = pc.unique(trace_ids.filter(pa.array(genai))).to_pylist() if genai.any() else []
        remembered = self._traces
        known = [t for t in pc.unique(trace_ids).to_pylist() if t in remembered]
        for trace_id in (*known, *new):  # seen now: the most recent
            remembered[trace_id] = None
            remembered.move_to_end(trace_id)
        while len(remembered) > self.config.trace_memory:
            remembered.popitem(last=False)
        return _mask(pc.is_in(trace_ids, value_set=pa.array([*known, *new], pa.string())))

    @staticmethod
    def _matches(batch: SpanBatch, rule: DropRule) -> np.ndarray:
        n = len(batch)
        match = np.ones(n, dtype=bool)
        if rule.genai is not None:
            match &= batch.genai_mask() == rule.genai
        for column, pattern in (("ServiceName", rule.service_name), ("SpanName", rule.span_name)):
            if pattern is not None and match.any():
                hit = pc.match_substring_regex(batch.table.column(column), pattern=_whole(pattern))
                match &= _mask(hit)
        if rule.span_kind is not None and match.any():
            match &= _mask(pc.equal(batch.table.column("SpanKind"), rule.span_kind))
        if rule.attributes and match.any():
            values = batch.attribute_columns(rule.attributes, np.arange(n))
            for key, expected in rule.attributes.items():
                match &= _mask(pc.equal(values[key], expected))
        return match


def _mask(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow result as a numpy mask, null (a missing value) as False."""
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


FACTORY = Factory("filter", FilterConfig, lambda config, ctx: FilterProcessor(config, ctx))
