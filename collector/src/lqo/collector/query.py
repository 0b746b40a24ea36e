"""Read-only SQL against the store: the ``/api/v1/query`` route and ``lqo query``.

Two guards: statements other than SELECT/WITH/SHOW/DESCRIBE/EXPLAIN/EXISTS are refused
up front with a clear message, and every query runs on a connection with ClickHouse's
``readonly = 1`` (which also blocks table functions such as ``file()`` and ``url()``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from lqo.collector.exporters.clickhouse.backends import Backend, StoreError
from lqo.collector.http_server import json_error
from lqo.collector.receivers.otlp_http import BadEncoding, BodyTooLarge, ClientGone, read_body

FORMATS = {
    "table": "PrettyCompactMonoBlock",
    "json": "JSONEachRow",
    "csv": "CSVWithNames",
    "tsv": "TSVWithNames",
}
_READ_KEYWORDS = ("SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS")
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
MAX_SQL_BYTES = 64 * 1024


class QueryRefused(ValueError):
    pass


def check_read_only(sql: str) -> str:
    """The statement, stripped, if it is a single read-only statement."""
    text = _COMMENTS.sub(" ", sql).strip().rstrip(";").strip()
    if not text:
        raise QueryRefused("empty query")
    if ";" in _strip_literals(text):
        raise QueryRefused("one statement at a time, please")
    first = text.split(None, 1)[0].upper().lstrip("(")
    if first not in _READ_KEYWORDS:
        raise QueryRefused(
            f"{first} is not allowed: lqo query is read-only "
            f"({', '.join(_READ_KEYWORDS)})"
        )
    return text


def _strip_literals(text: str) -> str:
    return re.sub(r"'(?:[^'\\]|\\.)*'|`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"", "''", text)


def run_query(backend: Backend, sql: str, fmt: str) -> bytes:
    if fmt not in FORMATS:
        raise QueryRefused(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    return backend.query(check_read_only(sql), FORMATS[fmt])


class QueryRequest(BaseModel):
    sql: str = Field(max_length=MAX_SQL_BYTES)
    format: str = "json"


def build_query_router(get_backend: Callable[[], Backend | None]) -> APIRouter:
    router = APIRouter(prefix="/api/v1")

    @router.post("/query")
    async def query(request: Request) -> Response:
        try:  # read with a limit: a body past it is never held in memory
            raw = await read_body(request, MAX_SQL_BYTES + 1024)
        except BodyTooLarge:
            return json_error(413, f"query request over {MAX_SQL_BYTES} bytes")
        except BadEncoding as exc:
            return json_error(400, str(exc))
        except ClientGone:
            return Response(status_code=400)  # never delivered
        try:
            req = QueryRequest.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "body"
            return json_error(400, f"{loc}: {first['msg']}; send {{\"sql\": \"SELECT …\", \"format\": \"json\"}}")
        backend = get_backend()
        if backend is None:
            return json_error(503, "store not ready")
        try:  # on a worker thread: the event loop also serves OTLP/HTTP intake, which a long
            # query must not hold up
            body = await run_in_threadpool(run_query, backend, req.sql, req.format)
        except QueryRefused as exc:
            return json_error(400, str(exc))
        except StoreError as exc:
            return json_error(400, str(exc))
        return Response(body, media_type="text/plain; charset=utf-8")

    return router
