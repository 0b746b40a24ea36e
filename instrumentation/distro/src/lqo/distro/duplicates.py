"""Other instrumentations that record the same LLM calls as lqo's, left out by default.

lqo's instrumentor records LLM calls where they leave the process, at httpx. An instrumentor
that wraps a provider SDK's methods (OpenTelemetry's openai-v2, OpenLLMetry's, OpenInference's)
records each of those calls again, as a second GenAI span around lqo's: the collector would
store, count and price every call twice. ``opentelemetry-instrument`` loads every instrumentor
installed, and ``opentelemetry-bootstrap`` installs them, so under ``lqo-instrument`` the distro
leaves out the ones listed here while lqo's own is on. ``LQO_GENAI_SKIP_DUPLICATES=false``
loads them all.

Listed are only instrumentors whose calls lqo records in every mode of their SDK (sync, async,
streams): each SDK here sends through httpx. Left off, as lqo would miss calls they record:
google-genai's (its async client may send through aiohttp), Cohere's (v1 chat), Bedrock's
(boto3), Vertex AI's (gRPC), Together's (requests), and framework instrumentations (LangChain,
LlamaIndex…), whose spans carry the framework's structure. Their spans around lqo's are
reported at run time instead (``lqo.instrumentation.httpx``, once per instrumentation).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

SKIP_ENV = "LQO_GENAI_SKIP_DUPLICATES"
LQO_ENTRY_POINT = "lqo_genai_httpx"
_DISABLED_ENV = "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"

# The instrumentor's module (an entry point's value before ':') → who ships it (named in the
# report when the entry point does not say which distribution it came from).
SAME_CALLS = {
    "opentelemetry.instrumentation.openai_v2": "OpenTelemetry's opentelemetry-instrumentation-openai-v2",
    "opentelemetry.instrumentation.openai": "OpenLLMetry's opentelemetry-instrumentation-openai",
    "opentelemetry.instrumentation.anthropic": "OpenLLMetry's opentelemetry-instrumentation-anthropic",
    "opentelemetry.instrumentation.ollama": "OpenLLMetry's opentelemetry-instrumentation-ollama",
    "opentelemetry.instrumentation.groq": "OpenLLMetry's opentelemetry-instrumentation-groq",
    "opentelemetry.instrumentation.mistralai": "OpenLLMetry's opentelemetry-instrumentation-mistralai",
    "openinference.instrumentation.openai": "OpenInference's openinference-instrumentation-openai",
    "openinference.instrumentation.anthropic": "OpenInference's openinference-instrumentation-anthropic",
    "openinference.instrumentation.groq": "OpenInference's openinference-instrumentation-groq",
    "openinference.instrumentation.mistralai": "OpenInference's openinference-instrumentation-mistralai",
}

log = logging.getLogger("lqo.distro")


def same_calls_as_lqo(entry_point: Any) -> str | None:
    """Who ships ``entry_point``'s instrumentor if it records calls lqo's records, else None."""
    module = str(getattr(entry_point, "value", "")).split(":", 1)[0].strip()
    return SAME_CALLS.get(module)


def _switch(environ: Mapping[str, str]) -> bool | None:
    """``LQO_GENAI_SKIP_DUPLICATES``: True/False when set, None when not."""
    value = environ.get(SKIP_ENV, "").strip().lower()
    if not value:
        return None
    return value not in ("0", "false", "no", "off")


def lqo_enabled(environ: Mapping[str, str]) -> bool:
    """Whether ``opentelemetry-instrument`` loads lqo's instrumentor (not disabled by name or ``*``)."""
    disabled = {name.strip() for name in environ.get(_DISABLED_ENV, "").split(",")}
    return LQO_ENTRY_POINT not in disabled and "*" not in disabled


def skip(entry_point: Any, environ: Mapping[str, str] | None = None) -> bool:
    """True when ``entry_point`` is to be left out: it records calls lqo's instrumentor records,
    and that one is on. ``report()`` then says which were left out."""
    env = os.environ if environ is None else environ
    shipped_by = same_calls_as_lqo(entry_point)
    if shipped_by is None or _switch(env) is False or not lqo_enabled(env):
        return False
    dist = getattr(getattr(entry_point, "dist", None), "name", None)  # the installed one, when known
    _skipped.append(f"{getattr(entry_point, 'name', '?')} ({dist or shipped_by})")
    return True


_skipped: list[str] = []


def report(environ: Mapping[str, str] | None = None) -> None:
    """One line naming the instrumentors left out (the ``opentelemetry_post_instrument`` hook): a
    warning unless the user asked for this, as those spans stop and the user should learn why."""
    if not _skipped:
        return
    chosen = _switch(os.environ if environ is None else environ)
    log.log(logging.INFO if chosen else logging.WARNING,
            "lqo-distro: left out %d instrumentor(s) that record the same LLM calls as lqo's, "
            "which would store, count and price each call twice: %s. %s=false loads them too",
            len(_skipped), ", ".join(_skipped), SKIP_ENV)
    _skipped.clear()
