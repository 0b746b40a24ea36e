"""Secrets in URL query strings never leave the process on a span.

HTTP client instrumentations record the request URL (``url.full``; ``http.url`` under the old
conventions) and redact only the query parameters the semantic conventions list (AWS and Google
Cloud Storage signatures). LLM APIs take keys there too: Gemini's REST API ``?key=``, as LiteLLM
and plain HTTP callers send it, and others ``api_key``/``access_token``. ``lqo-instrument`` adds
this span processor, which replaces such values with ``REDACTED`` as each span starts, before
any exporter sees it.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import SpanProcessor

REDACTED = "REDACTED"
# Query parameter names (compared lower-cased) whose values are credentials.
SECRET_PARAMS = frozenset({
    "key", "api_key", "apikey", "api-key", "access_token", "token", "auth", "password", "secret",
    "client_secret", "sig", "signature", "x-goog-signature", "x-goog-credential", "awsaccesskeyid",
    "x-amz-signature", "x-amz-credential", "x-amz-security-token",
})
URL_ATTRIBUTES = ("url.full", "http.url", "url.query")


def redact_query(query: str) -> str:
    """``query`` (no ``?``) with the values of secret parameters replaced; unchanged otherwise."""
    pairs = query.split("&")
    changed = False
    for i, pair in enumerate(pairs):
        name, sep, value = pair.partition("=")
        if sep and value and value != REDACTED and name.lower() in SECRET_PARAMS:
            pairs[i] = f"{name}={REDACTED}"
            changed = True
    return "&".join(pairs) if changed else query


def redact_url(url: str) -> str:
    base, sep, rest = url.partition("?")
    if not sep:
        return url
    query, hash_sep, fragment = rest.partition("#")
    redacted = redact_query(query)
    return url if redacted == query else f"{base}?{redacted}{hash_sep}{fragment}"


class RedactUrlSecrets(SpanProcessor):
    """Replaces secret query values in a starting span's URL attributes (see the module)."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        attrs = span.attributes
        if not attrs:
            return
        for name in URL_ATTRIBUTES:
            value = attrs.get(name)
            if isinstance(value, str) and "=" in value:
                redacted = redact_query(value) if name == "url.query" else redact_url(value)
                if redacted != value:
                    span.set_attribute(name, redacted)
