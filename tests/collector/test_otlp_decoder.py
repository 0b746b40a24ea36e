"""The native OTLP decoder gives exactly the reference (pure-Python) decoder's batch, and
survives hostile bytes."""

from __future__ import annotations

import math
import os
import random

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1 import trace_pb2

from lqo.collector.model import otlp
from lqo.collector.model.otlp import PayloadError, decode_protobuf_python

pytestmark = pytest.mark.skipif(not otlp.NATIVE_AVAILABLE, reason="native decoder not built")

TEXTS = ["", "plain", "héllo wörld", "日本語", "emoji 🚀", 'quote " back \\ slash',
         "ctl \n\t\r\b\f \x01 \x1f", "x" * 3000]
DOUBLES = [0.0, -0.0, 0.25, 1.0, 2.5, -3.75, 1e-7, 1e22, 123456789.123, 1 / 3,
           math.inf, -math.inf, math.nan, 5e-324]


def rand_value(rng: random.Random, depth: int = 0) -> AnyValue:
    kind = rng.randrange(9 if depth < 2 else 6)
    if kind == 0:
        return AnyValue(string_value=rng.choice(TEXTS))
    if kind == 1:
        return AnyValue(int_value=rng.choice([0, 1, -1, 2**63 - 1, -(2**63), rng.randrange(-10**6, 10**6)]))
    if kind == 2:
        return AnyValue(double_value=rng.choice(DOUBLES))
    if kind == 3:
        return AnyValue(bool_value=rng.random() < 0.5)
    if kind == 4:
        return AnyValue(bytes_value=os.urandom(rng.randrange(0, 7)))
    if kind == 5:
        return AnyValue()
    if kind in (6, 7):
        return AnyValue(array_value=ArrayValue(values=[rand_value(rng, depth + 1) for _ in range(rng.randrange(4))]))
    return AnyValue(kvlist_value=KeyValueList(values=rand_attrs(rng, depth + 1, 3)))


def rand_attrs(rng: random.Random, depth: int = 0, most: int = 8) -> list[KeyValue]:
    keys = ["a", "b", "gen_ai.request.model", "ключ", "dup", "dup", ""]
    return [KeyValue(key=rng.choice(keys) + (str(rng.randrange(3)) if rng.random() < 0.3 else ""),
                     value=rand_value(rng, depth)) for _ in range(rng.randrange(most))]


def rand_request(rng: random.Random) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    for _ in range(rng.randrange(1, 4)):
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(rand_attrs(rng))
        if rng.random() < 0.8:
            rs.resource.attributes.add(key="service.name", value=AnyValue(string_value=rng.choice(TEXTS)))
        for _ in range(rng.randrange(0, 3)):
            ss = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = rng.choice(TEXTS), rng.choice(TEXTS)
            for _ in range(rng.randrange(0, 6)):
                start = rng.randrange(0, 2**63)
                span = ss.spans.add(
                    trace_id=os.urandom(rng.choice([16, 16, 16, 15])),
                    span_id=os.urandom(rng.choice([8, 8, 8, 0])),
                    parent_span_id=os.urandom(rng.choice([0, 8, 8, 3])),
                    trace_state=rng.choice(["", "k=v,a=b"]), name=rng.choice(TEXTS),
                    kind=rng.randrange(6), start_time_unix_nano=start,
                    end_time_unix_nano=max(0, start + rng.randrange(-10, 10**9)),
                    status=trace_pb2.Status(code=rng.randrange(3), message=rng.choice(TEXTS)),
                )
                span.attributes.extend(rand_attrs(rng))
                for _ in range(rng.randrange(3)):
                    span.events.add(time_unix_nano=rng.randrange(2**63), name=rng.choice(TEXTS),
                                    attributes=rand_attrs(rng, most=3))
                for _ in range(rng.randrange(3)):
                    span.links.add(trace_id=os.urandom(16), span_id=os.urandom(8),
                                   trace_state=rng.choice(["", "x=y"]), attributes=rand_attrs(rng, most=3))
    return req


def _same(body: bytes) -> None:
    native = otlp.decode_protobuf_native(body)
    reference = decode_protobuf_python(body)
    assert native.rejected == reference.rejected
    assert native.batch.table.schema == reference.batch.table.schema
    if not native.batch.table.equals(reference.batch.table):
        for name in reference.batch.table.column_names:
            assert native.batch.table.column(name).to_pylist() == \
                reference.batch.table.column(name).to_pylist(), name
        raise AssertionError("tables differ")


@pytest.mark.parametrize("seed", range(300))
def test_native_equals_reference_on_random_requests(seed):
    _same(rand_request(random.Random(seed)).SerializeToString())


def test_native_equals_reference_on_benchmark_workload():
    from workload import make_request

    _same(make_request(512, seed=7).SerializeToString())


def test_empty_and_unknown_fields():
    _same(b"")
    req = rand_request(random.Random(1))
    # unknown field 99 (varint, fixed64, len, fixed32) at the top level is skipped
    extra = bytes([0x98, 0x06, 0x01, 0x99, 0x06]) + b"\0" * 8 + bytes([0x9A, 0x06, 0x02]) + b"hi"
    extra += bytes([0x9D, 0x06]) + b"\0" * 4
    _same(req.SerializeToString() + extra)


def test_invalid_utf8_and_truncation_are_payload_errors():
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add(
        trace_id=os.urandom(16), span_id=os.urandom(8), name="ok")
    body = bytearray(req.SerializeToString())
    at = body.index(b"ok")
    body[at] = 0xFF
    for bad in (bytes(body), req.SerializeToString()[:-1], b"\x0a\xff\xff\xff\xff\x0f", b"\x0f"):
        with pytest.raises(PayloadError):
            otlp.decode_protobuf_native(bad)
        with pytest.raises(PayloadError):
            decode_protobuf_python(bad)
    assert span.name == "ok"


def test_mutated_payloads_never_crash():
    rng = random.Random(42)
    base = [rand_request(random.Random(s)).SerializeToString() for s in range(20)]
    outcomes = {"error": 0, "ok": 0}
    for _ in range(3000):
        body = bytearray(rng.choice(base))
        for _ in range(rng.randrange(1, 6)):
            if body:
                body[rng.randrange(len(body))] = rng.randrange(256)
        if rng.random() < 0.3 and body:
            del body[rng.randrange(len(body)):]
        try:
            result = otlp.decode_protobuf_native(bytes(body))
            result.batch.table.validate(full=True)
            outcomes["ok"] += 1
        except PayloadError:
            outcomes["error"] += 1
    assert outcomes["error"] > 100 and outcomes["ok"] > 100


def test_many_duplicate_keys_use_the_hash_path():
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add(
        trace_id=os.urandom(16), span_id=os.urandom(8))
    for i in range(5000):
        span.attributes.add(key=f"k{i % 700}", value=AnyValue(int_value=i))
    _same(req.SerializeToString())
    (attrs,) = otlp.decode_protobuf_native(req.SerializeToString()).batch.table.column("SpanAttributes").to_pylist()
    assert len(attrs) == 700 and dict(attrs)["k0"] == "4900"
