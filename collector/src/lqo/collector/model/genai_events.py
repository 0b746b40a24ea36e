"""GenAI events sent as OTLP log records, put back on their spans.

Several instrumentations record an LLM call's messages not on its span but as log-based events
beside it: Node's ``@opentelemetry/instrumentation-openai`` (``gen_ai.user.message``,
``gen_ai.choice``…, and ``gen_ai.client.inference.operation.details`` for the Responses API),
Python's openai-v2 in ``EVENT_ONLY`` mode, any producer that follows the semantic conventions'
events. Each log record names its span (trace and span id). The collector's checks read
messages from spans, so the OTLP receivers take log records too (``/v1/logs``,
``LogsService/Export``): the GenAI events among them wait in an :class:`EventBuffer`, and each
is added to its span as a span event when the span comes through the pipeline, where
``genai_normalize`` reads span events of these names into ``gen_ai.input.messages`` /
``gen_ai.output.messages`` as it does for every producer. Other log records are counted and
dropped: the collector stores traces.

Evaluation results (``gen_ai.evaluation.result``: a user's thumbs-down, an offline judge's
score) are different: they are usually sent *after* the call, often from another request, and
name it by its span or only by ``gen_ai.response.id``. They do not wait for a span: each
becomes an :class:`Evaluation`, a row of the GenAI evaluations table (``lqo.collector.evaluations``).

Events usually come first (an SDK exports log records every second and spans every five by
default), but not always: a GenAI span without messages, of a scope that has sent such events
(``EventBuffer.scopes``), waits a moment in the pipeline for them (``hold_for_events``). An event
whose span has already gone through is not attached; one that waits longer
than ``ttl`` is dropped, and the buffer holds at most ``max_events`` and ``max_bytes`` (the oldest
spans' events go first). Each outcome is counted.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from lqo.collector.model.otlp import PayloadError, parse_json_as, value_to_str
from lqo.collector.model.spanbatch import SCHEMA, SpanBatch

EVENT_PREFIX = "gen_ai."
MAX_SCOPES = 1024  # scopes remembered as sending GenAI events
EVALUATION_EVENT = "gen_ai.evaluation.result"
_EVENT_NAME_ATTRIBUTE = "event.name"
# Evaluation attributes with columns of their own; the rest go to the row's Attributes.
EVALUATION_NAME = "gen_ai.evaluation.name"
SCORE_VALUE = "gen_ai.evaluation.score.value"
SCORE_LABEL = "gen_ai.evaluation.score.label"
EXPLANATION = "gen_ai.evaluation.explanation"
RESPONSE_ID = "gen_ai.response.id"
MAX_EVALUATION_TEXT = 4096  # the explanation and each other value: longer text is cut (marked)
MAX_EVALUATION_ID = 256  # the name, label and response id: longer ones make the record invalid


@dataclass(frozen=True)
class Event:
    key: str  # trace id + span id, hex: the span it belongs to
    name: str
    time_ns: int
    attributes: dict[str, str]
    scope: str = ""  # the instrumentation scope that logged it (its spans' scope too, as a rule)

    @cached_property
    def size(self) -> int:
        """About the bytes it holds (its attributes' text)."""
        return sum(len(k) + len(v) for k, v in self.attributes.items()) + len(self.name)


@dataclass(frozen=True)
class Evaluation:
    """One ``gen_ai.evaluation.result``: a row of the GenAI evaluations table."""

    time_ns: int
    trace_id: str  # hex, "" when the record names no span (then response_id names the call)
    span_id: str
    response_id: str
    service: str
    name: str
    score: float | None
    label: str
    explanation: str
    attributes: dict[str, str]

    @cached_property
    def size(self) -> int:
        return (sum(len(k) + len(v) for k, v in self.attributes.items()) + len(self.explanation)
                + len(self.name) + len(self.label) + len(self.response_id) + 96)


@dataclass
class LogsDecodeResult:
    events: list[Event] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)
    ignored: int = 0  # log records that are not GenAI events of a span
    invalid: int = 0  # evaluation results without a name, or naming no call


def _cut(text: str) -> str:
    return text if len(text) <= MAX_EVALUATION_TEXT else text[:MAX_EVALUATION_TEXT] + "…[truncated]"


def _score(text: str | None) -> float | None:
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def _evaluation(record: LogRecord, attributes: dict[str, str], service: str) -> Evaluation | None:
    """The record as an evaluation row, or None when it names no evaluation or no call."""
    name = attributes.pop(EVALUATION_NAME, "")
    response_id = attributes.pop(RESPONSE_ID, "")
    has_span = (len(record.trace_id) == 16 and len(record.span_id) == 8 and any(record.trace_id)
                and any(record.span_id))
    if (not name or len(name) > MAX_EVALUATION_ID or len(response_id) > MAX_EVALUATION_ID
            or not (has_span or response_id)):
        return None
    label = attributes.pop(SCORE_LABEL, "")
    return Evaluation(
        time_ns=record.time_unix_nano or record.observed_time_unix_nano or time.time_ns(),  # (none: received now)
        trace_id=record.trace_id.hex() if has_span else "",
        span_id=record.span_id.hex() if has_span else "",
        response_id=response_id,
        service=service,
        name=name,
        score=_score(attributes.pop(SCORE_VALUE, None)),
        label=label[:MAX_EVALUATION_ID],
        explanation=_cut(attributes.pop(EXPLANATION, "")),
        attributes={k[:MAX_EVALUATION_ID]: _cut(v) for k, v in list(attributes.items())[:64]},
    )


def parse_logs_protobuf(body: bytes) -> ExportLogsServiceRequest:
    try:
        return ExportLogsServiceRequest.FromString(body)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise PayloadError(f"cannot decode protobuf ExportLogsServiceRequest: {exc}") from None


def parse_logs_json(body: bytes) -> ExportLogsServiceRequest:
    return parse_json_as(body, ExportLogsServiceRequest(), "resourceLogs")


def decode_logs(request: ExportLogsServiceRequest) -> LogsDecodeResult:
    """The GenAI events of a span among the request's log records. An event's attributes are the
    record's, and the top-level entries of a map body (``content``, ``message``, ``role``…), each
    as the spans table stores values (structures as JSON): the shape of the same event recorded
    on a span."""
    out = LogsDecodeResult()
    for resource_logs in request.resource_logs:
        service = ""
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                name = record.event_name or next(
                    (kv.value.string_value for kv in record.attributes if kv.key == _EVENT_NAME_ATTRIBUTE), "")
                evaluation = name == EVALUATION_EVENT
                if not evaluation and (
                        not name.startswith(EVENT_PREFIX) or len(record.trace_id) != 16 or len(record.span_id) != 8
                        or not any(record.trace_id) or not any(record.span_id)):
                    out.ignored += 1
                    continue
                attributes = {kv.key: value_to_str(kv.value) for kv in record.attributes
                              if kv.key != _EVENT_NAME_ATTRIBUTE}
                body = record.body
                if body.WhichOneof("value") == "kvlist_value":
                    for kv in body.kvlist_value.values:
                        attributes.setdefault(kv.key, value_to_str(kv.value))
                elif body.WhichOneof("value") is not None:
                    attributes.setdefault("body", value_to_str(body))
                if evaluation:
                    if not service:
                        service = next((kv.value.string_value for kv in resource_logs.resource.attributes
                                        if kv.key == "service.name"), "") or "unknown_service"
                    row = _evaluation(record, attributes, service)
                    if row is None:
                        out.invalid += 1
                    else:
                        out.evaluations.append(row)
                    continue
                out.events.append(Event(record.trace_id.hex() + record.span_id.hex(), name,
                                        record.time_unix_nano or record.observed_time_unix_nano, attributes,
                                        scope_logs.scope.name))
    return out


def decode_logs_protobuf(body: bytes) -> LogsDecodeResult:
    return decode_logs(parse_logs_protobuf(body))


def decode_logs_json(body: bytes) -> LogsDecodeResult:
    return decode_logs(parse_logs_json(body))


class EventBuffer:
    """GenAI events waiting for their span, by span; bounded in count, bytes and age."""

    OUTCOMES = ("attached", "expired", "dropped")

    def __init__(self, max_events: int = 50_000, max_bytes: int = 64 * 1024**2, ttl: float = 120.0,
                 counted: dict | None = None) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._lock = threading.Lock()
        self._by_span: OrderedDict[str, tuple[float, list[Event]]] = OrderedDict()  # oldest first
        self._count = 0
        self._bytes = 0
        self.counted = counted  # outcome → a counter with .inc(n): attached, expired, dropped
        # Instrumentation scopes that have sent GenAI events, most recent last: their GenAI spans
        # may come before their events (the pipeline holds those a moment, ``hold_for_events``).
        self.scopes: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        return self._count

    def _inc(self, outcome: str, n: int) -> None:
        if self.counted is not None and n:
            self.counted[outcome].inc(n)

    def add(self, events: list[Event]) -> None:
        now = time.monotonic()
        with self._lock:
            for scope in {e.scope for e in events if e.scope}:
                self.scopes[scope] = None
                self.scopes.move_to_end(scope)
                if len(self.scopes) > MAX_SCOPES:
                    self.scopes.popitem(last=False)
            for event in events:
                entry = self._by_span.get(event.key)
                if entry is None:
                    self._by_span[event.key] = (now, [event])
                else:
                    entry[1].append(event)
                self._count += 1
                self._bytes += event.size
            self._evict(now)

    def waiting(self, keys: list[str]) -> np.ndarray:
        """Per span key (trace id + span id, hex): are events waiting for it?"""
        with self._lock:
            return np.fromiter((k in self._by_span for k in keys), dtype=bool, count=len(keys))

    def _evict(self, now: float) -> None:  # under the lock
        expired = dropped = 0
        while self._by_span:
            key, (added, events) = next(iter(self._by_span.items()))
            if now - added > self.ttl:
                expired += len(events)
            elif self._count > self.max_events or self._bytes > self.max_bytes:
                dropped += len(events)
            else:
                break
            del self._by_span[key]
            self._count -= len(events)
            self._bytes -= sum(e.size for e in events)
        self._inc("expired", expired)
        self._inc("dropped", dropped)

    def attach(self, batch: SpanBatch) -> SpanBatch:
        """``batch`` with the waiting events of its spans added to their span events (the rows
        that get some are moved to the end of the batch). Only GenAI spans are looked up."""
        with self._lock:
            self._evict(time.monotonic())
            if not self._by_span or not len(batch):
                return batch
        table = batch.table
        keys = pc.binary_join_element_wise(table.column("TraceId"), table.column("SpanId"), "")
        wanted = keys.filter(pa.array(batch.genai_mask()))
        with self._lock:
            found = self._by_span.keys() & set(wanted.to_pylist())
            if not found:
                return batch
            waiting = {key: self._by_span.pop(key)[1] for key in found}
            attached = sum(len(events) for events in waiting.values())
            self._count -= attached
            moved = sum(e.size for events in waiting.values() for e in events)
            self._bytes -= moved
        self._inc("attached", attached)
        matched = pc.is_in(keys, pa.array(list(found), pa.string()))
        hits = table.filter(matched)
        names = hits.column("Events.Name").to_pylist()
        stamps = hits.column("Events.Timestamp").cast(pa.list_(pa.int64())).to_pylist()
        attrs = hits.column("Events.Attributes").to_pylist()
        for i, key in enumerate(keys.filter(matched).to_pylist()):
            events = sorted(waiting[key], key=lambda e: e.time_ns)
            names[i] = [*(names[i] or []), *(e.name for e in events)]
            stamps[i] = [*(stamps[i] or []), *(e.time_ns for e in events)]
            attrs[i] = [*(attrs[i] or []), *(list(e.attributes.items()) for e in events)]
        for name, values, kind in (("Events.Name", names, None), ("Events.Timestamp", stamps, pa.list_(pa.int64())),
                                   ("Events.Attributes", attrs, None)):
            column_type = SCHEMA.field(name).type
            array = pa.array(values, kind or column_type)
            hits = hits.set_column(SCHEMA.get_field_index(name), SCHEMA.field(name), array.cast(column_type))
        return SpanBatch(pa.concat_tables([table.filter(pc.invert(matched)), hits]), batch.approx_bytes + moved)
