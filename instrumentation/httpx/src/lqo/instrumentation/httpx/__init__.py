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

import atexit
import importlib
import os
import weakref
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry.instrumentation.dependencies import get_dependency_conflicts
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.instrumentation.utils import unwrap

from ._content import CaptureMode
from ._send import make_send
from ._streams import end_open_streams
from ._telemetry import Telemetry
from .feedback import record_evaluation
from .package import _instruments_any
from .version import __version__

__all__ = ["CaptureMode", "HttpxGenAIInstrumentor", "__version__", "record_evaluation"]

# The client libraries we patch; openai>=3 and anthropic>=2 use httpx2, most others httpx.
CLIENT_MODULES = ("httpx", "httpx2")
# SDK providers whose force_flush/shutdown first wait for our deferred telemetry.
SDK_PROVIDERS = (
    ("opentelemetry.sdk.trace", "TracerProvider"),
    ("opentelemetry.sdk.metrics", "MeterProvider"),
    ("opentelemetry.sdk._logs", "LoggerProvider"),
)


class HttpxGenAIInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Instrument every httpx/httpx2 client in the process.

    Keyword arguments to ``instrument()``: ``tracer_provider``, ``meter_provider``,
    ``logger_provider``, ``capture_mode`` (a ``CaptureMode`` or its name; default from
    ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``, else ``NO_CONTENT``),
    ``content_max_bytes`` (per attribute; default ``LQO_GENAI_CONTENT_MAX_BYTES`` or 32 KiB),
    ``provider_hosts`` (``{"host[:port]": "provider"}`` for self-hosted servers), ``defer``
    (default ``LQO_GENAI_DEFER``, true: decode and end spans on a background thread, see
    ``_worker``; false: inline, before the call returns), ``baggage_keys`` (the baggage entries
    copied onto GenAI spans, e.g. ``["user.id", "app.*"]``; default ``LQO_GENAI_BAGGAGE_KEYS``,
    else user and conversation ids, see ``_baggage``; ``"none"``: none).
    """

    def __init__(self) -> None:
        super().__init__()
        # BaseInstrumentor is a singleton whose __init__ runs on every construction:
        # ``HttpxGenAIInstrumentor().uninstrument()`` must still find what instrument() did.
        if not hasattr(self, "_patched"):
            self._patched: list[tuple[Any, str]] = []  # wrapt wrappers, undone with unwrap()
            self._sends: list[tuple[Any, Any, Any]] = []  # (class, its own send, our send)
            self._tel: Telemetry | None = None

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every finished call's span has ended and its metrics are recorded.

        SDK providers' ``force_flush()`` and ``shutdown()`` already do this first; call it only
        to read spans from a non-SDK provider. Returns False on timeout.
        """
        tel = self._tel
        return tel.worker.drain(timeout) if tel is not None else True

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
            defer=kwargs.get("defer"),
            baggage_keys=kwargs.get("baggage_keys"),
        )
        self._tel = tel
        for name in CLIENT_MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:
                continue
            self._patch_send(module.Client, make_send(tel, module.Client.send, module.SyncByteStream, False))
            self._patch_send(module.AsyncClient, make_send(tel, module.AsyncClient.send, module.AsyncByteStream, True))
        if tel.worker.deferred:
            self._hook_flushes(tel)
        # Registered after the drain, so it runs first (atexit is last-in first-out): streams
        # still open at exit end, and their telemetry is drained with the rest.
        atexit.register(end_open_streams)

    def _patch_send(self, owner: type, send: Any) -> None:
        """A plain function in place of ``owner.send``: every LLM call goes through it, and a wrapt
        proxy there cost ~2 µs per call in binding alone (``bench/BENCHMARKS.md``)."""
        self._sends.append((owner, owner.__dict__.get("send"), send))
        owner.send = send  # type: ignore[attr-defined]

    def _hook_flushes(self, tel: Telemetry) -> None:
        drain = _drain_first(tel)
        for module_name, cls in SDK_PROVIDERS:
            try:
                module = importlib.import_module(module_name)
            except ImportError:
                continue
            owner = getattr(module, cls, None)
            if owner is None:
                continue
            for method in ("force_flush", "shutdown"):
                wrapt.wrap_function_wrapper(module, f"{cls}.{method}", drain)
                self._patched.append((owner, method))
        # Providers made before instrument() registered their exit shutdown unwrapped; atexit
        # runs handlers last-in first-out, so this drain runs before those.
        atexit.register(tel.worker.drain, 5.0)
        ref = weakref.ref(tel.worker)
        os.register_at_fork(after_in_child=lambda: (w := ref()) and w.after_fork())

    def _uninstrument(self, **kwargs: Any) -> None:
        for owner, attr in reversed(self._patched):
            unwrap(owner, attr)
        self._patched.clear()
        for owner, original, send in reversed(self._sends):
            if owner.__dict__.get("send") is send:
                if original is None:
                    delattr(owner, "send")
                else:
                    owner.send = original
            # else something wrapped it after us and holds our function: it stays, passing through
        self._sends.clear()
        tel, self._tel = self._tel, None
        if tel is not None:
            tel.enabled = False
            atexit.unregister(tel.worker.drain)
            atexit.unregister(end_open_streams)
            tel.worker.stop()
            tel.spans.close()


def _drain_first(tel: Telemetry) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        tel.worker.drain(_timeout_s(args, kwargs))
        return wrapped(*args, **kwargs)

    return wrapper


def _timeout_s(args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
    """force_flush(timeout_millis=…) bounds our wait too; shutdown() gets 5 s."""
    millis = kwargs.get("timeout_millis", args[0] if args else None)
    return millis / 1000 if isinstance(millis, (int, float)) and millis > 0 else 5.0
