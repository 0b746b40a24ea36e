"""The ``genai_normalize`` processor: GenAI spans from any common producer → current semconv.

Which spans are touched is decided with vectorized Arrow kernels (a span needs work only if it
carries a key or an event another producer uses; spans already in the current conventions cost
nothing); only those spans' attributes are read into Python and mapped by
:mod:`lqo.processors.normalize.mapping`. Originals are kept unless ``keep_originals: false``. Then nested records of one LLM call are
marked so that it counts once (:mod:`lqo.processors.normalize.calls`).
"""

from __future__ import annotations

import logging

import numpy as np
from pydantic import Field

from lqo.collector.components import ComponentContext, Factory
from lqo.collector.config import StrictModel
from lqo.collector.model.spanbatch import SpanBatch
from lqo.processors.normalize.calls import NestedCalls
from lqo.processors.normalize.mapping import (
    TRIGGER_EVENTS,
    TRIGGER_KEYS,
    TRIGGER_PREFIXES,
    Span,
    normalize,
)

log = logging.getLogger(__name__)


class NormalizeConfig(StrictModel):
    keep_originals: bool = Field(
        True, description="keep the producer's attributes next to the semconv ones; false drops "
                          "each producer attribute whose meaning was moved (events are always kept)")
    mark_nested_calls: bool = Field(
        True, description="mark (lqo.genai.duplicate_of) an inference span nested in, or around, another's "
                          "record of the same LLM call, so that the GenAI tables and metrics count the call once")


class NormalizeProcessor:
    def __init__(self, config: NormalizeConfig, ctx: ComponentContext | None = None) -> None:
        self.config = config
        self._calls = NestedCalls() if config.mark_nested_calls else None

    def start(self) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def process(self, batch: SpanBatch) -> SpanBatch:
        if not len(batch):
            return batch
        out = self._normalize(batch)
        return self._calls.process(out) if self._calls is not None else out

    def _normalize(self, batch: SpanBatch) -> SpanBatch:
        by_event = batch.rows_with_events(TRIGGER_EVENTS)
        needs = batch.rows_with_keys(TRIGGER_KEYS, TRIGGER_PREFIXES) | by_event
        # Generic keys (session.id, input.value) alone do not make a span a GenAI span.
        needs &= batch.genai_mask() | batch.rows_with_keys(("openinference.span.kind",)) | by_event
        rows = np.nonzero(needs)[0]
        if not len(rows):
            return batch
        attrs = batch.get_attributes(None, rows)
        statuses = batch.table.column("StatusCode").take(rows).to_pylist()
        starts = batch.table.column("Timestamp").take(rows).cast("int64").to_numpy()
        with_events = rows[batch.rows_with_events(TRIGGER_EVENTS | {"exception"})[rows]]
        events = dict(zip(with_events.tolist(), batch.events(with_events), strict=True)) if len(with_events) else {}
        out_rows, updates, removals = [], [], []
        for i, row in enumerate(rows.tolist()):
            result = normalize(Span(attrs[i], events.get(row, []), int(starts[i]), statuses[i] or "Unset"))
            drop = set() if self.config.keep_originals else result.mapped - set(result.updates)
            if result.updates or drop:
                out_rows.append(row)
                updates.append(result.updates)
                removals.append(drop)
        if not out_rows:
            return batch
        out = batch.with_attributes(np.array(out_rows, dtype=np.int64), updates,
                                    None if self.config.keep_originals else removals)
        # Spans that only now carry gen_ai.* keys (OpenInference tool and agent spans) count as GenAI.
        return SpanBatch(out.table, out.approx_bytes)


FACTORY = Factory("genai_normalize", NormalizeConfig, lambda config, ctx: NormalizeProcessor(config, ctx))
