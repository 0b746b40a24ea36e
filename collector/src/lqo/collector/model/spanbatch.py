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

try:  # the optional C extension (built with the collector; without it, Arrow kernels do the same)
    from lqo.collector.model._otlp_native import entry_index as _native_entry_index
    from lqo.collector.model._otlp_native import key_codes as _native_key_codes
    from lqo.collector.model._otlp_native import merge_map as _merge_map
    from lqo.collector.model._otlp_native import take_strings as _native_take
except ImportError:  # pragma: no cover - no C compiler at install time
    _merge_map = _native_key_codes = _native_take = _native_entry_index = None

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
# GenAI operations that are not calls to a model: an agent's run, its creation, a tool's run.
# Their spans hold the structure around calls, and the usage an agent's span may carry
# (semconv allows it) is its calls' again: what counts calls, tokens, latency and spend (the
# metrics, ``lqo report``, the dashboards) leaves them out; the GenAI table keeps their rows.
NOT_CALLS: tuple[str, ...] = ("invoke_agent", "create_agent", "execute_tool")
# Set by genai_normalize on a span that records an LLM call another span records too, to that
# span's id: the call is counted by that one (lqo.processors.normalize.calls).
DUPLICATE_OF = "lqo.genai.duplicate_of"
# What the safety checks write and the exporters and /v1/evaluate read: the tripped checks (a
# JSON list) and the semconv event each check adds per span it scored.
FLAGS = "lqo.flags"
EVALUATION_EVENT = "gen_ai.evaluation.result"


def _chunks(values: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    return list(values.chunks) if isinstance(values, pa.ChunkedArray) else [values]


def _take_sorted(values: pa.ChunkedArray, indices: np.ndarray) -> pa.Array:
    """``values.take(indices)`` for ascending indices, chunk by chunk: a ChunkedArray's own
    take concatenates every chunk first (a copy of all the message text) for string types."""
    if values.num_chunks == 1:
        return values.chunk(0).take(pa.array(indices))
    ends = np.cumsum([len(c) for c in values.chunks])
    cuts = np.searchsorted(indices, ends, side="left")
    parts, first, chunk_start = [], 0, 0
    for chunk, cut, chunk_end in zip(values.chunks, cuts.tolist(), ends.tolist(), strict=True):
        if cut > first:
            parts.append(chunk.take(pa.array(indices[first:cut] - chunk_start)))
        first, chunk_start = cut, chunk_end
    return pa.concat_arrays(parts) if parts else pa.array([], values.type)


# Use the C helpers (key codes, attribute reads, map rebuild) when built (tests switch them off to compare).
NATIVE_MERGE = True
_NO_OFFSETS = pa.py_buffer(np.zeros(1, dtype=np.int32).tobytes())


def _string_view(values: pa.Array) -> tuple[pa.Buffer, pa.Buffer, int, int]:
    """A string array as the C helper reads it: (offsets, data, offset, length)."""
    _, offsets, data = values.buffers()
    if offsets is None:  # an empty array may come without buffers
        return _NO_OFFSETS, pa.py_buffer(b""), 0, 0
    return offsets, data if data is not None else pa.py_buffer(b""), values.offset, len(values)


def _offsets(view: tuple[pa.Buffer, pa.Buffer, int, int]) -> np.ndarray:
    offsets, _, offset, n = view
    return np.frombuffer(offsets, dtype=np.int32, count=n + 1, offset=4 * offset)


def _text_bytes(view: tuple[pa.Buffer, pa.Buffer, int, int]) -> int:
    o = _offsets(view)
    return int(o[-1]) - int(o[0])


def _lengths(view: tuple[pa.Buffer, pa.Buffer, int, int]) -> np.ndarray:
    return np.diff(_offsets(view).astype(np.int64))


def _single(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One array: a taken ChunkedArray usually is one chunk already (no copy then)."""
    if isinstance(values, pa.Array):
        return values
    return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()


def group_rows(columns: list[pa.Array]) -> tuple[list[tuple[str | None, ...]], np.ndarray]:
    """Rows grouped by their values in ``columns`` (equal lengths): (the distinct value tuples,
    the index into them of every row). Vectorized: one dictionary encoding per column."""
    code = np.zeros(len(columns[0]) if columns else 0, dtype=np.int64)
    dictionaries = []
    for column in columns:
        encoded = column.dictionary_encode(null_encoding="encode")
        index = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        values = encoded.dictionary.to_pylist()
        code = code * max(1, len(values)) + index
        dictionaries.append(values)
    unique, inverse = np.unique(code, return_inverse=True)
    keys = []
    for c in unique.tolist():
        parts = []
        for values in reversed(dictionaries):
            c, i = divmod(c, max(1, len(values)))
            parts.append(values[i])
        keys.append(tuple(reversed(parts)))
    return keys, inverse.reshape(-1)


@dataclass
class SpanBatch:
    """A batch of spans as one Arrow table with :data:`SCHEMA`.

    ``approx_bytes`` is what the batch weighed on the wire after decompression; queues
    and exporters use it for byte-bounded batching without re-measuring Arrow buffers.
    """

    table: pa.Table
    approx_bytes: int = 0
    _genai_mask: np.ndarray | None = field(default=None, repr=False)
    # (owner row per entry, keys, values) of SpanAttributes, computed on first use; the table
    # is never mutated in place (processors return new batches), so this cannot go stale.
    _attrs: tuple[np.ndarray, pa.Array, pa.Array] | None = field(default=None, repr=False)
    _codes: tuple[np.ndarray, list[str]] | None = field(default=None, repr=False)
    # Names this batch's insert (ClickHouse's insert_deduplication_token): set by the exporter
    # helper on what it sends, the same for every try of the same spans, so a store that got
    # them once stores them once. None: not sent yet, or no token.
    insert_token: str | None = field(default=None, repr=False)

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
            self._genai_mask = self.rows_with_keys(prefixes=GENAI_KEY_PREFIXES)
        return self._genai_mask

    def rows_with_keys(self, exact: Iterable[str] = (), prefixes: Iterable[str] = ()) -> np.ndarray:
        """Per span: does any ``SpanAttributes`` key equal one of ``exact`` or start with one
        of ``prefixes``? (Vectorized; no per-span Python.)"""
        mask = np.zeros(len(self), dtype=bool)
        if not len(self):
            return mask
        owners, _, _ = self._attr_arrays()
        codes, distinct = self._key_codes()
        exact, prefixes = frozenset(exact), tuple(prefixes)
        lut = np.array([k in exact or k.startswith(prefixes) for k in distinct] + [False], dtype=bool)
        if lut.any():  # else no entry can match: skip the pass over them
            mask[owners[lut[codes]]] = True
        return mask

    def attribute_keys(self, exact: Iterable[str] = (), prefixes: Iterable[str] = ()) -> list[str]:
        """The distinct ``SpanAttributes`` keys of this batch that equal one of ``exact`` or start
        with one of ``prefixes`` (to read flattened attributes such as ``llm.input_messages.*``)."""
        if not len(self):
            return []
        exact, prefixes = frozenset(exact), tuple(prefixes)
        return [k for k in self._key_codes()[1] if k in exact or k.startswith(prefixes)]

    def event_names(self) -> list[str]:
        """The distinct event names in this batch."""
        if not len(self):
            return []
        values = pc.list_flatten(self.table.column("Events.Name"))
        return [n for n in pc.unique(values).to_pylist() if n is not None]

    def _key_codes(self) -> tuple[np.ndarray, list[str]]:
        """Every ``SpanAttributes`` entry's key as an index into the batch's distinct keys (a few
        dozen): key tests run once per distinct key, then one numpy lookup per entry."""
        if self._codes is None:
            _, keys, _ = self._attr_arrays()
            if NATIVE_MERGE and _native_key_codes is not None and not keys.null_count:
                codes = np.empty(len(keys), dtype=np.int32)  # int32: half the memory traffic of int64
                self._codes = codes, _native_key_codes(_string_view(keys), codes)
            else:
                encoded = keys.dictionary_encode()
                distinct = encoded.dictionary.to_pylist()
                codes = pc.fill_null(encoded.indices, len(distinct)).to_numpy(zero_copy_only=False)
                self._codes = codes.astype(np.int64), distinct
        return self._codes

    def _key_lut(self, keys: list[str]) -> np.ndarray:
        """Per key code (and one more, for null keys): the index of that key in ``keys``, or -1."""
        where = {k: i for i, k in enumerate(keys)}
        return np.array([where.get(k, -1) for k in self._key_codes()[1]] + [-1], dtype=np.int32)

    def _key_positions(self, keys: list[str]) -> np.ndarray:
        """Per entry: the index of its key in ``keys``, or -1."""
        return self._key_lut(keys)[self._key_codes()[0]]

    def rows_with_events(self, names: Iterable[str]) -> np.ndarray:
        """Per span: does it carry an event named one of ``names``?"""
        mask = np.zeros(len(self), dtype=bool)
        if not len(self):
            return mask
        column = self.table.column("Events.Name").combine_chunks()
        offsets = column.offsets.to_numpy()
        start, end = int(offsets[0]), int(offsets[-1])
        if start == end:
            return mask
        values = column.values.slice(start, end - start)
        owners = np.repeat(np.arange(len(self)), np.diff(offsets))
        hit = pc.is_in(values, value_set=pa.array(list(names), pa.string())).to_numpy(zero_copy_only=False)
        mask[owners[hit]] = True
        return mask

    def events(self, rows: np.ndarray) -> list[list[tuple[str, int, dict[str, str]]]]:
        """For each of ``rows``: its events as (name, timestamp in ns, attributes)."""
        take = pa.array(np.asarray(rows, dtype=np.int64))
        names = self.table.column("Events.Name").take(take).to_pylist()
        stamps = self.table.column("Events.Timestamp").cast(pa.list_(pa.int64())).take(take).to_pylist()
        attrs = self.table.column("Events.Attributes").take(take).to_pylist()
        return [
            [(n, t, dict(a or ())) for n, t, a in zip(ns or (), ts or (), at or (), strict=False)]
            for ns, ts, at in zip(names, stamps, attrs, strict=True)
        ]

    def event_attributes(self, key_prefix: str) -> tuple[np.ndarray, pa.Array]:
        """(owner row, value) of every event attribute, across all events, whose key starts with
        ``key_prefix``; vectorized. A chunk's flattened events are a slice of its child array
        whose map offsets stay absolute, so the entry range is cut by hand (and no list kernel
        touches the map arrays: see ``_attr_arrays``)."""
        rows: list[np.ndarray] = []
        values: list[pa.Array] = []
        first = 0
        for lists in self.table.column("Events.Attributes").chunks:
            loff = lists.offsets.to_numpy()
            if len(lists) and loff[-1] > loff[0]:
                maps = lists.flatten()
                moff = maps.offsets.to_numpy()
                lo, hi = int(moff[0]), int(moff[-1])
                hit = np.flatnonzero(pc.fill_null(pc.starts_with(maps.keys.slice(lo, hi - lo), key_prefix), False)
                                     .to_numpy(zero_copy_only=False)) if hi > lo else []
                if len(hit):
                    event = np.searchsorted(moff, hit + lo, side="right") - 1 + int(loff[0])
                    rows.append(np.searchsorted(loff, event, side="right") - 1 + first)
                    values.append(maps.items.slice(lo, hi - lo).take(pa.array(hit)))
            first += len(lists)
        if not rows:
            return np.zeros(0, dtype=np.int64), pa.array([], pa.string())
        return np.concatenate(rows), pa.concat_arrays(values)

    # --- attribute access for processors (vectorized; Python work only for matched entries) ---

    def _attr_arrays(self) -> tuple[np.ndarray, pa.Array, pa.ChunkedArray]:
        """(owner row per entry, keys, values) of ``SpanAttributes``.

        The values (message text: most of a batch's bytes) stay in their chunks — a batch is
        usually several export requests concatenated — and are copied once, by whoever takes
        from them; only the short keys are concatenated. MapArray.keys ignores slicing and
        offsets are absolute, so each chunk's entry range is cut by hand. (List kernels such
        as list_parent_indices abort the process on map arrays in pyarrow 26: never call
        them on map columns.)"""
        if self._attrs is None:
            lengths, keys, items = [], [], []
            for chunk in self.table.column("SpanAttributes").chunks:
                offsets = chunk.offsets.to_numpy()
                start, end = int(offsets[0]), int(offsets[-1])
                keys.append(chunk.keys.slice(start, end - start))
                items.append(chunk.items.slice(start, end - start))
                lengths.append(np.diff(offsets))
            counts = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int32)
            self._attrs = (
                np.repeat(np.arange(len(self), dtype=np.int32), counts),  # int32: rows fit, half the bytes
                pa.concat_arrays(keys) if keys else pa.array([], pa.string()),
                pa.chunked_array(items, pa.string()),
            )
        return self._attrs

    def get_attributes(self, keys: Iterable[str] | None, rows: np.ndarray) -> list[dict[str, str]]:
        """For each of ``rows`` (ascending), its ``SpanAttributes`` entries whose key is in
        ``keys`` (all entries when ``keys`` is None). Values are strings, as stored."""
        out: list[dict[str, str]] = [{} for _ in range(len(rows))]
        if not len(rows) or not len(self):
            return out
        owners, akeys, items = self._attr_arrays()
        hit = self._row_mask(rows)[owners]
        if keys is not None:
            hit &= self._key_positions(list(keys)) >= 0
        idx = np.nonzero(hit)[0]
        if not len(idx):
            return out
        where = np.searchsorted(rows, owners[idx])
        pairs = zip(where.tolist(), akeys.take(pa.array(idx)).to_pylist(), _take_sorted(items, idx).to_pylist(),
                    strict=True)
        for pos, k, v in pairs:
            out[pos][k] = v
        return out

    def attribute_columns(self, keys: Iterable[str], rows: np.ndarray) -> dict[str, pa.Array]:
        """For each key: a string array aligned with ``rows`` (ascending) holding that attribute's
        value, null where the span lacks it. No per-span Python work."""
        keys = list(keys)
        n = len(rows)
        out = {k: pa.nulls(n, pa.string()) for k in keys}
        if not n or not len(self):
            return out
        owners, _, items = self._attr_arrays()
        position = self._positions(rows)
        chunks = [c for c in items.chunks if len(c)]
        codes = self._key_codes()[0]
        if (NATIVE_MERGE and _native_take is not None and codes.dtype == owners.dtype == np.int32
                and not any(c.null_count for c in chunks)):
            # The entry index per (key, row), -1 where absent (a duplicated key: the last one wins),
            # then one gather of every value: two C passes.
            index = np.full((len(keys), n), -1, dtype=np.int64)
            _native_entry_index(codes, owners, self._key_lut(keys), position, index)
            offsets, data, validity, nulls = _native_take([_string_view(c) for c in chunks], index)
            values = pa.Array.from_buffers(pa.string(), index.size, [
                None if validity is None else pa.py_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(data)],
                null_count=nulls)
            return {key: values.slice(i * n, n) for i, key in enumerate(keys)}
        which = self._key_positions(keys)
        where = position[owners]
        selected = np.nonzero((which >= 0) & (where >= 0))[0]
        if not len(selected):
            return out
        which, where = which[selected], where[selected]
        values = _take_sorted(items, selected)  # only the wanted entries leave their chunks
        for i, key in enumerate(keys):
            idx = np.nonzero(which == i)[0]
            if not len(idx):
                continue
            take = np.full(n, -1, dtype=np.int64)
            take[where[idx]] = idx  # a duplicated key: the last one wins
            out[key] = values.take(pa.array(take, mask=take < 0))
        return out

    def _positions(self, rows: np.ndarray) -> np.ndarray:
        """Per span: its index in ``rows``, or -1."""
        position = np.full(len(self), -1, dtype=np.int32)
        position[rows] = np.arange(len(rows), dtype=np.int32)
        return position

    def _row_mask(self, rows: np.ndarray) -> np.ndarray:
        mask = np.zeros(len(self), dtype=bool)
        mask[rows] = True
        return mask

    def with_attribute_columns(self, rows: np.ndarray, columns: dict[str, pa.Array]) -> SpanBatch:
        """A batch where, for each key, the spans ``rows`` (ascending) whose value in
        ``columns[key]`` is not null get that value (replacing an existing entry or appended).
        The vectorized counterpart of :meth:`with_attributes`."""
        if any(len(v) != len(rows) for v in columns.values()):
            raise ValueError(f"with_attribute_columns: each column needs one value per row ({len(rows)})")
        columns = {k: _single(v) for k, v in columns.items() if v.null_count < len(v)}
        if not len(rows) or not columns:
            return self
        keys, n = list(columns), len(rows)
        valid = np.stack([v.is_valid().to_numpy(zero_copy_only=False) for v in columns.values()], axis=1)
        at, which = np.nonzero(valid)  # row-major: each row's new entries, in key order
        keep = None
        if not set(keys).isdisjoint(self._key_codes()[1]):  # existing entries of these keys are replaced
            owners, _, _ = self._attr_arrays()
            existing = self._key_positions(keys)
            where = self._positions(rows)[owners]
            hit = np.nonzero((existing >= 0) & (where >= 0))[0]
            keep = np.ones(len(owners), dtype=bool)
            keep[hit[valid[where[hit], existing[hit]]]] = False
        values = pa.concat_arrays([v.cast(pa.string()) for v in columns.values()])
        return self._rebuilt_attributes(keep, rows[at], pa.array(keys, pa.string()).take(pa.array(which)),
                                        values.take(pa.array(which * n + at)))

    def _rebuilt_attributes(self, keep: np.ndarray | None, new_owner: np.ndarray, new_keys: pa.Array,
                            new_vals: pa.Array) -> SpanBatch:
        """This batch with the ``SpanAttributes`` entries in ``keep`` (all when None) plus the new
        ones (``new_owner`` ascending), each row's new entries after its old ones."""
        new_owner = np.asarray(new_owner, dtype=np.int64)
        column = None
        if NATIVE_MERGE and _merge_map is not None:
            column = self._merged_natively(keep, new_owner, new_keys, new_vals)
        if column is None:
            column = self._merged_with_arrow(keep, new_owner, new_keys, new_vals)
        i = self.table.schema.get_field_index("SpanAttributes")
        table = self.table.set_column(i, self.table.schema.field(i), column)
        return SpanBatch(table, self.approx_bytes, self._genai_mask)

    def _merged_with_arrow(self, keep: np.ndarray | None, new_owner: np.ndarray, new_keys: pa.Array,
                           new_vals: pa.Array) -> pa.Array:
        """The rebuilt map column from Arrow kernels (the fallback without the C extension)."""
        owners, akeys, items = self._attr_arrays()
        if keep is None:  # nothing replaced or removed: the old entries go in as they are
            old_owner, old_keys, old_vals = owners, akeys, items
        else:
            kept = pa.array(np.nonzero(keep)[0])
            old_owner, old_keys, old_vals = owners[keep], akeys.take(kept), items.take(kept)
        all_owner = np.concatenate([old_owner, new_owner])
        order = pa.array(np.argsort(all_owner, kind="stable"))
        keys = pa.concat_arrays([old_keys, new_keys]).take(order)
        vals = _single(pa.chunked_array([*_chunks(old_vals), new_vals], pa.string()).take(order))
        offsets = np.zeros(len(self) + 1, dtype=np.int32)
        np.cumsum(np.bincount(all_owner, minlength=len(self)), out=offsets[1:])
        return pa.MapArray.from_arrays(pa.array(offsets), keys, vals)

    def _merged_natively(self, keep: np.ndarray | None, new_owner: np.ndarray, new_keys: pa.Array,
                         new_vals: pa.Array) -> pa.Array | None:
        """The rebuilt map column from one pass of the C helper, which copies each attribute byte
        once (Arrow's chunked take concatenates every chunk, then takes: twice); None where it does
        not apply (null values, over 2 GiB of text)."""
        owners, akeys, items = self._attr_arrays()
        n = len(self)
        chunks = [c for c in items.chunks if len(c)]
        if new_vals.null_count or any(c.null_count for c in chunks):
            return None
        views = [_string_view(a) for a in (akeys, new_keys, new_vals, *chunks)]
        if keep is None:
            key_bytes = _text_bytes(views[0]) + _text_bytes(views[1])
            val_bytes = sum(_text_bytes(v) for v in views[3:]) + _text_bytes(views[2])
        else:
            key_bytes = int(_lengths(views[0])[keep].sum()) + _text_bytes(views[1])
            val_lengths = np.concatenate([_lengths(v) for v in views[3:]]) if chunks else np.zeros(0, np.int64)
            val_bytes = int(val_lengths[keep].sum()) + _text_bytes(views[2])
        entries = (len(owners) if keep is None else int(keep.sum())) + len(new_keys)
        if max(key_bytes, val_bytes) > 2**31 - 1:
            return None
        old_start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(owners, minlength=n), out=old_start[1:])
        new_start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(new_owner, minlength=n), out=new_start[1:])
        out = (pa.allocate_buffer(4 * (n + 1)), pa.allocate_buffer(4 * (entries + 1)), pa.allocate_buffer(max(1, key_bytes)),
               pa.allocate_buffer(4 * (entries + 1)), pa.allocate_buffer(max(1, val_bytes)))
        written = _merge_map(n, old_start, None if keep is None else np.ascontiguousarray(keep, dtype=np.uint8),
                             views[0], views[3:], new_start, views[1], views[2], out)
        if written != (entries, key_bytes, val_bytes):  # cannot happen: the sizes above are exact
            raise AssertionError(f"map rebuild wrote {written}, expected {(entries, key_bytes, val_bytes)}")
        keys = pa.Array.from_buffers(pa.string(), entries, [None, out[1], out[2]])
        vals = pa.Array.from_buffers(pa.string(), entries, [None, out[3], out[4]])
        return pa.MapArray.from_arrays(pa.Array.from_buffers(pa.int32(), n + 1, [None, out[0]]), keys, vals)

    def with_attributes(self, rows: np.ndarray, updates: list[dict[str, str]],
                        removals: list[set[str]] | None = None) -> SpanBatch:
        """A batch whose ``SpanAttributes`` for ``rows`` (ascending) have ``updates`` applied:
        keys there replace existing entries, new keys are appended; keys in ``removals`` (one
        set per row, optional) are dropped. Other rows are untouched."""
        if not len(rows):
            return self
        owners, akeys, _ = self._attr_arrays()
        touched = [set(u) | removals[i] for i, u in enumerate(updates)] if removals else updates
        new_keys = sorted({k for u in touched for k in u})
        keep = np.ones(len(owners), dtype=bool)
        candidates = pc.is_in(akeys, value_set=pa.array(new_keys, pa.string())).to_numpy(zero_copy_only=False)
        candidates &= np.isin(owners, rows)
        idx = np.nonzero(candidates)[0]
        if len(idx):
            where = np.searchsorted(rows, owners[idx])
            for i, pos, k in zip(idx.tolist(), where.tolist(), akeys.take(pa.array(idx)).to_pylist(), strict=True):
                if k in touched[pos]:
                    keep[i] = False
        add_owner = np.repeat(rows, [len(u) for u in updates])
        add_keys = pa.array([k for u in updates for k in u], pa.string())
        add_vals = pa.array([v for u in updates for v in u.values()], pa.string())
        return self._rebuilt_attributes(None if keep.all() else keep, add_owner, add_keys, add_vals)

    def with_events(self, rows: np.ndarray, events: list[list[tuple[str, int, dict[str, str]]]]) -> SpanBatch:
        """A batch whose spans ``rows`` (ascending) carry exactly ``events`` (one list of
        (name, timestamp in ns, attributes) per row, as :meth:`events` returns them); other rows
        keep theirs. Processors append with ``events(rows)`` + their own and redact in place."""
        if not len(rows):
            return self
        n, rows = len(self), np.asarray(rows, dtype=np.int64)
        # Row i takes from the old column (index i) or from the replacement (index n + j).
        index = np.arange(n, dtype=np.int64)
        index[rows] = n + np.arange(len(rows), dtype=np.int64)
        order = pa.array(index)
        replacement = {
            "Events.Timestamp": pa.array([[t for _, t, _ in evs] for evs in events], pa.list_(pa.int64()))
            .cast(pa.list_(TIMESTAMP_NS)),
            "Events.Name": pa.array([[name for name, _, _ in evs] for evs in events], pa.list_(pa.string())),
            "Events.Attributes": pa.array([[list(a.items()) for _, _, a in evs] for evs in events],
                                          pa.list_(ATTR_MAP)),
        }
        table = self.table
        for name, values in replacement.items():
            i = table.schema.get_field_index(name)
            old = _single(table.column(i))
            column = pa.concat_arrays([old, values.cast(old.type)]).take(order)
            table = table.set_column(i, table.schema.field(i), column)
        return SpanBatch(table, self.approx_bytes, self._genai_mask, self._attrs, self._codes)
