"""One instrumented LLM call: span start, response reading (whole or streamed), telemetry at end.

The application's thread makes the span current as a placeholder whose context (ids, sampling
decision, and whether this is an LLM call at all) waits until someone asks for it (see
``_spans``), and keeps references to the request and response; the verdict, the SDK span,
decoding and the span's end run on the telemetry worker (see ``_worker``).
"""

from __future__ import annotations

import json
from time import perf_counter, time_ns
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
from opentelemetry.trace import Status, StatusCode, set_span_in_context

from ._content import bounded_json
from ._record import CallRecord, as_str
from ._sniff import request_model
from ._spans import DeferredSpan
from ._streams import StreamParser, proxy_class
from ._telemetry import Telemetry

# Larger request bodies (inline images, huge prompts) are not parsed: the span still gets the
# operation, provider, model and server.
MAX_REQUEST_PARSE_BYTES = 4 * 1024 * 1024
EVENT_NAME = "gen_ai.client.inference.operation.details"
_ERROR_TYPE = "error.type"
_SERVER_ADDRESS = "server.address"
_SERVER_PORT = "server.port"


_UNSEEN = object()


def _content_type(headers: Any) -> str:
    return (headers.get("content-type") or "").lower()


def _stream_kind(content_type: str) -> str:
    """``StreamParser``'s kind for a response's content type (``json``: not a stream)."""
    if "event-stream" in content_type:
        return "sse"
    if "ndjson" in content_type:
        return "ndjson"
    if "amazon.eventstream" in content_type:
        return "eventstream"
    return "json"


def start_call(tel: Telemetry, request: Any, ctx: Any) -> Call | None:
    """A Call for an LLM API request, or None for any other request (the common, cheap path).

    Runs on the application's call path (``ctx``: its current context). Whether a POST to an
    LLM API path is an LLM call depends on its body: a JSON object with a model
    (``_sniff.request_model``). Where the span can wait whole for the worker
    (``SpanStarter.deferrable``) that is decided there, or when the span's context is first
    asked for; else here, before the span starts.
    """
    if request.method != "POST":
        return None
    url = request.url
    try:  # the path as sent (percent-encoded), the cache's key: `url.path` decodes it, ~0.5 µs
        key = url._uri_reference.path
    except AttributeError:  # an httpx without it
        key = url.path
    route = tel.routes.get(key, _UNSEEN)  # the router's cache, read without a call
    if route is _UNSEEN:
        route = tel.router.route(url.path, key)
    if route is None:
        return None
    tracer = tel.spans.deferred_tracer or tel.spans.deferrable()
    if tracer is not None:
        return Call(tel, route, None, request, ctx, tracer)
    model = request_model(request)
    if not model:
        return None
    return Call(tel, route, model, request, ctx, None)


class Call:
    """One call. ``__init__``, ``on_response`` and ``end`` run on the application's thread and
    only take timestamps and references; the rest runs on the telemetry worker (``_worker``)."""

    # Defaults on the class, not set per call: each instance write is time on the call path.
    _provider = ""  # these three: by _describe, from the request's URL
    host = ""
    port = 0
    _status = 0
    _headers: Any = None
    _parser: StreamParser | None = None
    _accumulator: Any = None
    rec: CallRecord | None = None
    first_chunk: float | None = None
    _ended = False
    _ctx: Any = None  # the caller's context where the span started eagerly (deferred: the span's)

    def __init__(self, tel: Telemetry, route: tuple[Any, str], model: str | None, request: Any, ctx: Any,
                 deferred_tracer: Any) -> None:
        self._tel = tel
        self._family, self.operation = route
        self._model = model
        self._request = request  # its body and URL: read on the worker (or by a first _describe)
        if deferred_tracer is not None:  # model (is it an LLM call?) and ids: when first needed
            self.span = self._pending = DeferredSpan(tel.spans, deferred_tracer, ctx, time_ns(), request)
        else:
            self.span, self._pending = tel.spans.start(ctx, self._describe)
            self._ctx = ctx
        self._start = perf_counter()

    def _describe(self) -> tuple[str, dict[str, Any]]:
        """The span's name and the attributes samplers see at creation (semconv: operation,
        provider, model, server); on the worker unless a sampler must be asked on the call path.
        Always called before the worker records anything."""
        self._resolve_server()
        model = self._model
        attrs: dict[str, Any] = {ga.GEN_AI_OPERATION_NAME: self.operation, ga.GEN_AI_PROVIDER_NAME: self._provider}
        if model:
            attrs[ga.GEN_AI_REQUEST_MODEL] = model
        attrs[_SERVER_ADDRESS] = self.host
        attrs[_SERVER_PORT] = self.port
        return (f"{self.operation} {model}" if model else self.operation), attrs

    def _resolve_server(self) -> None:
        """server.address / server.port and the provider, from the request's URL (once)."""
        if not self._provider:
            url = self._request.url
            self.host = host = url.host
            self.port = port = url.port or (443 if url.scheme == "https" else 80)
            self._provider = self._tel.router.provider(self._family, host, port)

    # --- on the application's thread -----------------------------------------------------

    def on_response(self, response: Any, stream_base: type, is_async: bool) -> None:
        if getattr(response, "is_closed", True):  # read whole by the client (or never to be read)
            if not self._ended:  # as end(), one call less
                # Status, headers and body now, not the response: held until the worker runs, a
                # response (and its request, URL, streams…) would outlive the call by up to a
                # batch, and garbage collections on the application's thread would find it there
                # (twice as many, each twice as long: bench/BENCHMARKS.md, session 16).
                self._status = status = response.status_code
                self._headers = response.headers
                body = None
                if status < 400:  # an error: its status is all we report
                    try:
                        body = response.content
                    except Exception:  # closed unread
                        pass
                self._ended = True  # after the reads: if one raises, send() ends the call with end()
                self._tel.worker.submit(self._complete, None, body, perf_counter() - self._start, time_ns())
            return
        # A streamed response, watched as the SDK reads it. Status and headers only: the stream
        # proxy holds this call, which must not hold the response (and through it the proxy), or
        # an abandoned stream would end only at a garbage collection, not when dropped.
        self._status = response.status_code
        self._headers = response.headers
        if self._status >= 400:  # the error is all we report; the body is the SDK's
            self.end(None)
            return
        response.stream = proxy_class(stream_base, is_async)(response.stream, self)

    def end(self, error: BaseException | None, body: bytes | None = None) -> None:
        """Ends the call exactly once: timestamps here, telemetry on the worker; never raises."""
        if self._ended:
            return
        self._ended = True
        self._tel.worker.submit(self._complete, error, body, perf_counter() - self._start, time_ns())

    def feed(self, chunks: list[bytes]) -> None:
        """A batch of streamed body bytes, passed on to the worker in arrival order."""
        self._tel.worker.submit(self._feed, chunks)

    # --- on the worker ---------------------------------------------------------------------

    def _materialize(self) -> bool:
        """The SDK span, if the call path left it to the worker (``_spans``); first thing on the
        worker. False: not an LLM call after all (no model), and nothing is recorded."""
        pending = self._pending
        if pending is not None:
            if self._model is None:
                model = pending.genai_model()
                if not model:
                    self._request = None
                    return False
                self._model = model
            self._pending = None
            self._ctx = pending.parent
            self.span = self._tel.spans.materialize(pending, self._describe)
        return self._model is not None

    def _record(self) -> CallRecord:
        """The call's record with the request decoded (once, on first use)."""
        rec = self.rec
        if rec is not None:
            return rec
        rec = self.rec = CallRecord(self.operation, self._tel.capture_mode.captures)
        rec.text_limit = self._tel.content_max_bytes  # (a character is at least a byte)
        rec.request_model = self._model
        self._resolve_server()  # before the request (and its URL) is let go
        request, self._request = self._request, None  # read once: the bytes go with the request
        try:
            content = request.content
        except Exception:  # never read (a streamed upload): nothing to parse
            content = b""
        if len(content) <= MAX_REQUEST_PARSE_BYTES:
            try:
                body = json.loads(content)
            except ValueError:
                body = None
            if isinstance(body, dict):
                top = as_str(body.get("model"))
                if top and top != self._model and not getattr(self._family, "path_names_model", False):
                    # (the sniff found a nested "model" key)
                    rec.request_model = top
                    self.span.update_name(f"{self.operation} {top}")
                    rec.attrs[ga.GEN_AI_REQUEST_MODEL] = top
                self._family.request(self.operation, body, rec)
        return rec

    def _feed(self, chunks: list[bytes]) -> None:
        if not self._materialize():
            return
        rec = self._record()
        parser = self._parser
        if parser is None:
            headers = self._headers
            ctype = _content_type(headers)
            kind = _stream_kind(ctype)
            if kind != "json":
                self._accumulator = self._family.stream(self.operation, rec)
                # A streamed answer was asked for, also where the path says so, not the body (Bedrock).
                rec.attrs.setdefault(ga.GEN_AI_REQUEST_STREAM, True)
            on_event = self._on_event if self._accumulator is not None else self._on_body
            encoding = headers.get("content-encoding") or ""
            parser = self._parser = StreamParser(kind if self._accumulator is not None else "json", encoding, on_event,
                                                 getattr(self._accumulator, "skip", None),
                                                 getattr(self._accumulator, "quiet", None),
                                                 getattr(self._accumulator, "run", None))
        try:
            parser.feed(b"".join(chunks))
        except Exception:
            parser.broken = True

    def _on_event(self, name: str, data: Any) -> None:
        self._accumulator.event(name, data)

    def _on_body(self, name: str, data: Any) -> None:
        self._family.response(self.operation, data, self._record())

    def _complete(self, error: BaseException | None, body: bytes | None, elapsed: float, end_ns: int) -> None:
        try:
            if self._materialize():
                self._tel.note_enclosing(self._ctx)
                self._finish(error, body, elapsed, end_ns)
        except Exception as exc:
            self._tel.internal_error("end", exc)
            try:
                self.span.end(end_time=end_ns)
            except Exception:
                pass
        finally:
            # The parser holds this call's bound methods (a reference cycle): let both go now, by
            # reference count, not at the next garbage collection (whichever thread that lands on).
            self._parser = self._accumulator = None

    def _finish(self, error: BaseException | None, body: bytes | None, elapsed: float, end_ns: int) -> None:
        rec = self._record()
        if error is None and self._headers is not None:
            headers_hook = getattr(self._family, "headers", None)
            if headers_hook is not None:  # usage some APIs give in headers (Bedrock), before the body's
                headers_hook(self.operation, self._headers, rec)
            if self._status >= 400:
                rec.attrs[_ERROR_TYPE] = str(self._status)
            elif body is not None:
                ctype = _content_type(self._headers)
                if _stream_kind(ctype) != "json":
                    self._feed([body])  # a stream the client read whole
                elif body:
                    self._family.response(self.operation, json.loads(body), rec)
        if self._parser is not None:
            try:
                self._parser.close()
            except Exception:
                pass
        if self._accumulator is not None:
            self._accumulator.finish()
        out: dict[str, Any] = dict(rec.attrs)
        if rec.response_model:
            out[ga.GEN_AI_RESPONSE_MODEL] = rec.response_model
        if rec.finish_reasons:
            out[ga.GEN_AI_RESPONSE_FINISH_REASONS] = rec.finish_reasons
        if rec.input_tokens is not None:
            out[ga.GEN_AI_USAGE_INPUT_TOKENS] = rec.input_tokens
        if rec.output_tokens is not None:
            out[ga.GEN_AI_USAGE_OUTPUT_TOKENS] = rec.output_tokens
        if rec.cache_read_tokens is not None:
            out[ga.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = rec.cache_read_tokens
        if rec.cache_creation_tokens is not None:
            out[ga.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = rec.cache_creation_tokens
        if rec.reasoning_tokens is not None:
            out[ga.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = rec.reasoning_tokens
        ttfc = self.first_chunk - self._start if self.first_chunk is not None else None
        if ttfc is not None:
            out[ga.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = ttfc
        error_type = rec.attrs.get(_ERROR_TYPE)
        if error is not None:
            error_type = type(error).__qualname__
            out[_ERROR_TYPE] = error_type
        keys = self._tel.baggage_keys
        if keys:  # who and which conversation, from the caller's baggage (_baggage)
            out.update(keys.attributes(self._ctx, out))
        span = self.span
        if rec.capture:
            content = self._content_attributes(out)
            if self._tel.capture_mode.on_event:
                self._emit_event(content)
        if out:
            span.set_attributes(out)
        if error_type is not None:
            span.set_status(Status(StatusCode.ERROR, error_type))
        span.end(end_time=end_ns)
        self._record_metrics(elapsed, ttfc, error_type)

    def _content_attributes(self, out: dict[str, Any]) -> dict[str, Any]:
        rec = self.rec
        limit = self._tel.content_max_bytes
        content: dict[str, Any] = {}
        truncated = False
        for key, value in (
            (ga.GEN_AI_INPUT_MESSAGES, rec.input_messages),
            (ga.GEN_AI_OUTPUT_MESSAGES, rec.output_messages),
            (ga.GEN_AI_SYSTEM_INSTRUCTIONS, rec.system_instructions),
            (ga.GEN_AI_TOOL_DEFINITIONS, rec.tool_definitions),
        ):
            if value:
                content[key], cut = bounded_json(value, limit)
                truncated = truncated or cut
        if truncated:
            content["lqo.content.truncated"] = True
        if self._tel.capture_mode.on_span:
            out.update(content)
        return content

    def _emit_event(self, content: dict[str, Any]) -> None:
        if not content:
            return
        attrs = {
            ga.GEN_AI_OPERATION_NAME: self.rec.operation,
            ga.GEN_AI_PROVIDER_NAME: self._provider,
            **content,
        }
        if self.rec.request_model:
            attrs[ga.GEN_AI_REQUEST_MODEL] = self.rec.request_model
        self._tel.event_logger.emit(
            event_name=EVENT_NAME,
            attributes=attrs,
            context=set_span_in_context(self.span),
        )

    def _record_metrics(self, elapsed: float, ttfc: float | None, error_type: str | None) -> None:
        rec = self.rec
        attrs: dict[str, Any] = {
            ga.GEN_AI_OPERATION_NAME: rec.operation,
            ga.GEN_AI_PROVIDER_NAME: self._provider,
            _SERVER_ADDRESS: self.host,
            _SERVER_PORT: self.port,
        }
        if rec.request_model:
            attrs[ga.GEN_AI_REQUEST_MODEL] = rec.request_model
        if rec.response_model:
            attrs[ga.GEN_AI_RESPONSE_MODEL] = rec.response_model
        tel = self._tel
        # Recorded in the call's span context, whichever thread runs this: exemplars (the SDK's
        # default trace-based filter) then point at this GenAI span.
        ctx = set_span_in_context(self.span)
        if error_type is not None:
            tel.duration.record(elapsed, {**attrs, _ERROR_TYPE: error_type}, ctx)
        else:
            tel.duration.record(elapsed, attrs, ctx)
        if rec.input_tokens is not None:
            tel.tokens.record(rec.input_tokens, {**attrs, ga.GEN_AI_TOKEN_TYPE: "input"}, ctx)
        if rec.output_tokens is not None:
            tel.tokens.record(rec.output_tokens, {**attrs, ga.GEN_AI_TOKEN_TYPE: "output"}, ctx)
        if ttfc is not None:
            tel.ttfc.record(ttfc, attrs, ctx)
