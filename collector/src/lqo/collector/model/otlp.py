"""OTLP trace payloads (protobuf or JSON) → :class:`SpanBatch`.

This is the collector's hottest Python code: every received span passes through
:func:`decode_request` exactly once. It is written as straight-line loops over the
upb-backed protobuf objects with the per-resource and per-scope values gathered once
and spread to spans by Arrow ``take``; measure (bench/ingest.py) before changing it.

Value conversion follows the contrib ClickHouse exporter (pdata ``Value.AsString``):
strings as-is, ints in decimal, doubles in shortest non-exponent form, booleans as
``true``/``false``, bytes base64, arrays and maps as compact JSON.
"""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from lqo.collector.model.spanbatch import SCHEMA, TIMESTAMP_NS, SpanBatch

SPAN_KINDS = ("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")
STATUS_CODES = ("Unset", "Ok", "Error")
SERVICE_NAME = "service.name"


class PayloadError(ValueError):
    """The payload cannot be decoded as an OTLP trace export request."""


@dataclass
class DecodeResult:
    batch: SpanBatch
    rejected: int = 0
    rejected_reason: str = ""


# --------------------------------------------------------------------------- values


def _double_str(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    text = repr(x)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    if text.endswith(".0"):
        text = text[:-2]
    return text


def _raw(value: AnyValue) -> Any:
    """AnyValue → plain Python value (for JSON rendering of arrays and maps)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_raw(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _raw(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "double_value":
        x = value.double_value
        return x if math.isfinite(x) else _double_str(x)
    return getattr(value, kind)


def value_to_str(value: AnyValue) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return _double_str(value.double_value)
    if kind is None:
        return ""
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return json.dumps(_raw(value), separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _fill_attrs(attributes: Any, keys: list[str], values: list[str]) -> int:
    """Append one attribute list's keys/values; return how many entries were added.

    Duplicate keys (which OTLP forbids but producers send) keep the last value, as a
    map would; the common no-duplicate case pays only a length comparison.
    """
    start = len(keys)
    for kv in attributes:
        value = kv.value
        if value.WhichOneof("value") == "string_value":
            values.append(value.string_value)
        else:
            values.append(value_to_str(value))
        keys.append(kv.key)
    added = len(keys) - start
    if added > 1:
        seen = keys[start:]
        if len(set(seen)) != added:
            merged = dict(zip(seen, values[start:], strict=True))
            del keys[start:], values[start:]
            keys.extend(merged.keys())
            values.extend(merged.values())
            added = len(merged)
    return added


def _map_array(offsets: list[int], keys: list[str], values: list[str]) -> pa.Array:
    return pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(keys, pa.string()), pa.array(values, pa.string())
    )


def _list_array(offsets: list[int], values: pa.Array) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)


# --------------------------------------------------------------------------- decoding


def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    try:
        return ExportTraceServiceRequest.FromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise PayloadError(f"cannot decode protobuf ExportTraceServiceRequest: {exc}") from None


MessageT = TypeVar("MessageT", bound=Message)
_ID_FIELDS = {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}


def _hex_ids_to_base64(node: Any) -> None:
    """OTLP/JSON carries ids as hex; protobuf JSON mapping expects base64 bytes."""
    if isinstance(node, dict):
        for key, val in node.items():
            if key in _ID_FIELDS and isinstance(val, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(val)).decode("ascii")
                except ValueError:
                    raise PayloadError(f"{key} {val[:40]!r} is not a hex string") from None
            else:
                _hex_ids_to_base64(val)
    elif isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)


def parse_json(body: bytes) -> ExportTraceServiceRequest:
    return parse_json_as(body, ExportTraceServiceRequest(), "resourceSpans")


def parse_json_as(body: bytes, message: MessageT, top_key: str) -> MessageT:
    """An OTLP/JSON export request (ids in hex) into ``message``; PayloadError if it is not one."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise PayloadError(f"OTLP/JSON body must be an object with a {top_key!r} array")
    _hex_ids_to_base64(doc)
    try:
        return json_format.ParseDict(doc, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise PayloadError(f"not an OTLP/JSON {type(message).__name__}: {exc}") from None


def decode_request(request: ExportTraceServiceRequest, wire_bytes: int = 0) -> DecodeResult:
    """Flatten an export request into one columnar batch.

    Spans whose trace or span id has the wrong length are invalid under the OTLP spec;
    they are left out and reported back as rejected (partial success).
    """
    trace_ids: list[str] = []
    span_ids: list[str] = []
    parent_ids: list[str] = []
    trace_states: list[str] = []
    names: list[str] = []
    kinds: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    status_codes: list[str] = []
    status_messages: list[str] = []
    attr_offsets = [0]
    attr_keys: list[str] = []
    attr_values: list[str] = []
    ev_offsets = [0]
    ev_times: list[int] = []
    ev_names: list[str] = []
    ev_attr_offsets = [0]
    ev_attr_keys: list[str] = []
    ev_attr_values: list[str] = []
    link_offsets = [0]
    link_trace_ids: list[str] = []
    link_span_ids: list[str] = []
    link_states: list[str] = []
    link_attr_offsets = [0]
    link_attr_keys: list[str] = []
    link_attr_values: list[str] = []

    res_offsets = [0]
    res_keys: list[str] = []
    res_values: list[str] = []
    services: list[str] = []
    scope_names: list[str] = []
    scope_versions: list[str] = []
    res_index: list[int] = []
    scope_index: list[int] = []
    rejected = 0

    kinds_by_number = SPAN_KINDS
    codes_by_number = STATUS_CODES
    for r_i, resource_spans in enumerate(request.resource_spans):
        before = len(res_keys)
        n_res = _fill_attrs(resource_spans.resource.attributes, res_keys, res_values)
        res_offsets.append(res_offsets[-1] + n_res)
        service = ""
        for k in range(before, before + n_res):
            if res_keys[k] == SERVICE_NAME:
                service = res_values[k]
        services.append(service)
        for scope_spans in resource_spans.scope_spans:
            s_i = len(scope_names)
            scope = scope_spans.scope
            scope_names.append(scope.name)
            scope_versions.append(scope.version)
            for span in scope_spans.spans:
                trace_id = span.trace_id
                span_id = span.span_id
                parent = span.parent_span_id
                if len(trace_id) != 16 or len(span_id) != 8 or len(parent) not in (0, 8):
                    rejected += 1
                    continue
                res_index.append(r_i)
                scope_index.append(s_i)
                trace_ids.append(trace_id.hex())
                span_ids.append(span_id.hex())
                parent_ids.append(parent.hex())
                trace_states.append(span.trace_state)
                names.append(span.name)
                kind = span.kind
                kinds.append(kinds_by_number[kind] if 0 <= kind < 6 else "Unspecified")
                starts.append(span.start_time_unix_nano)
                ends.append(span.end_time_unix_nano)
                status = span.status
                code = status.code
                status_codes.append(codes_by_number[code] if 0 <= code < 3 else "Unset")
                status_messages.append(status.message)
                attr_offsets.append(
                    attr_offsets[-1] + _fill_attrs(span.attributes, attr_keys, attr_values)
                )
                events = span.events
                if events:
                    for event in events:
                        ev_times.append(event.time_unix_nano)
                        ev_names.append(event.name)
                        ev_attr_offsets.append(
                            ev_attr_offsets[-1]
                            + _fill_attrs(event.attributes, ev_attr_keys, ev_attr_values)
                        )
                ev_offsets.append(len(ev_names))
                links = span.links
                if links:
                    for link in links:
                        link_trace_ids.append(link.trace_id.hex())
                        link_span_ids.append(link.span_id.hex())
                        link_states.append(link.trace_state)
                        link_attr_offsets.append(
                            link_attr_offsets[-1]
                            + _fill_attrs(link.attributes, link_attr_keys, link_attr_values)
                        )
                link_offsets.append(len(link_trace_ids))

    n = len(span_ids)
    if n == 0:
        reason = "invalid trace or span id" if rejected else ""
        return DecodeResult(SpanBatch.empty(), rejected, reason)

    start_arr = np.fromiter(starts, dtype=np.uint64, count=n)
    end_arr = np.fromiter(ends, dtype=np.uint64, count=n)
    # A span that ends before it starts gets duration 0 rather than a wrapped UInt64.
    durations = np.where(end_arr >= start_arr, end_arr - start_arr, 0).astype(np.uint64)

    res_take = pa.array(res_index, pa.int32())
    scope_take = pa.array(scope_index, pa.int32())
    columns = [
        pa.array(start_arr.view(np.int64), TIMESTAMP_NS),
        pa.array(trace_ids, pa.string()),
        pa.array(span_ids, pa.string()),
        pa.array(parent_ids, pa.string()),
        pa.array(trace_states, pa.string()),
        pa.array(names, pa.string()),
        pa.array(kinds, pa.string()),
        pa.array(services, pa.string()).take(res_take),
        _map_array(res_offsets, res_keys, res_values).take(res_take),
        pa.array(scope_names, pa.string()).take(scope_take),
        pa.array(scope_versions, pa.string()).take(scope_take),
        _map_array(attr_offsets, attr_keys, attr_values),
        pa.array(durations, pa.uint64()),
        pa.array(status_codes, pa.string()),
        pa.array(status_messages, pa.string()),
        _list_array(ev_offsets, pa.array(np.array(ev_times, dtype=np.int64), TIMESTAMP_NS)),
        _list_array(ev_offsets, pa.array(ev_names, pa.string())),
        _list_array(ev_offsets, _map_array(ev_attr_offsets, ev_attr_keys, ev_attr_values)),
        _list_array(link_offsets, pa.array(link_trace_ids, pa.string())),
        _list_array(link_offsets, pa.array(link_span_ids, pa.string())),
        _list_array(link_offsets, pa.array(link_states, pa.string())),
        _list_array(
            link_offsets, _map_array(link_attr_offsets, link_attr_keys, link_attr_values)
        ),
    ]
    table = pa.Table.from_arrays(columns, schema=SCHEMA)
    reason = "invalid trace or span id" if rejected else ""
    return DecodeResult(SpanBatch(table, wire_bytes), rejected, reason)


def decode_protobuf_python(body: bytes) -> DecodeResult:
    """The reference decoder (upb objects walked in Python)."""
    return decode_request(parse_protobuf(body), len(body))


# --------------------------------------------------------------------------- native


try:
    from lqo.collector.model import _otlp_native
except ImportError:  # built without a C compiler: the pure-Python path serves
    _otlp_native = None

NATIVE_AVAILABLE = _otlp_native is not None
_SPAN_KIND_DICT = pa.array(SPAN_KINDS, pa.string())
_STATUS_DICT = pa.array(STATUS_CODES, pa.string())
_MAP_NAMES = ("ResourceAttributes", "SpanAttributes", "Events.Attributes", "Links.Attributes")


def _native_str(parts: tuple[bytes, bytes]) -> pa.Array:
    offsets, data = parts
    return pa.StringArray.from_buffers(
        len(offsets) // 4 - 1, pa.py_buffer(offsets), pa.py_buffer(data)
    )


def _native_map(parts: tuple[bytes, ...], fixups: list[tuple[int, bytes]]) -> pa.Array:
    owner_offsets, k_offs, k_data, v_offs, v_data = parts
    values = _native_str((v_offs, v_data))
    if fixups:
        patched = values.to_pylist()
        for index, raw in fixups:
            try:
                patched[index] = value_to_str(AnyValue.FromString(raw))
            except (DecodeError, RecursionError) as exc:
                # The reference decoder rejects the whole request for a bad nested value.
                raise PayloadError(f"cannot decode protobuf ExportTraceServiceRequest: {exc}") from None
        values = pa.array(patched, pa.string())
    n = len(owner_offsets) // 4 - 1
    offsets = pa.Array.from_buffers(pa.int32(), n + 1, [None, pa.py_buffer(owner_offsets)])
    return pa.MapArray.from_arrays(offsets, _native_str((k_offs, k_data)), values)


def _native_list(offsets: bytes, values: pa.Array) -> pa.Array:
    n = len(offsets) // 4 - 1
    return pa.ListArray.from_arrays(
        pa.Array.from_buffers(pa.int32(), n + 1, [None, pa.py_buffer(offsets)]), values
    )


def decode_protobuf_native(body: bytes) -> DecodeResult:
    """Same result as :func:`decode_protobuf_python`, decoded by the C extension."""
    assert _otlp_native is not None
    try:
        cols = _otlp_native.decode(body)
    except ValueError as exc:
        raise PayloadError(str(exc)) from None
    n = cols["n_spans"]
    rejected = cols["rejected"]
    reason = "invalid trace or span id" if rejected else ""
    if n == 0:
        return DecodeResult(SpanBatch.empty(), rejected, reason)
    fixups: dict[int, list[tuple[int, bytes]]] = {}
    for map_id, index, raw in cols["fixups"]:
        fixups.setdefault(map_id, []).append((index, raw))

    res_take = pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(cols["span_res"])])
    scope_take = pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(cols["span_scope"])])
    u8 = lambda key: pa.Array.from_buffers(pa.uint8(), n, [None, pa.py_buffer(cols[key])])  # noqa: E731
    n_events = len(cols["ev_times"]) // 8
    columns = [
        pa.Array.from_buffers(TIMESTAMP_NS, n, [None, pa.py_buffer(cols["starts"])]),
        _native_str(cols["trace_ids"]),
        _native_str(cols["span_ids"]),
        _native_str(cols["parent_ids"]),
        _native_str(cols["trace_states"]),
        _native_str(cols["names"]),
        _SPAN_KIND_DICT.take(u8("kinds")),
        _native_str(cols["services"]).take(res_take),
        _native_map(cols["res_attrs"], fixups.get(0, [])).take(res_take),
        _native_str(cols["scope_names"]).take(scope_take),
        _native_str(cols["scope_versions"]).take(scope_take),
        _native_map(cols["attrs"], fixups.get(1, [])),
        pa.Array.from_buffers(pa.uint64(), n, [None, pa.py_buffer(cols["durations"])]),
        _STATUS_DICT.take(u8("status_codes")),
        _native_str(cols["status_messages"]),
        _native_list(cols["ev_offs"], pa.Array.from_buffers(
            TIMESTAMP_NS, n_events, [None, pa.py_buffer(cols["ev_times"])])),
        _native_list(cols["ev_offs"], _native_str(cols["ev_names"])),
        _native_list(cols["ev_offs"], _native_map(cols["ev_attrs"], fixups.get(2, []))),
        _native_list(cols["link_offs"], _native_str(cols["link_trace_ids"])),
        _native_list(cols["link_offs"], _native_str(cols["link_span_ids"])),
        _native_list(cols["link_offs"], _native_str(cols["link_states"])),
        _native_list(cols["link_offs"], _native_map(cols["link_attrs"], fixups.get(3, []))),
    ]
    table = pa.Table.from_arrays(columns, schema=SCHEMA)
    return DecodeResult(SpanBatch(table, len(body)), rejected, reason)


def _use_native() -> bool:
    return NATIVE_AVAILABLE and os.environ.get("LQO_PURE_PYTHON_DECODER", "") in ("", "0")


def decode_protobuf(body: bytes) -> DecodeResult:
    """OTLP/protobuf body → batch: the native decoder when built, else pure Python."""
    if _use_native():
        return decode_protobuf_native(body)
    return decode_protobuf_python(body)


def decode_json(body: bytes) -> DecodeResult:
    request = parse_json(body)
    if _use_native():
        # One decoder for both encodings: JSON is parsed to protobuf, then decoded natively.
        return decode_protobuf_native(request.SerializeToString())
    return decode_request(request, len(body))

