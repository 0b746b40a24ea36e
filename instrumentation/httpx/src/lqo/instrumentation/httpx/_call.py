"""One instrumented LLM call: span start, response reading (whole or streamed), telemetry at end."""

from __future__ import annotations

import json
import time
from itertools import islice
from typing import Any

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as ga
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._content import bounded_json
from ._record import CallRecord, as_str
from ._streams import StreamParser, proxy_class
from ._telemetry import Telemetry

# Larger request bodies (inline images, huge prompts) are not parsed: the span still gets the
# operation, provider and server, and the application pays no parsing cost for them.
MAX_REQUEST_PARSE_BYTES = 4 * 1024 * 1024
EVENT_NAME = "gen_ai.client.inference.operation.details"
_ERROR_TYPE = "error.type"
_SERVER_ADDRESS = "server.address"
_SERVER_PORT = "server.port"


def _content_type(headers: Any) -> str:
    return (headers.get("content-type") or "").lower()


def start_call(tel: Telemetry, request: Any) -> Call | None:
    """A Call for an LLM API request, or None for any other request (the common, cheap path)."""
    if request.method != "POST":
        return None
    url = request.url
    route = tel.router.route(url.path)
    if route is None or "json" not in _content_type(request.headers):
        return None
    family, operation = route
    try:
        content = request.content
    except Exception:  # streamed request body (uploads): not an LLM call we can read
        return None
    body: Any = {}
    if len(content) <= MAX_REQUEST_PARSE_BYTES:
        body = json.loads(content)
        if not isinstance(body, dict):
            return None
    model = as_str(body.get("model"))
    path = url.path
    if model is None and "/deployments/" in path:  # Azure OpenAI: the deployment names the model
        model = path.split("/deployments/", 1)[1].split("/", 1)[0] or None
    if model is None and body:
        return None
    host = url.host
    port = url.port or (443 if url.scheme == "https" else 80)
    provider = tel.router.provider(family, host, port)
    rec = CallRecord(operation, tel.capture_mode.captures)
    rec.request_model = model
    if body:
        family.request(operation, body, rec)
    return Call(tel, family, rec, provider, host, port)


class Call:
    __slots__ = (
        "_accumulator",
        "_ended",
        "_family",
        "_first_chunk",
        "_n_start_attrs",
        "_parser",
        "_provider",
        "_start",
        "_tel",
        "host",
        "port",
        "rec",
        "span",
    )

    def __init__(self, tel: Telemetry, family: Any, rec: CallRecord, provider: str, host: str, port: int) -> None:
        self._tel = tel
        self._family = family
        self._provider = provider
        self.rec = rec
        self.host = host
        self.port = port
        self._parser: StreamParser | None = None
        self._accumulator: Any = None
        self._first_chunk: float | None = None
        self._ended = False
        attrs = rec.attrs
        attrs[ga.GEN_AI_OPERATION_NAME] = rec.operation
        attrs[ga.GEN_AI_PROVIDER_NAME] = provider
        if rec.request_model:
            attrs[ga.GEN_AI_REQUEST_MODEL] = rec.request_model
        attrs[_SERVER_ADDRESS] = host
        attrs[_SERVER_PORT] = port
        name = f"{rec.operation} {rec.request_model}" if rec.request_model else rec.operation
        self._n_start_attrs = len(attrs)
        self.span = tel.tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attrs)
        self._start = time.perf_counter()

    # --- response -------------------------------------------------------------------------

    def on_response(self, response: Any, stream_base: type, is_async: bool) -> None:
        status = response.status_code
        if status >= 400:
            self.rec.attrs[_ERROR_TYPE] = str(status)
            self.end(None)
            return
        ctype = _content_type(response.headers)
        kind = "sse" if "event-stream" in ctype else "ndjson" if "ndjson" in ctype else "json"
        try:
            body = response.content
        except Exception:  # not read yet: a streamed response, parsed as the SDK reads it
            self._watch_stream(response, kind, stream_base, is_async)
            return
        if kind == "json":
            if body:
                self._family.response(self.rec.operation, json.loads(body), self.rec)
        else:
            self._parse_whole(body, kind)
        self.end(None)

    def _parse_whole(self, body: bytes, kind: str) -> None:
        self._accumulator = self._family.stream(self.rec.operation, self.rec)
        if self._accumulator is None:
            return
        parser = StreamParser(kind, "", self._on_event)
        parser.feed(body)
        parser.close()

    def _watch_stream(self, response: Any, kind: str, stream_base: type, is_async: bool) -> None:
        if kind != "json":
            self._accumulator = self._family.stream(self.rec.operation, self.rec)
        on_event = self._on_event if self._accumulator is not None else self._on_body
        encoding = response.headers.get("content-encoding") or ""
        self._parser = StreamParser(kind if self._accumulator is not None else "json", encoding, on_event)
        cls = proxy_class(stream_base, is_async)
        response.stream = cls(response.stream, self._parser, self.end)

    def _on_event(self, name: str, data: Any) -> None:
        if self._first_chunk is None:
            self._first_chunk = time.perf_counter()
        self._accumulator.event(name, data)

    def _on_body(self, name: str, data: Any) -> None:
        self._family.response(self.rec.operation, data, self.rec)

    # --- end ------------------------------------------------------------------------------

    def end(self, error: BaseException | None) -> None:
        """Ends the span and records metrics, exactly once; never raises."""
        if self._ended:
            return
        self._ended = True
        try:
            self._end(error)
        except Exception as exc:
            self._tel.internal_error("end", exc)
            try:
                self.span.end()
            except Exception:
                pass

    def _end(self, error: BaseException | None) -> None:
        elapsed = time.perf_counter() - self._start
        rec = self.rec
        if self._parser is not None:
            try:
                self._parser.close()
            except Exception:
                pass
        if self._accumulator is not None:
            self._accumulator.finish()
        # Attributes decoders added after the span started (response id, service tier…).
        out: dict[str, Any] = dict(islice(rec.attrs.items(), self._n_start_attrs, None))
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
        ttfc = self._first_chunk - self._start if self._first_chunk is not None else None
        if ttfc is not None:
            out[ga.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = ttfc
        error_type = rec.attrs.get(_ERROR_TYPE)
        if error is not None:
            error_type = type(error).__qualname__
            out[_ERROR_TYPE] = error_type
        span = self.span
        mode = self._tel.capture_mode
        if rec.capture:
            content = self._content_attributes(out)
            if mode.on_event:
                self._emit_event(content)
        if out:
            span.set_attributes(out)
        if error_type is not None:
            span.set_status(Status(StatusCode.ERROR, error_type))
        span.end()
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
        from opentelemetry import trace

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
            context=trace.set_span_in_context(self.span),
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
        if error_type is not None:
            tel.duration.record(elapsed, {**attrs, _ERROR_TYPE: error_type})
        else:
            tel.duration.record(elapsed, attrs)
        if rec.input_tokens is not None:
            tel.tokens.record(rec.input_tokens, {**attrs, ga.GEN_AI_TOKEN_TYPE: "input"})
        if rec.output_tokens is not None:
            tel.tokens.record(rec.output_tokens, {**attrs, ga.GEN_AI_TOKEN_TYPE: "output"})
        if ttfc is not None:
            tel.ttfc.record(ttfc, attrs)
