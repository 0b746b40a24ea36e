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


def test_attribute_columns_and_with_attribute_columns_on_a_slice():
    import numpy as np
    import pyarrow as pa

    whole = _batch(40, seed=3)
    part = whole.slice(10, 20)  # offsets of a slice do not start at 0
    rows = np.nonzero(part.genai_mask())[0]
    before = [dict(kv) for kv in part.table.column("SpanAttributes").to_pylist()]
    cols = part.attribute_columns(["gen_ai.request.model", "no.such.key"], rows)
    assert cols["gen_ai.request.model"].to_pylist() == [before[r]["gen_ai.request.model"] for r in rows]
    assert cols["no.such.key"].null_count == len(rows)
    # replace one key on every other GenAI row, add a new key on all of them, leave the rest alone
    replaced = pa.array([f"m{i}" if i % 2 == 0 else None for i in range(len(rows))], pa.string())
    added = pa.array([str(i) for i in range(len(rows))], pa.string())
    out = part.with_attribute_columns(rows, {"gen_ai.request.model": replaced, "lqo.test": added})
    after = [dict(kv) for kv in out.table.column("SpanAttributes").to_pylist()]
    for row in range(len(part)):
        if row not in set(rows.tolist()):
            assert after[row] == before[row]
            continue
        i = rows.tolist().index(row)
        expected = dict(before[row], **{"lqo.test": str(i)})
        if i % 2 == 0:
            expected["gen_ai.request.model"] = f"m{i}"
        assert after[row] == expected
        assert len(out.table.column("SpanAttributes")[row]) == len(expected)  # replaced, not duplicated


def test_rows_with_keys_and_events():
    batch = _batch(30, seed=4)
    mask = batch.rows_with_keys(exact=["gen_ai.request.model"])
    assert mask.tolist() == batch.genai_mask().tolist()
    assert not batch.rows_with_keys(prefixes=["nope."]).any()
    assert not batch.rows_with_events(["no such event"]).any()


def test_attribute_access_across_chunks():
    import numpy as np

    batch = SpanBatch.concat([_batch(7, seed=s) for s in (5, 6, 7)]).slice(3, 15)  # chunked, sliced
    assert batch.table.column("SpanAttributes").num_chunks > 1
    rows = np.arange(len(batch))
    expected = [dict(kv) for kv in batch.table.column("SpanAttributes").to_pylist()]
    assert batch.get_attributes(None, rows) == expected
    cols = batch.attribute_columns(["gen_ai.request.model", "http.route"], rows)
    for key, column in cols.items():
        assert column.to_pylist() == [e.get(key) for e in expected]


def test_map_rebuild_in_c_gives_what_arrow_gives(monkeypatch):
    """SpanAttributes rebuilt by the C helper (one copy of the attribute bytes) and by Arrow's
    kernels (concatenate, then take): the same column, on chunked, sliced batches, for added,
    replaced and removed keys, non-ASCII and empty values, and rows left with no entries."""
    import numpy as np
    import pyarrow as pa
    import pytest

    from lqo.collector.model import otlp, spanbatch

    if not otlp.NATIVE_AVAILABLE:
        pytest.skip("the C extension is not built here")
    batch = SpanBatch.concat([_batch(9, seed=s) for s in (8, 9, 10)]).slice(2, 23)
    assert batch.table.column("SpanAttributes").num_chunks > 1
    rows = np.nonzero(batch.genai_mask())[0]
    http = np.nonzero(~batch.genai_mask())[0]
    http_keys = [set(dict(kv)) for kv in batch.table.column("SpanAttributes").take(pa.array(http)).to_pylist()]
    edits = [
        lambda b: b.with_attribute_columns(rows, {
            "gen_ai.request.model": pa.array([f"mödel-{i}" if i % 2 else None for i in range(len(rows))]),
            "lqo.cost.usd": pa.array([str(i / 7) if i % 3 else "" for i in range(len(rows))]),
            "lqo.note": pa.array(["✓ 日本語"] * len(rows))}),
        lambda b: b.with_attributes(http, [{"lqo.x": "1"} if i % 2 else {} for i in range(len(http))],
                                    [keys if i % 2 == 0 else set() for i, keys in enumerate(http_keys)]),
        lambda b: b.with_attribute_columns(rows, {"lqo.none": pa.nulls(len(rows), pa.string())}),
    ]
    calls = []
    native = spanbatch._merge_map
    monkeypatch.setattr(spanbatch, "_merge_map", lambda *a: calls.append(1) or native(*a))
    for edit in edits:
        monkeypatch.setattr(spanbatch, "NATIVE_MERGE", True)
        fast = edit(batch)
        monkeypatch.setattr(spanbatch, "NATIVE_MERGE", False)
        slow = edit(batch)
        assert fast.table.column("SpanAttributes").to_pylist() == slow.table.column("SpanAttributes").to_pylist()
        assert fast.table.equals(slow.table)
    assert len(calls) == 2  # the third edit adds nothing: no rebuild at all
    emptied = edits[1](batch).table.column("SpanAttributes").take(pa.array(http[::2])).to_pylist()
    assert emptied == [[]] * len(http[::2])  # every key of those rows removed


def test_map_rebuild_in_c_refuses_inconsistent_buffers():
    import numpy as np
    import pyarrow as pa
    import pytest

    from lqo.collector.model import otlp, spanbatch

    if not otlp.NATIVE_AVAILABLE:
        pytest.skip("the C extension is not built here")
    strings = pa.array(["alpha", "beta"])
    view = spanbatch._string_view(strings)
    empty = spanbatch._string_view(pa.array([], pa.string()))
    rows = np.array([0, 1, 2], dtype=np.int64)
    small = tuple(pa.allocate_buffer(4) for _ in range(5))  # far too small for 2 entries
    with pytest.raises(ValueError, match="too small"):
        spanbatch._merge_map(2, rows, None, view, [view], np.zeros(3, np.int64), empty, empty, small)
    with pytest.raises(ValueError, match="as many values as keys"):
        spanbatch._merge_map(2, rows, None, view, [], np.zeros(3, np.int64), empty, empty, small)
    big = tuple(pa.allocate_buffer(64) for _ in range(5))
    with pytest.raises(ValueError, match="cover"):
        spanbatch._merge_map(2, np.array([0, 1, 5], np.int64), None, view, [view], np.zeros(3, np.int64),
                             empty, empty, big)
    assert spanbatch._merge_map(2, rows, None, view, [view], np.zeros(3, np.int64), empty, empty, big) == (2, 9, 9)
    with pytest.raises(ValueError, match="offsets buffer too short"):
        spanbatch._merge_map(2, rows, None, (view[0], view[1], 0, 9), [view], np.zeros(3, np.int64),
                             empty, empty, small)


def test_key_codes_in_c_match_arrows_dictionary_encoding():
    """The C key coder (predicted next key, else a hash table that grows) gives Arrow's
    dictionary_encode answer: distinct values in order of first appearance, every entry's index."""
    import numpy as np
    import pyarrow as pa
    import pytest

    from lqo.collector.model import otlp, spanbatch

    if not otlp.NATIVE_AVAILABLE:
        pytest.skip("the C extension is not built here")
    rng = np.random.default_rng(11)
    kinds = [["gen_ai.request.model", "gen_ai.usage.input_tokens", "", "ключ", "gen_ai.usage.output_tokens"],
             ["http.route", "http.request.method", "gen_ai.request.model", "日本語"]]
    rows = [kinds[int(k)] if rng.random() > 0.1 else kinds[int(k)][::-1] for k in rng.integers(0, 2, 500)]
    cases = [
        pa.array([key for row in rows for key in row]),  # spans of two kinds, some in another order
        pa.array([f"attr.{i}" for i in rng.integers(0, 5000, 20000)]),  # thousands of distinct keys
        pa.array(["same"] * 1000),
        pa.array([], pa.string()),
        pa.array(["x", "yy", "x", "zzz", "yy"] * 40).slice(7, 150),  # a slice: offsets not from 0
    ]
    for keys in cases:
        codes = np.full(len(keys), -7, dtype=np.int32)
        distinct = spanbatch._native_key_codes(spanbatch._string_view(keys), codes)
        expected = keys.dictionary_encode()
        assert distinct == expected.dictionary.to_pylist()
        assert codes.tolist() == expected.indices.to_pylist()
    with pytest.raises(ValueError, match="too small"):
        spanbatch._native_key_codes(spanbatch._string_view(cases[0]), np.zeros(3, dtype=np.int32))
    broken = pa.py_buffer(np.array([0, 5, 2, 6], dtype=np.int32).tobytes())  # offsets go back
    with pytest.raises(ValueError, match="offsets decrease"):
        spanbatch._native_key_codes((broken, pa.py_buffer(b"abcdef"), 0, 3), np.zeros(3, dtype=np.int32))


def test_attribute_reads_in_c_match_arrow(monkeypatch):
    """attribute_columns through the C gather and through Arrow's takes: the same arrays, on a
    chunked, sliced batch, for present, absent and duplicated keys and a subset of rows."""
    import numpy as np
    import pyarrow as pa
    import pytest

    from lqo.collector.model import otlp, spanbatch

    if not otlp.NATIVE_AVAILABLE:
        pytest.skip("the C extension is not built here")
    batch = SpanBatch.concat([_batch(11, seed=s) for s in (12, 13, 14)]).slice(4, 25)
    # a map with a duplicated key (other producers' decoders may not deduplicate): the last wins
    doubled = pa.MapArray.from_arrays(pa.array([0, 3], pa.int32()), pa.array(["k", "gen_ai.request.model", "k"]),
                                      pa.array(["first", "m", "last"]))
    table = batch.table.slice(0, 1)
    table = table.set_column(table.schema.get_field_index("SpanAttributes"), "SpanAttributes", doubled)
    batch = SpanBatch.concat([batch, SpanBatch(table)])
    keys = ["gen_ai.request.model", "gen_ai.usage.input_tokens", "k", "http.route", "absent"]
    expected = [dict(kv) for kv in batch.table.column("SpanAttributes").to_pylist()]
    expected[-1]["k"] = "last"
    for rows in (np.arange(len(batch)), np.nonzero(batch.genai_mask())[0], np.array([len(batch) - 1])):
        results = {}
        for native in (True, False):
            monkeypatch.setattr(spanbatch, "NATIVE_MERGE", native)
            results[native] = batch.attribute_columns(keys, rows)
        for key in keys:
            assert results[True][key].to_pylist() == results[False][key].to_pylist()
            assert results[True][key].to_pylist() == [expected[r].get(key) for r in rows]
    chunks = [spanbatch._string_view(pa.array(["ab", "c"])), spanbatch._string_view(pa.array(["déf"]))]
    offsets, data, validity, nulls = spanbatch._native_take(chunks, np.array([2, -1, 0, 2], dtype=np.int64))
    taken = pa.Array.from_buffers(pa.string(), 4, [pa.py_buffer(validity), pa.py_buffer(offsets), pa.py_buffer(data)])
    assert taken.to_pylist() == ["déf", None, "ab", "déf"] and nulls == 1
    with pytest.raises(IndexError):
        spanbatch._native_take(chunks, np.array([3], dtype=np.int64))
    with pytest.raises(ValueError, match="int64"):
        spanbatch._native_take(chunks, np.array([0], dtype=np.int32))
    codes, owners = np.array([0, 1, 0], dtype=np.int32), np.array([0, 0, 1], dtype=np.int32)
    index = np.full(4, -1, dtype=np.int64)
    spanbatch._native_entry_index(codes, owners, np.array([1, 0], np.int32), np.array([0, 1], np.int32), index)
    assert index.tolist() == [1, -1, 0, 2]  # (key 0: span 0 → entry 1), (key 1: spans 0, 1 → entries 0, 2)
    with pytest.raises(IndexError, match="out of range"):
        spanbatch._native_entry_index(codes, owners, np.array([1], np.int32), np.array([0, 1], np.int32), index)
    with pytest.raises(IndexError, match="too small"):
        spanbatch._native_entry_index(codes, owners, np.array([1, 0], np.int32), np.array([0, 1], np.int32), index[:3])


def test_c_helpers_survive_random_buffers():
    """Random offsets, data and indices: each C helper returns or raises a clean error, never
    reads out of bounds (a crash would take the collector down)."""
    import numpy as np
    import pyarrow as pa
    import pytest

    from lqo.collector.model import otlp, spanbatch

    if not otlp.NATIVE_AVAILABLE:
        pytest.skip("the C extension is not built here")
    rng = np.random.default_rng(0)
    outcomes = {"returned": 0, "refused": 0}
    for _ in range(3000):
        n = int(rng.integers(0, 8))
        offsets = rng.integers(-3, 20, n + 1).astype(np.int32)
        if rng.random() < 0.5:
            offsets = np.sort(offsets)
        data = bytes(rng.integers(0, 256, int(rng.integers(0, 16)), dtype=np.uint8))
        view = (pa.py_buffer(offsets.tobytes()), pa.py_buffer(data), int(rng.integers(0, 2)), n - int(rng.integers(0, 2)))
        calls = [
            lambda view=view: spanbatch._native_key_codes(view, np.zeros(max(0, view[3]), np.int32)),
            lambda view=view: spanbatch._native_take([view, view],
                                                     rng.integers(-2, 10, int(rng.integers(0, 6))).astype(np.int64)),
            lambda: spanbatch._native_entry_index(
                *(rng.integers(-1, 4, m).astype(np.int32) for m in [int(rng.integers(0, 6))] * 2),
                rng.integers(-1, 3, int(rng.integers(0, 4))).astype(np.int32),
                rng.integers(-1, 4, int(rng.integers(0, 5))).astype(np.int32), np.zeros(int(rng.integers(0, 12)), np.int64)),
        ]
        for call in calls:
            try:
                call()
                outcomes["returned"] += 1
            except (ValueError, IndexError, UnicodeDecodeError):
                outcomes["refused"] += 1
    assert outcomes["returned"] > 300 and outcomes["refused"] > 300, outcomes


def test_with_attribute_columns_takes_chunked_columns_and_refuses_misaligned_ones():
    import numpy as np
    import pyarrow as pa
    import pytest

    batch = _batch(12, seed=15)
    rows = np.nonzero(batch.genai_mask())[0]
    values = [f"v{i}" for i in range(len(rows))]
    chunked = pa.chunked_array([values[:2], values[2:]], pa.string())
    out = batch.with_attribute_columns(rows, {"lqo.test": chunked})
    assert out.attribute_columns(["lqo.test"], rows)["lqo.test"].to_pylist() == values
    with pytest.raises(ValueError, match="one value per row"):
        batch.with_attribute_columns(rows, {"lqo.test": pa.array(values[:-1])})


def test_event_attributes_are_found_with_their_rows_across_chunks() -> None:
    from datetime import datetime

    import pyarrow as pa

    from lqo.collector.model.spanbatch import SCHEMA

    def batch(events: list[list[dict[str, str]]]) -> SpanBatch:
        rows = []
        for i, evs in enumerate(events):
            row = {n: [] if n.startswith(("Events.", "Links.")) else None for n in SCHEMA.names}
            row.update(Timestamp=datetime(2026, 1, 1), TraceId="t", SpanId=f"s{i}", SpanAttributes=[],
                       **{"Events.Name": ["e"] * len(evs), "Events.Timestamp": [datetime(2026, 1, 1)] * len(evs),
                          "Events.Attributes": [list(a.items()) for a in evs]})
            rows.append(row)
        return SpanBatch(pa.Table.from_pylist(rows, schema=SCHEMA))

    first = batch([[{"exception.message": "a", "x": "1"}], []])
    second = batch([[{"exception.message": "not taken"}], [{"y": "2"}, {"exception.type": "b", "exception.message": "c"}],
                    [{"exception.x": "d"}]])
    both = SpanBatch.concat([first, second.slice(1, 2)])  # chunked columns, the second chunk sliced
    rows, values = both.event_attributes("exception.")
    assert list(zip(rows.tolist(), values.to_pylist(), strict=True)) == [(0, "a"), (2, "b"), (2, "c"), (3, "d")]
    assert both.event_attributes("nothing.")[0].tolist() == []
