"""Turn a recorded request into the real SDK call that makes it (openai, anthropic, ollama)."""

from __future__ import annotations

import inspect
import json
from typing import Any
from urllib.parse import unquote

import anthropic
import ollama
import openai

from .replay import Exchange


def _split(fn: Any, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(body), {}
    known = {k: v for k, v in body.items() if k in params}
    extra = {k: v for k, v in body.items() if k not in params}
    return known, extra


def _method(client: Any, ex: Exchange) -> Any:
    path = ex.path.split("?")[0]
    if isinstance(client, (openai.OpenAI, openai.AsyncOpenAI)):
        if path.endswith("/chat/completions"):
            return client.chat.completions.create
        if path.endswith("/embeddings"):
            return client.embeddings.create
        if path.endswith("/responses"):
            return client.responses.create
    if isinstance(client, (anthropic.AnthropicBedrock, anthropic.AsyncAnthropicBedrock)):
        return client.messages.create
    if isinstance(client, (anthropic.Anthropic, anthropic.AsyncAnthropic)):
        if path.endswith("/v1/messages"):
            return client.beta.messages.create if "beta=true" in ex.path else client.messages.create
        if path.endswith("/v1/complete"):
            # anthropic>=2 dropped the legacy Text Completions resource; its generic request
            # method still sends through the SDK's client and retry machinery.
            return _legacy_complete(client)
    if isinstance(client, (ollama.Client, ollama.AsyncClient)):
        return {"/api/chat": client.chat, "/api/generate": client.generate,
                "/api/embeddings": client.embeddings}[path]
    raise LookupError(f"no SDK call for {ex.path}")


def _legacy_complete(client: Any) -> Any:
    def complete(**body: Any) -> Any:
        return client.post("/v1/complete", body=body, cast_to=object)

    return complete


def make_client(provider: str, url: str, is_async: bool) -> Any:
    if provider == "bedrock":  # Anthropic's Bedrock client: SigV4-signed with botocore, offline
        cls = anthropic.AsyncAnthropicBedrock if is_async else anthropic.AnthropicBedrock
        return cls(base_url=url, aws_access_key="AKIATESTTESTTESTTEST", aws_secret_key="test-secret",
                   aws_region="us-east-1", max_retries=0)
    if provider == "openai":
        cls = openai.AsyncOpenAI if is_async else openai.OpenAI
        return cls(base_url=url + "/v1", api_key="test-key", max_retries=0)
    if provider == "anthropic":
        cls = anthropic.AsyncAnthropic if is_async else anthropic.Anthropic
        return cls(base_url=url, api_key="test-key", max_retries=0)
    cls = ollama.AsyncClient if is_async else ollama.Client
    return cls(host=url)


def call_kwargs(client: Any, ex: Exchange) -> tuple[Any, dict[str, Any]]:
    fn = _method(client, ex)
    body = json.loads(ex.request_body) if ex.request_body else {}
    if isinstance(client, (anthropic.AnthropicBedrock, anthropic.AsyncAnthropicBedrock)):
        # Bedrock's path carries the model (and streaming); the SDK moves them back there.
        model, _, action = ex.path.split("?")[0].removeprefix("/model/").rpartition("/")
        body = {**body, "model": unquote(model), **({"stream": True} if action.endswith("stream") else {})}
    known, extra = _split(fn, body)
    if extra and not isinstance(client, (ollama.Client, ollama.AsyncClient)):
        known["extra_body"] = extra
    return fn, known


def run_sync(client: Any, ex: Exchange) -> Any:
    fn, kwargs = call_kwargs(client, ex)
    result = fn(**kwargs)
    if kwargs.get("stream"):
        return list(result)
    return result


async def run_async(client: Any, ex: Exchange) -> Any:
    fn, kwargs = call_kwargs(client, ex)
    result = fn(**kwargs)
    if inspect.isawaitable(result):
        result = await result
    if kwargs.get("stream"):
        return [item async for item in result]
    return result
