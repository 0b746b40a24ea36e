"""Erasing one person's or one conversation's stored data: ``lqo erase`` and ``POST /api/v1/erase``.

A request to erase someone's data (GDPR art. 17 and its kin) names them by an identifier the
spans carry: a user (``user.id`` or ``enduser.id``), a conversation (``gen_ai.conversation.id``
or ``session.id``) or a trace id. Every trace with a span that carries the identifier is erased
whole — from the spans table, the GenAI calls table, the trace-id lookup, and the evaluation
results of its calls (by span, or by the call's response id) — since prompts and
answers can sit on any span of the trace (a framework's, a tool's), not only on the one that
names the user. A trace that also holds other users' calls goes too. The per-minute roll-ups
keep their counts: they hold no identifier and no content.

Without ``confirm`` it only counts what would go. With it, each table gets ``ALTER TABLE …
DELETE`` mutations that are waited for (``mutations_sync = 2``: every replica): the parts holding
the rows are rewritten without them, so the rows are gone from the tables when the call returns,
and ClickHouse removes the old parts from disk after ``old_parts_lifetime`` (8 minutes by
default). Lightweight ``DELETE FROM`` would only hide the rows until their parts next merge,
which for an old part may be never. The trace ids go into the statements as literals, in
chunks of ``CHUNK`` (under ClickHouse's 256 KiB ``max_query_size``): a replicated mutation must
name its rows itself, since each replica runs it alone. Spans of an erased trace still on their
way (in the collector's queues, or sent later) are stored afterwards: run it again.

Finding the traces reads ``SpanAttributes`` only in the granules that the spans table's bloom
filter on its attribute values (``idx_span_attr_value``) lets through, where the identifier may
be (4 granules of 37 for a user on 3 spans of 300,000, with 100,000 users). Nothing identifying
is logged: the collector logs what kind of identifier was erased and how many traces, never the
identifier.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool

from lqo.collector.exporters.clickhouse.backends import Backend, StoreError, literal
from lqo.collector.exporters.clickhouse.schema import SchemaSpec, quote_ident
from lqo.collector.http_server import json_error
from lqo.collector.receivers.otlp_http import BadEncoding, BodyTooLarge, ClientGone, read_body

log = logging.getLogger(__name__)

# The span attributes that name each kind of identifier (the GenAI table's UserId and
# ConversationId come from the same ones, genai_normalize having renamed the producers' own).
KEYS = {
    "user": ("user.id", "enduser.id"),
    "conversation": ("gen_ai.conversation.id", "session.id"),
}
KINDS = (*KEYS, "trace")
MAX_ID_CHARS = 1024
CHUNK = 6000  # trace ids per statement: ~35 bytes each as a literal, well under 256 KiB
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


class EraseRefused(ValueError):
    pass


@dataclass
class Selector:
    kind: str  # user, conversation or trace
    value: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise EraseRefused(f"unknown identifier kind {self.kind!r}; use one of {', '.join(KINDS)}")
        if not self.value or not self.value.strip():
            raise EraseRefused(f"the {self.kind} identifier is empty")
        if len(self.value) > MAX_ID_CHARS:
            raise EraseRefused(f"the {self.kind} identifier is longer than {MAX_ID_CHARS} characters")
        if self.kind == "trace":
            self.value = self.value.strip().lower()
            if not _TRACE_ID.fullmatch(self.value):
                raise EraseRefused("a trace id is 32 hexadecimal digits")


@dataclass
class Outcome:
    kind: str
    traces: int
    spans: int
    genai_rows: int  # rows of the GenAI calls table (agents' and tools' spans have rows too)
    evaluations: int  # evaluation results of those calls (by span, or by the call's response id)
    erased: bool


def traces_sql(schema: SchemaSpec, selector: Selector) -> str:
    """The ids of the traces to erase."""
    table = f"{quote_ident(schema.database)}.{quote_ident(schema.table)}"
    if selector.kind == "trace":
        where = f"TraceId = {literal(selector.value)}"
    else:
        where = " OR ".join(f"SpanAttributes[{literal(key)}] = {literal(selector.value)}" for key in KEYS[selector.kind])
    return f"SELECT DISTINCT TraceId FROM {table} WHERE {where}"


def _name(schema: SchemaSpec, table: str) -> str:
    return f"{quote_ident(schema.database)}.{quote_ident(table)}"


def _chunks(values: list[str]) -> list[str]:
    return [", ".join(literal(v) for v in values[at:at + CHUNK]) for at in range(0, len(values), CHUNK)]


def _count(backend: Backend, table: str, where: list[str]) -> int:
    total = 0
    for condition in where:
        out = backend.query(f"SELECT count() FROM {table} WHERE {condition}", "TSVRaw")
        total += int(out.decode().strip() or 0)
    return total


def _response_ids(backend: Backend, genai: str, in_lists: list[str]) -> list[str]:
    """The response ids of the erased traces' calls: evaluations may name a call only by it."""
    found: set[str] = set()
    for in_list in in_lists:
        out = backend.query(f"SELECT DISTINCT ResponseId FROM {genai} WHERE TraceId IN ({in_list}) "
                            "AND ResponseId != ''", "TSVRaw")
        found.update(line for line in out.decode().splitlines() if line)
    return sorted(found)


def _count_rows(backend: Backend, table: str, where: list[str]) -> int:
    """Rows that any of ``where`` picks, each once (the conditions may overlap): counted by a
    row's identity, which evaluation results have no column for alone."""
    seen: set[str] = set()
    for condition in where:
        out = backend.query(f"SELECT Timestamp, TraceId, SpanId, ResponseId, Name FROM {table} WHERE {condition}",
                            "TSVRaw")
        seen.update(line for line in out.decode().splitlines() if line)
    return len(seen)


def erase(backend: Backend, schema: SchemaSpec, selector: Selector, confirm: bool) -> Outcome:
    """Counts the traces, spans, GenAI rows and evaluation results ``selector`` names; erases
    them if ``confirm``. Each table's rows go before the spans' (a stop midway leaves the spans,
    from which a second run finds the traces again). Evaluation results go with their calls (by
    trace, or by the calls' response ids), and those that name the user or conversation
    themselves (``user.id``… among their attributes) even when their call is not stored."""
    found = backend.query(traces_sql(schema, selector), "TSVRaw").decode().split()
    ids = sorted({i for i in found if _TRACE_ID.fullmatch(i)})
    by_trace = [f"TraceId IN ({in_list})" for in_list in _chunks(ids)]
    plan: list[tuple[str, list[str]]] = []  # (table, the conditions that pick its rows)
    evaluations_where: list[str] = []
    if schema.genai:
        genai = _name(schema, schema.genai_table)
        responses = _response_ids(backend, genai, _chunks(ids)) if ids else []
        evaluations_where = by_trace + [f"ResponseId IN ({in_list})" for in_list in _chunks(responses)]
        if selector.kind in KEYS:
            evaluations_where.append(" OR ".join(f"Attributes[{literal(key)}] = {literal(selector.value)}"
                                                 for key in KEYS[selector.kind]))
        plan += [(_name(schema, schema.evaluations_table), evaluations_where), (genai, by_trace)]
    plan += [(_name(schema, schema.lookup_table), by_trace), (_name(schema, schema.table), by_trace)]
    evaluations_table = _name(schema, schema.evaluations_table)
    counts = {table: _count(backend, table, where) for table, where in plan if table != evaluations_table}
    evaluations = _count_rows(backend, evaluations_table, evaluations_where) if evaluations_where else 0
    spans = counts.get(_name(schema, schema.table), 0)
    calls = counts.get(_name(schema, schema.genai_table), 0)
    anything = bool(ids) or evaluations > 0
    if confirm and anything:
        for table, where in plan:
            for condition in where:
                backend.execute(f"ALTER TABLE {table} DELETE WHERE {condition} SETTINGS mutations_sync = 2")
        log.info("erased %d trace(s) (%d spans, %d GenAI rows, %d evaluation results) named by a %s identifier",
                 len(ids), spans, calls, evaluations, selector.kind)
    return Outcome(selector.kind, len(ids), spans, calls, evaluations, confirm and anything)


class EraseRequest(BaseModel):
    user: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    conversation: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    trace: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    confirm: bool = False

    @model_validator(mode="after")
    def _one(self) -> EraseRequest:
        given = [k for k in KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("name exactly one of user, conversation, trace")
        return self

    def selector(self) -> Selector:
        kind = next(k for k in KINDS if getattr(self, k) is not None)
        return Selector(kind, getattr(self, kind))


def build_erase_router(get_target: Callable[[], tuple[Backend, SchemaSpec] | None]) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.post("/erase")
    async def erase_route(request: Request) -> Response:
        try:
            raw = await read_body(request, 16 * 1024)
        except BodyTooLarge:
            return json_error(413, "erase request over 16 KiB")
        except BadEncoding as exc:
            return json_error(400, str(exc))
        except ClientGone:
            return Response(status_code=400)
        try:
            req = EraseRequest.model_validate_json(raw)
            selector = req.selector()
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "body"
            return json_error(400, f"{loc}: {first['msg']}; send {{\"user\": \"…\", \"confirm\": false}}")
        except EraseRefused as exc:
            return json_error(400, str(exc))
        target = get_target()
        if target is None:
            return json_error(503, "store not ready")
        try:  # a mutation may take minutes: not on the event loop that serves intake
            outcome = await run_in_threadpool(erase, *target, selector, req.confirm)
        except StoreError as exc:
            return json_error(500, f"erasing failed: {exc}; nothing or part was erased, run it again")
        return Response(json.dumps(asdict(outcome)), media_type="application/json")

    return router


def outcome_text(outcome: dict[str, Any]) -> str:
    """What ``lqo erase`` prints."""
    what = (f"{outcome['traces']} trace(s): {outcome['spans']} span(s), {outcome['genai_rows']} GenAI row(s), "
            f"{outcome['evaluations']} evaluation result(s)")
    if outcome["erased"]:
        return f"erased {what}"
    if not outcome["traces"] and not outcome["evaluations"]:
        return f"nothing stored names this {outcome['kind']}"
    return f"would erase {what}; run again with --yes to erase them"
