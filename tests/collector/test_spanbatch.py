"""SpanBatch: concat/slice keep byte accounting; GenAI spans are identified once."""

from __future__ import annotations

from workload import make_request

from lqo.collector.model.otlp import decode_protobuf
from lqo.collector.model.spanbatch import SpanBatch


def _batch(n: int, seed: int) -> SpanBatch:
    return decode_protobuf(make_request(n, seed=seed).SerializeToString()).batch


def test_genai_mask_marks_exactly_the_genai_spans():
    batch = SpanBatch.concat([_batch(6, 1), _batch(5, 2)])
    names = batch.table.column("SpanName").to_pylist()
    mask = batch.genai_mask()
    assert mask.tolist() == [name.startswith("chat ") for name in names]
    assert mask.sum() == 6  # make_request alternates GenAI and HTTP spans, GenAI first
    assert batch.genai_mask() is mask  # computed once
    assert SpanBatch.empty().genai_mask().tolist() == []
    sliced = batch.slice(3, 5)
    assert sliced.genai_mask().tolist() == mask[3:8].tolist()


def test_concat_and_slice_keep_rows_and_bytes():
    a, b = _batch(4, 1), _batch(6, 2)
    both = SpanBatch.concat([a, SpanBatch.empty(), b])
    assert len(both) == 10 and both.approx_bytes == a.approx_bytes + b.approx_bytes
    part = both.slice(4, 6)
    assert part.table.column("SpanId").to_pylist() == b.table.column("SpanId").to_pylist()
    assert 0 < part.approx_bytes <= both.approx_bytes
