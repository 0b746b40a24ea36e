"""Zero-code setup for LLM Quality Observer.

Loaded by ``opentelemetry-instrument`` / ``lqo-instrument`` through the ``opentelemetry_distro``
and ``opentelemetry_configurator`` entry points. It only fills in defaults: every standard
``OTEL_*`` variable the user set wins.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _OTelSDKConfigurator

from . import duplicates
from .redact import RedactUrlSecrets
from .version import __version__

__all__ = ["DEFAULTS", "LqoConfigurator", "LqoDistro", "__version__", "apply_defaults"]

# The local collector's OTLP/HTTP receiver. It stores traces, and takes log records for the GenAI
# events among them (messages recorded as events, EVENT_ONLY / SPAN_AND_EVENT), which it adds to
# their spans; the SDK exports what is emitted through the Logs API (the logging module's records
# only when a handler sends them there: OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED, or a
# logging instrumentation that adds one; the collector counts and drops those). Metrics stay off:
# the collector derives them from the spans.
DEFAULTS = {
    "OTEL_TRACES_EXPORTER": "otlp",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
    # The collector's safety checks read message content; it never leaves the user's network.
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "SPAN_ONLY",
}


def apply_defaults(environ: Any = None) -> dict[str, str]:
    """Set each default the user has not set; returns what was set."""
    env = os.environ if environ is None else environ
    applied = {}
    for key, value in DEFAULTS.items():
        if not env.get(key):
            env[key] = value
            applied[key] = value
    return applied


class LqoDistro(BaseDistro):  # type: ignore[misc]
    def _configure(self, **kwargs: Any) -> None:
        apply_defaults()

    def load_instrumentor(self, entry_point: Any, **kwargs: Any) -> None:
        """Every instrumentor, except those that record the same LLM calls as lqo's
        (``duplicates``: each call would be stored, counted and priced twice)."""
        if duplicates.skip(entry_point):
            return
        super().load_instrumentor(entry_point, **kwargs)


class LqoConfigurator(_OTelSDKConfigurator):  # type: ignore[misc]
    """The SDK's standard environment-driven configurator (providers, exporters, resource), plus
    the redaction of secrets in URL query strings on every span (``redact``)."""

    def _configure(self, **kwargs: Any) -> None:
        super()._configure(**kwargs)
        provider = trace.get_tracer_provider()
        if hasattr(provider, "add_span_processor"):
            provider.add_span_processor(RedactUrlSecrets())
