"""API-family decoders and the routing that picks one for a request.

Adding an API family is one module exporting ``FAMILY`` (see ``base.Family``) plus a line in
``FAMILIES``. Routing is by path suffix, so base-URL prefixes (Azure deployments, Groq's
``/openai/v1``, proxies) work unchanged; the provider comes from the host.
"""

from __future__ import annotations

import logging
import os

from . import (
    anthropic_messages,
    bedrock,
    bedrock_converse,
    cohere_chat,
    gemini,
    ollama,
    openai_chat,
    openai_completions,
    openai_embeddings,
    openai_responses,
)
from .base import Family

_log = logging.getLogger(__name__)

# Order matters where suffixes overlap: /chat/completions before /completions.
FAMILIES: tuple[Family, ...] = (
    ollama.FAMILY,
    bedrock.FAMILY,
    bedrock_converse.FAMILY,
    gemini.FAMILY,
    cohere_chat.FAMILY,
    anthropic_messages.FAMILY,
    openai_chat.FAMILY,
    openai_completions.FAMILY,
    openai_embeddings.FAMILY,
    openai_responses.FAMILY,
)

# Host suffix -> gen_ai.provider.name (semconv well-known values where one exists).
KNOWN_HOSTS: tuple[tuple[str, str], ...] = (
    ("api.openai.com", "openai"),
    ("openai.azure.com", "azure.ai.openai"),
    ("services.ai.azure.com", "azure.ai.inference"),
    ("models.inference.ai.azure.com", "azure.ai.inference"),
    ("api.anthropic.com", "anthropic"),
    ("amazonaws.com", "aws.bedrock"),  # bedrock-runtime: InvokeModel, its OpenAI-compatible paths
    ("api.aws", "aws.bedrock"),  # bedrock-mantle: Bedrock's Anthropic Messages endpoint
    ("api.groq.com", "groq"),
    ("api.together.xyz", "together_ai"),
    ("api.together.ai", "together_ai"),
    ("openrouter.ai", "openrouter"),
    ("api.mistral.ai", "mistral_ai"),
    ("api.deepseek.com", "deepseek"),
    ("api.x.ai", "x_ai"),
    ("api.perplexity.ai", "perplexity"),
    ("api.fireworks.ai", "fireworks"),
    ("generativelanguage.googleapis.com", "gcp.gemini"),
    ("googleapis.com", "gcp.vertex_ai"),  # [{region}-]aiplatform: Vertex AI (Gemini, its OpenAI-compatible paths)
    ("api.cohere.com", "cohere"),
    ("api.cohere.ai", "cohere"),
)
OLLAMA_PORT = 11434
PROVIDER_HOSTS_ENV = "LQO_GENAI_PROVIDER_HOSTS"


def _hosts_from_env() -> dict[str, str]:
    """``host[:port]=provider`` pairs, comma separated, for self-hosted servers (vLLM, LiteLLM…)."""
    out: dict[str, str] = {}
    for item in os.environ.get(PROVIDER_HOSTS_ENV, "").split(","):
        item = item.strip()
        if not item:
            continue
        host, sep, provider = item.partition("=")
        if not sep or not host.strip() or not provider.strip():
            _log.warning("%s: ignoring %r (want host[:port]=provider)", PROVIDER_HOSTS_ENV, item)
            continue
        out[host.strip().lower()] = provider.strip()
    return out


# Every POST the application makes is routed: remember recent answers (bounded).
_CACHE_SIZE = 4096


class Router:
    __slots__ = ("_custom", "_providers", "_routes")

    def __init__(self, custom_hosts: dict[str, str] | None = None) -> None:
        self._custom = {**_hosts_from_env(), **{k.lower(): v for k, v in (custom_hosts or {}).items()}}
        self._routes: dict[str, tuple[Family, str] | None] = {}
        self._providers: dict[tuple[str, str, int | None], str] = {}

    @property
    def cache(self) -> dict[str, tuple[Family, str] | None]:
        """Routes found so far by path (the same dict for the router's life; cleared when full)."""
        return self._routes

    def route(self, path: str, key: str | None = None) -> tuple[Family, str] | None:
        """The API family and operation of a (decoded) URL path, or None; cached under ``key``
        (default: the path itself; the call path uses the path as sent, cheaper to read)."""
        if key is None:
            key = path
        try:
            return self._routes[key]
        except KeyError:
            pass
        found = None
        for family in FAMILIES:
            operation = family.operation(path)
            if operation is not None:
                found = family, operation
                break
        if len(self._routes) >= _CACHE_SIZE:
            self._routes.clear()
        self._routes[key] = found
        return found

    def provider(self, family: Family, host: str, port: int | None) -> str:
        key = (family.name, host, port)
        try:
            return self._providers[key]
        except KeyError:
            pass
        found = self._find_provider(family, host, port)
        if len(self._providers) >= _CACHE_SIZE:
            self._providers.clear()
        self._providers[key] = found
        return found

    def _find_provider(self, family: Family, host: str, port: int | None) -> str:
        if self._custom:
            found = self._custom.get(f"{host}:{port}") or self._custom.get(host)
            if found:
                return found
        for suffix, provider in KNOWN_HOSTS:
            if host == suffix or host.endswith("." + suffix):
                return provider
        if family.provider == "openai" and port == OLLAMA_PORT:
            return "ollama"
        return family.provider
