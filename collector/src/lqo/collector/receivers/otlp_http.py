"""OTLP/HTTP: ``POST /v1/traces`` (and ``/v1/logs``, for the GenAI events among log records:
``lqo.collector.model.genai_events``) with protobuf or JSON bodies, optionally gzip/deflate.

The body limit applies after decompression and is enforced while inflating, so a
small compressed body that would expand past it (a gzip bomb) is stopped at the limit
without allocating more. Responses follow the OTLP/HTTP spec: 200 with an
``ExportTraceServiceResponse`` (partial success when spans were rejected), 400 with a
``google.rpc.Status`` for undecodable bodies, 413, 415, and 503 + Retry-After when
the collector cannot take more right now.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from lqo.collector.components import ServerAuthenticator
from lqo.collector.http_server import json_error, media_type
from lqo.collector.model.genai_events import decode_logs_json, decode_logs_protobuf
from lqo.collector.model.otlp import decode_json, decode_protobuf
from lqo.collector.receivers.ingest import Ingest, Outcome, OutcomeKind, RefusedRequests

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_DECODERS = {PROTOBUF: decode_protobuf, JSON: decode_json}
_LOG_DECODERS = {PROTOBUF: decode_logs_protobuf, JSON: decode_logs_json}


class BodyTooLarge(Exception):
    pass


class BadEncoding(Exception):
    pass


class ClientGone(Exception):
    """The client closed the connection before its body arrived: nobody to answer."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, decompressed, never holding more than ``limit`` bytes of it."""
    try:
        return await _read_body(request, limit)
    except ClientDisconnect:
        raise ClientGone from None


async def _read_body(request: Request, limit: int) -> bytes:
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    declared = request.headers.get("content-length")
    if encoding in ("", "identity"):
        if declared and declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge
        return await _collect(request.stream(), limit)
    if encoding == "gzip":
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        inflater = zlib.decompressobj()
    else:
        raise BadEncoding(f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none")
    out = bytearray()
    raw = 0
    try:
        async for chunk in request.stream():
            raw += len(chunk)
            if raw > limit:
                raise BodyTooLarge
            data = chunk
            while data:
                out += inflater.decompress(data, limit + 1 - len(out))
                if len(out) > limit:
                    raise BodyTooLarge
                data = inflater.unconsumed_tail
        out += inflater.flush(limit + 1 - len(out))
    except zlib.error as exc:
        raise BadEncoding(f"body is not valid {encoding}: {exc}") from None
    if len(out) > limit:
        raise BodyTooLarge
    if not inflater.eof:
        raise BadEncoding(f"{encoding} body is truncated")
    return bytes(out)


async def _collect(stream: AsyncIterator[bytes], limit: int) -> bytes:
    out = bytearray()
    async for chunk in stream:
        out += chunk
        if len(out) > limit:
            raise BodyTooLarge
    return bytes(out)


def _status_body(code: int, message: str, content_type: str) -> bytes:
    if content_type == JSON:
        return json.dumps({"code": code, "message": message}).encode()
    return status_pb2.Status(code=code, message=message).SerializeToString()


def _error(http_status: int, grpc_code: int, message: str, content_type: str,
           headers: dict[str, str] | None = None) -> Response:
    media = content_type if content_type in _DECODERS else JSON
    return Response(
        _status_body(grpc_code, message, media), status_code=http_status,
        media_type=media, headers=headers,
    )


def build_router(ingest: Ingest, path: str, max_body: int, retry_after_s: int,
                 logs_path: str | None = None) -> APIRouter:
    router = APIRouter()

    def traces_response(outcome: Outcome) -> Message:
        response = ExportTraceServiceResponse()
        if outcome.rejected:
            response.partial_success.CopyFrom(
                ExportTracePartialSuccess(rejected_spans=outcome.rejected, error_message=outcome.message))
        return response

    _export_route(router, path, _DECODERS, ingest.handle, traces_response, ingest, max_body, retry_after_s)
    if logs_path:
        _export_route(router, logs_path, _LOG_DECODERS, ingest.handle_logs,
                      lambda outcome: ExportLogsServiceResponse(), ingest, max_body, retry_after_s)
    return router


def _export_route(router: APIRouter, path: str, decoders: dict[str, Any], handle: Any, respond: Any,
                  ingest: Ingest, max_body: int, retry_after_s: int) -> None:
    """``POST path``: an OTLP export request, decoded by ``decoders[content type]`` and taken by
    ``handle``; ``respond`` makes the success response from its Outcome."""

    @router.post(path)
    async def export(request: Request) -> Response:
        content_type = media_type(request)
        decode = decoders.get(content_type)
        if decode is None:
            ingest.refuse("http", "unsupported_media_type")
            return _error(
                415, 3,
                f"unsupported Content-Type {content_type or '(none)'!r}; "
                f"send {PROTOBUF} or {JSON}",
                JSON,
            )
        try:
            body = await read_body(request, max_body)
        except BodyTooLarge:
            ingest.refuse("http", "too_large")
            return _error(
                413, 8, f"request body exceeds the {max_body}-byte limit after decompression; "
                "send smaller batches or raise max_request_body_size", content_type,
            )
        except BadEncoding as exc:
            ingest.refuse("http", "invalid_payload")
            return _error(400, 3, str(exc), content_type)
        except ClientGone:
            return Response(status_code=400)  # never delivered; nothing was accepted

        outcome = handle(body, decode, "http")
        if outcome.kind is OutcomeKind.INVALID:
            return _error(400, 3, outcome.message, content_type)
        if outcome.kind is OutcomeKind.UNAVAILABLE:
            return _error(503, 14, outcome.message, content_type,
                          {"Retry-After": str(retry_after_s)})
        response = respond(outcome)
        if content_type == JSON:
            payload = json_format.MessageToJson(response, indent=None).encode()
        else:
            payload = response.SerializeToString()
        return Response(payload, status_code=200, media_type=content_type)


QUERY_PREFIX = "/api/"


class RequireAuth:
    """ASGI middleware: 401 for every request on the server (OTLP, /v1/evaluate, /api/v1/*) that
    its authenticator refuses, answered before the body is read: ``query_auth``'s for /api/*
    when set, ``auth``'s otherwise (None: open). The OTLP path answers with a
    ``google.rpc.Status`` in the request's encoding, as the OTLP/HTTP spec asks of every 4xx."""

    def __init__(self, app: ASGIApp, auth: ServerAuthenticator | None, ingest: RefusedRequests,
                 otlp_paths: frozenset[str] = frozenset(), query_auth: ServerAuthenticator | None = None,
                 open_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.auth = auth
        self.query_auth = query_auth
        self.ingest = ingest
        self.otlp_paths = otlp_paths  # answered with a google.rpc.Status, as OTLP/HTTP asks
        self.open_paths = open_paths  # answered without credentials (health probes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        auth = self.auth
        if scope["type"] == "http" and self.query_auth is not None and scope["path"].startswith(QUERY_PREFIX):
            auth = self.query_auth
        if scope["type"] != "http" or auth is None or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        values = Headers(scope=scope).getlist(auth.header)
        if len(values) == 1 and auth.authenticate(values[0]):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        self.ingest.refuse_request("http", "unauthenticated", f"{client[0]}:{client[1]}" if client else "")
        message = f"missing or invalid credentials in the {auth.header} header"
        challenge = {"WWW-Authenticate": auth.challenge}
        if scope.get("path") in self.otlp_paths:
            response = _error(401, 16, message, media_type(Request(scope)), challenge)
        else:
            response = json_error(401, message, challenge)
        await response(scope, receive, send)
