"""The ``filter`` processor: which spans go on to the other processors, the store and the metrics.

Zero-code instrumentation (``opentelemetry-instrument``) traces a whole service: web requests,
database calls, health checks. ``keep: genai`` keeps only the GenAI spans (any ``gen_ai.*`` or
``llm.*`` attribute, the test every processor here uses); ``drop`` rules remove spans by service,
name, kind, attribute values or GenAI-ness. Put it first in the pipeline, so that the rest never
pays for what it drops. Dropped spans are counted in
``lqo_processor_dropped_spans_total{processor="filter", reason="filtered"}``.

Matching is columnar (Arrow compute, RE2 regular expressions: linear time whatever the pattern
or the input); nothing is done per span in Python.
"""

from __future__ import annotations

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
    keep: Literal["all", "genai"] = Field("all", description="genai: drop every span that is not a GenAI span")
    drop: list[DropRule] = Field(default_factory=list)


class FilterProcessor:
    def __init__(self, config: FilterConfig, ctx: ComponentContext | None = None) -> None:
        self.config = config

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def process(self, batch: SpanBatch) -> SpanBatch:
        n = len(batch)
        if not n or (self.config.keep == "all" and not self.config.drop):
            return batch
        drop = ~batch.genai_mask() if self.config.keep == "genai" else np.zeros(n, dtype=bool)
        for rule in self.config.drop:
            drop |= self._matches(batch, rule)
        if not drop.any():
            return batch
        table = batch.table.filter(pa.array(~drop))
        approx = batch.approx_bytes * table.num_rows // n
        return SpanBatch(table, approx)

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
