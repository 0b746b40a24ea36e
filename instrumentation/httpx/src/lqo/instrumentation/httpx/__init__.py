"""GenAI spans and metrics for every LLM client built on httpx or httpx2.

One instrumentor patches ``Client.send`` / ``AsyncClient.send`` of both libraries, recognizes
LLM API requests by path (OpenAI and compatible servers, Anthropic, Ollama) and emits one
GenAI CLIENT span per call under the current OpenTelemetry GenAI semantic conventions. The
span is current while the request is sent, so an HTTP client span (from
opentelemetry-instrumentation-httpx) becomes its child.

Usage::

    from lqo.instrumentation.httpx import HttpxGenAIInstrumentor
    HttpxGenAIInstrumentor().instrument()

or zero-code: ``opentelemetry-instrument python app.py`` / ``lqo-instrument python app.py``.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap

from ._call import start_call
from ._content import CaptureMode
from ._telemetry import Telemetry
from .package import _instruments_any
from .version import __version__

__all__ = ["CaptureMode", "HttpxGenAIInstrumentor", "__version__"]

# The client libraries we patch; openai>=3 and anthropic>=2 use httpx2, most others httpx.
CLIENT_MODULES = ("httpx", "httpx2")


class HttpxGenAIInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instrument every httpx/httpx2 client in the process.

    Keyword arguments to ``instrument()``: ``tracer_provider``, ``meter_provider``,
    ``logger_provider``, ``capture_mode`` (a ``CaptureMode`` or its name; default from
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, else ``NO_CONTENT``),
    ``content_max_bytes`` (per attribute; default ``LQO_GENAI_CONTENT_MAX_BYTES`` or 32 KiB),
    ``provider_hosts`` (``{"host[:port]": "provider"}`` for self-hosted servers).
    """

    def __init__(self) -> None:
        super().__init__()
        self._patched: list[tuple[Any, str]] = []

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments_any

    def _check_dependency_conflicts(self) -> Any:
        return get_dependency_conflicts([], _instruments_any)

    def _instrument(self, **kwargs: Any) -> None:
        mode = kwargs.get("capture_mode")
        if isinstance(mode, str):
            mode = CaptureMode[mode.upper()]
        tel = Telemetry(
            tracer_provider=kwargs.get("tracer_provider"),
            meter_provider=kwargs.get("meter_provider"),
            logger_provider=kwargs.get("logger_provider"),
            capture_mode=mode,
            content_max_bytes=kwargs.get("content_max_bytes"),
            provider_hosts=kwargs.get("provider_hosts"),
        )
        for name in CLIENT_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            wrapt.wrap_function_wrapper(module, "Client.send", _sync_wrapper(tel, module.SyncByteStream))
            wrapt.wrap_function_wrapper(module, "AsyncClient.send", _async_wrapper(tel, module.AsyncByteStream))
            self._patched.append((module.Client, "send"))
            self._patched.append((module.AsyncClient, "send"))

    def _uninstrument(self, **kwargs: Any) -> None:
        for owner, attr in self._patched:
            unwrap(owner, attr)
        self._patched.clear()


def _request_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs.get("request")


def _begin(tel: Telemetry, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not is_instrumentation_enabled():
        return None
    try:
        return start_call(tel, _request_of(args, kwargs))
    except Exception as exc:
        tel.internal_error("request", exc)
        return None


def _after(tel: Telemetry, call: Any, response: Any, stream_base: type, is_async: bool) -> None:
    try:
        call.on_response(response, stream_base, is_async)
    except Exception as exc:
        tel.internal_error("response", exc)
        call.end(None)


def _sync_wrapper(tel: Telemetry, stream_base: type) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = _begin(tel, args, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        token = otel_context.attach(trace.set_span_in_context(call.span))
        try:
            response = wrapped(*args, **kwargs)
        except BaseException as exc:
            call.end(exc)
            raise
        finally:
            otel_context.detach(token)
        _after(tel, call, response, stream_base, False)
        return response

    return wrapper


def _async_wrapper(tel: Telemetry, stream_base: type) -> Any:
    async def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        call = _begin(tel, args, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        token = otel_context.attach(trace.set_span_in_context(call.span))
        try:
            response = await wrapped(*args, **kwargs)
        except BaseException as exc:
            call.end(exc)
            raise
        finally:
            otel_context.detach(token)
        _after(tel, call, response, stream_base, True)
        return response

    return wrapper
