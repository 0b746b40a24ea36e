"""One LLM call recorded by nested spans is counted once.

Instrumentations nest: a framework's model call (LangChain's, under OpenLLMetry or OpenInference)
encloses a provider SDK's record of the same call (openai-v2's), which encloses lqo's at httpx.
Each is an inference span — semconv's ``chat``, ``text_completion``, ``generate_content`` or
``embeddings`` operation, once normalized — the inner one a child of the outer. Stored as they
come, the GenAI tables, ``lqo report``, the metrics and the dashboards would count the call, its
tokens and its cost once per record.

So of an inference span and its inference parent one is marked ``lqo.genai.duplicate_of`` (the
span id of the record that is counted), and whatever counts calls leaves marked spans out; the
spans table keeps every span as it came. The record counted is the innermost, nearest the wire:
an inference span with an inference child is marked, whether the child comes in the same batch
or an earlier one (a child ends, and is usually exported, first). When the parent was passed on
unmarked before its child arrived (an instrumentation that exports its span late: lqo's own
does, by up to 50 ms), the child and whatever it encloses are marked instead, as duplicates of
the parent. Either way each chain of nested records counts once. A parent whose calls are all
passed on before it arrives and who has several (a framework span around retries) counts as
one of them; nesting across a span of another kind (a retry wrapper's) is not seen.

What earlier batches showed is kept for the last ``MEMORY`` to twice as many inference spans
(two maps of ids, ~12 MB at most): minutes at a hundred calls a second, seconds at thousands.
Each collector replica sees only the spans sent to it. Relations within a batch are found with
Arrow's hash joins; the maps are read and written in bulk, and only spans that have a relation
are looked at one by one.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lqo.collector.model.spanbatch import DUPLICATE_OF, SpanBatch
from lqo.collector.telemetry import watch_cache

INFERENCE = pa.array(["chat", "text_completion", "generate_content", "embeddings"])
MEMORY = 16_384  # inference spans remembered per map: one generation (two are kept)


class NestedCalls:
    """Marks the nested records of one call (``process``), remembering recent batches' spans."""

    def __init__(self) -> None:
        # inference spans passed on (trace + span id) → the span id counted for their call
        self._counted = _Memory()
        # trace + parent id of inference spans passed on → the span id counted below that parent,
        # for parents not yet seen
        self._inner = _Memory()

    def process(self, batch: SpanBatch) -> SpanBatch:
        genai = np.nonzero(batch.genai_mask())[0]
        if not len(genai):
            return batch
        cols = batch.attribute_columns(("gen_ai.operation.name", DUPLICATE_OF), genai)
        inference = pc.and_(pc.fill_null(pc.is_in(cols["gen_ai.operation.name"], INFERENCE), False),
                            pc.is_null(cols[DUPLICATE_OF]))  # marked already (an upstream collector)
        rows = genai[inference.to_numpy(zero_copy_only=False)]
        if not len(rows):
            return batch
        table = batch.table
        take = pa.array(rows)
        traces, spans, parents = (table.column(c).take(take).combine_chunks()
                                  for c in ("TraceId", "SpanId", "ParentSpanId"))
        span_keys = pc.binary_join_element_wise(traces, spans, "")
        parent_keys = pc.binary_join_element_wise(traces, parents, "")
        has_parent = _flags(pc.not_equal(parents, ""))
        parent_here = has_parent & _flags(pc.is_in(parent_keys, span_keys))
        child_here = _flags(pc.is_in(span_keys, parent_keys.filter(pa.array(has_parent))))
        tops = has_parent & ~parent_here  # with a parent elsewhere: earlier, later, or never an inference span
        # ... of which those whose parent is in the batch (not an inference span) will not see it
        # come later. By span id alone (random 64 bits): this only spares the memory an entry.
        awaited = tops & ~_flags(pc.is_in(parents, table.column("SpanId").combine_chunks()))
        span_key_list, parent_key_list = span_keys.to_pylist(), parent_keys.to_pylist()
        # what earlier batches tell of these spans: usually nothing (set intersections, in C)
        outer = self._counted.found(parent_keys.filter(pa.array(tops)).to_pylist())  # parents passed on
        inner = self._inner.found(span_key_list)  # children passed on
        related = parent_here | child_here
        if outer:
            related |= tops & _flags(pc.is_in(parent_keys, pa.array(list(outer), pa.string())))
        if inner:
            related |= _flags(pc.is_in(span_keys, pa.array(list(inner), pa.string())))
        related_rows = np.nonzero(related)[0]
        span_ids = spans.to_pylist()
        marks = self._marks(related_rows, span_ids, span_key_list, parent_key_list, parent_here, outer, inner) \
            if len(related_rows) else {}
        counted = span_ids
        if marks:
            counted = list(span_ids)
            for i, mark in marks.items():
                counted[i] = mark
        self._counted.remember(zip(span_key_list, counted, strict=True))
        self._inner.remember((parent_key_list[i], counted[i]) for i in np.nonzero(awaited)[0].tolist())
        if not marks:
            return batch
        order = sorted(marks)
        return batch.with_attributes(rows[order], [{DUPLICATE_OF: marks[i]} for i in order])

    @staticmethod
    def _marks(related: np.ndarray, ids: list[str], span_keys: list[str], parent_keys: list[str],
               parent_here: np.ndarray, outer: dict[str, str], inner: dict[str, str]) -> dict[int, str]:
        """Index (into the batch's inference spans) → the span id of the record counted instead;
        for ``related``, the spans nested in this batch or related to earlier ones."""
        at = {span_keys[i]: i for i in related.tolist()}
        children: dict[int, list[int]] = {}
        tops = []
        for i in related.tolist():
            if parent_here[i]:
                j = at.get(parent_keys[i])
                if j is not None and j != i:
                    children.setdefault(j, []).append(i)
            else:
                tops.append((i, outer.get(parent_keys[i])))
        marks: dict[int, str] = {}
        for top, outer_id in tops:
            for i in _bottom_up(top, children):
                if outer_id is not None:  # its parent went on before it: this chain is that call
                    counted = outer_id
                elif kids := children.get(i):
                    counted = marks.get(kids[0], ids[kids[0]])
                else:  # a child that went on earlier, or none: this is the call
                    counted = inner.get(span_keys[i]) or ids[i]
                if counted != ids[i]:
                    marks[i] = counted
        return marks


def _flags(values: pa.Array) -> np.ndarray:
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False)


class _Memory:
    """The newest ``MEMORY`` to ``2 * MEMORY`` entries: two generations of a dict, the older
    dropped whole when the newer fills (no entry is copied)."""

    def __init__(self) -> None:
        self._new: dict[str, str] = {}
        self._old: dict[str, str] = {}
        watch_cache(self, "genai_normalize.calls", lambda m: (len(m), 2 * MEMORY))

    def found(self, keys: list[str]) -> dict[str, str]:
        """Those of ``keys`` remembered → their values (the newest)."""
        wanted = set(keys)
        # a keys view & a set walks the smaller of the two (set.intersection(dict) walks the dict)
        hits = {k: self._old[k] for k in self._old.keys() & wanted}
        hits.update((k, self._new[k]) for k in self._new.keys() & wanted)
        return hits

    def remember(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._new.update(pairs)
        if len(self._new) >= MEMORY:
            self._old, self._new = self._new, {}

    def __len__(self) -> int:
        return len(self._new) + len(self._old)


def _bottom_up(top: int, children: dict[int, list[int]]) -> list[int]:
    """``top`` and the inference spans below it in this batch, each after its children."""
    out, todo = [], [top]
    while todo:
        i = todo.pop()
        out.append(i)
        todo.extend(children.get(i, ()))
    return out[::-1]
