"""The collector's one in-memory representation of spans: a columnar Arrow table.

OTLP is decoded once into this shape and every later stage (processors, exporters)
works on columns. The column set is the storage schema of ``otel_traces`` (the
OpenTelemetry Collector contrib ClickHouse exporter's), so the ClickHouse exporter
inserts the table as it is, with no per-span Python work after decoding.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ATTR_MAP = pa.map_(pa.string(), pa.string())
TIMESTAMP_NS = pa.timestamp("ns")

SCHEMA = pa.schema(
    [
        ("Timestamp", TIMESTAMP_NS),
        ("TraceId", pa.string()),
        ("SpanId", pa.string()),
        ("ParentSpanId", pa.string()),
        ("TraceState", pa.string()),
        ("SpanName", pa.string()),
        ("SpanKind", pa.string()),
        ("ServiceName", pa.string()),
        ("ResourceAttributes", ATTR_MAP),
        ("ScopeName", pa.string()),
        ("ScopeVersion", pa.string()),
        ("SpanAttributes", ATTR_MAP),
        ("Duration", pa.uint64()),
        ("StatusCode", pa.string()),
        ("StatusMessage", pa.string()),
        ("Events.Timestamp", pa.list_(TIMESTAMP_NS)),
        ("Events.Name", pa.list_(pa.string())),
        ("Events.Attributes", pa.list_(ATTR_MAP)),
        ("Links.TraceId", pa.list_(pa.string())),
        ("Links.SpanId", pa.list_(pa.string())),
        ("Links.TraceState", pa.list_(pa.string())),
        ("Links.Attributes", pa.list_(ATTR_MAP)),
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)

# Attribute-key prefixes that mark a span as a GenAI (LLM) span, across the current
# semantic conventions and the older/third-party shapes later processors normalize.
GENAI_KEY_PREFIXES: tuple[str, ...] = ("gen_ai.", "llm.")


@dataclass
class SpanBatch:
    """A batch of spans as one Arrow table with :data:`SCHEMA`.

    ``approx_bytes`` is what the batch weighed on the wire after decompression; queues
    and exporters use it for byte-bounded batching without re-measuring Arrow buffers.
    """

    table: pa.Table
    approx_bytes: int = 0
    _genai_mask: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.table.num_rows

    @classmethod
    def empty(cls) -> SpanBatch:
        return cls(SCHEMA.empty_table(), 0)

    @classmethod
    def concat(cls, batches: Iterable[SpanBatch]) -> SpanBatch:
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        if len(batches) == 1:
            return batches[0]
        table = pa.concat_tables([b.table for b in batches])
        return cls(table, sum(b.approx_bytes for b in batches))

    def slice(self, offset: int, length: int) -> SpanBatch:
        n = len(self)
        part = self.table.slice(offset, length)
        share = self.approx_bytes * part.num_rows // n if n else 0
        return SpanBatch(part, share)

    def genai_mask(self) -> np.ndarray:
        """Per span: does it carry any GenAI attribute key? Computed once per batch, so
        every processor that only looks at GenAI spans shares the same answer."""
        if self._genai_mask is None:
            mask = np.zeros(len(self), dtype=bool)
            if len(self):
                # MapArray.keys ignores slicing and offsets are absolute, so cut the key
                # range by hand. (List kernels such as list_parent_indices abort the
                # process on map arrays in pyarrow 26: never call them on map columns.)
                attrs = self.table.column("SpanAttributes").combine_chunks()
                offsets = attrs.offsets.to_numpy()
                keys = attrs.keys.slice(offsets[0], offsets[-1] - offsets[0])
                hit = pc.starts_with(keys, GENAI_KEY_PREFIXES[0])
                for prefix in GENAI_KEY_PREFIXES[1:]:
                    hit = pc.or_(hit, pc.starts_with(keys, prefix))
                owners = np.repeat(np.arange(len(self)), np.diff(offsets))
                mask[owners[hit.to_numpy(zero_copy_only=False)]] = True
            self._genai_mask = mask
        return self._genai_mask
