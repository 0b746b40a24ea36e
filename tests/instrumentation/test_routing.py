"""Which requests are LLM calls, of which API family and provider (docs/instrumentation.md,
"What it does"): routing by path, the provider by host, the model from the body or the path."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from lqo.instrumentation.httpx._sniff import model_of
from lqo.instrumentation.httpx.decoders import PROVIDER_HOSTS_ENV, Router

from .replay import RECORDINGS, ReplayServer, load_cassette
from .sdk_calls import make_client, run_sync

ROUTES = {
    "/v1/chat/completions": ("openai.chat_completions", "chat"),
    "/openai/deployments/gpt-4o/chat/completions": ("openai.chat_completions", "chat"),  # Azure
    "/openai/v1/chat/completions": ("openai.chat_completions", "chat"),  # Groq
    "/v1/completions": ("openai.completions", "text_completion"),
    "/v1/embeddings": ("openai.embeddings", "embeddings"),
    "/v1/responses": ("openai.responses", "chat"),
    "/v1/messages": ("anthropic.messages", "chat"),
    "/anthropic/v1/messages": ("anthropic.messages", "chat"),  # Bedrock's Anthropic endpoint (mantle)
    "/v1/complete": ("anthropic.messages", "text_completion"),
    "/api/chat": ("ollama", "chat"),
    "/api/generate": ("ollama", "text_completion"),
    "/api/embed": ("ollama", "embeddings"),
    "/api/embeddings": ("ollama", "embeddings"),
    "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke": ("aws.bedrock.invoke_model", "chat"),
    "/model/us.anthropic.claude-sonnet-4-v1:0/invoke-with-response-stream": ("aws.bedrock.invoke_model", "chat"),
    "/model/meta.llama3-70b-instruct-v1:0/converse": ("aws.bedrock.converse", "chat"),
    "/model/amazon.nova-pro-v1:0/converse-stream": ("aws.bedrock.converse", "chat"),
}
NOT_LLM = ["/v1/models", "/health", "/api/tags", "/model/x/count-tokens", "/model/invoke", "/model/x/invoke/more",
           "/v1/files", "/"]


@pytest.mark.parametrize(("path", "expected"), ROUTES.items(), ids=list(ROUTES))
def test_llm_paths_route_to_their_family(path: str, expected: tuple[str, str]) -> None:
    found = Router().route(path)
    assert found is not None
    assert (found[0].name, found[1]) == expected


@pytest.mark.parametrize("path", NOT_LLM)
def test_other_paths_are_not_llm_calls(path: str) -> None:
    assert Router().route(path) is None


HOSTS = {
    ("openai.chat_completions", "api.openai.com", 443): "openai",
    ("openai.chat_completions", "myres.openai.azure.com", 443): "azure.ai.openai",
    ("openai.chat_completions", "api.groq.com", 443): "groq",
    ("openai.chat_completions", "openrouter.ai", 443): "openrouter",
    ("openai.chat_completions", "bedrock-runtime.us-west-2.amazonaws.com", 443): "aws.bedrock",
    ("openai.chat_completions", "localhost", 11434): "ollama",  # Ollama's /v1
    ("openai.chat_completions", "vllm.internal", 8000): "openai",  # unknown: the family's
    ("anthropic.messages", "api.anthropic.com", 443): "anthropic",
    ("anthropic.messages", "bedrock-mantle.us-east-1.api.aws", 443): "aws.bedrock",
    ("aws.bedrock.invoke_model", "bedrock-runtime.eu-central-1.amazonaws.com", 443): "aws.bedrock",
    ("aws.bedrock.converse", "bedrock-runtime.eu-central-1.amazonaws.com", 443): "aws.bedrock",
    ("aws.bedrock.converse", "127.0.0.1", 8080): "aws.bedrock",  # (a local endpoint: the family's)
    ("ollama", "gpu-box", 11434): "ollama",
}


def _family(name: str) -> Any:
    from lqo.instrumentation.httpx.decoders import FAMILIES

    return next(f for f in FAMILIES if f.name == name)


@pytest.mark.parametrize(("key", "provider"), HOSTS.items(), ids=[h for _, h, _ in HOSTS])
def test_provider_by_host(key: tuple[str, str, int], provider: str) -> None:
    name, host, port = key
    assert Router().provider(_family(name), host, port) == provider


def test_self_hosted_servers_named_by_env_and_argument(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(PROVIDER_HOSTS_ENV, "vllm.internal:8000=vllm, litellm=litellm, broken, =x, y=")
    with caplog.at_level(logging.WARNING):
        router = Router({"tgi.internal": "tgi"})
    chat = _family("openai.chat_completions")
    assert router.provider(chat, "vllm.internal", 8000) == "vllm"
    assert router.provider(chat, "vllm.internal", 9000) == "openai"  # another port: not that server
    assert router.provider(chat, "litellm", 4000) == "litellm"
    assert router.provider(chat, "tgi.internal", 80) == "tgi"
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3 and all(PROVIDER_HOSTS_ENV in w for w in warned)  # each bad entry, named


@pytest.mark.parametrize(("body", "path", "model"), [
    (b'{"model": "gpt-4o", "messages": []}', "/v1/chat/completions", "gpt-4o"),
    (b'{"messages": [{"role": "user", "content": "\\"model\\": \\"x\\""}], "model": "m"}', "/v1/chat/completions", "m"),
    (b'{"messages": []}', "/openai/deployments/my-gpt/chat/completions", "my-gpt"),
    (b'{"messages": [], "anthropic_version": "bedrock-2023-05-31"}',
     "/model/anthropic.claude-3-haiku-20240307-v1:0/invoke", "anthropic.claude-3-haiku-20240307-v1:0"),
    (b'{"messages": []}', "/model/arn:aws:bedrock:us-east-1:1:application-inference-profile/abc/invoke",
     "arn:aws:bedrock:us-east-1:1:application-inference-profile/abc"),
    (b'{"messages": [], "inferenceConfig": {"maxTokens": 5}}', "/model/amazon.nova-pro-v1:0/converse-stream",
     "amazon.nova-pro-v1:0"),
    (b'{"messages": []}', "/v1/messages", ""),  # another service's /v1/messages: not an LLM call
    (b'{"messages": []}', "/api/chat", ""),
])
def test_the_model_from_the_body_or_the_path(body: bytes, path: str, model: str) -> None:
    assert model_of(body, path) == model


def test_a_self_hosted_server_named_by_the_instrumentor_argument(instrument: Any) -> None:
    """End to end: the real SDK against a local server named ``vllm`` by ``provider_hosts``."""
    inst = instrument(provider_hosts={"127.0.0.1": "vllm"})
    (ex,) = load_cassette(RECORDINGS / "openai" / "openai__test_chat_completion_no_content.yaml")[:1]
    with ReplayServer([ex]) as srv:
        run_sync(make_client("openai", srv.url, False), ex)
    (span,) = inst.genai_spans()
    assert span.attributes["gen_ai.provider.name"] == "vllm"
    assert span.attributes["gen_ai.request.model"] == json.loads(ex.request_body)["model"]
