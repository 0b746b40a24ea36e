"""Who made a call and in which conversation: ``user.id`` and ``gen_ai.conversation.id`` on GenAI
spans, from the request itself (OpenAI's ``safety_identifier``/``user``, a Responses
``conversation``, Anthropic's ``metadata.user_id``) and from the caller's W3C baggage (the keys
in ``LQO_GENAI_BAGGAGE_KEYS``). Real SDKs against replayed recordings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry import baggage, context, propagate

from lqo.instrumentation.httpx._baggage import BAGGAGE_ENV, MAX_VALUE_CHARS, BaggageKeys

from .replay import RECORDINGS, serve_cassette

CHAT = RECORDINGS / "openai" / "openai__test_chat_completion_metrics.yaml"
CHAT_STREAM = RECORDINGS / "openai" / "openai__test_chat_completion_streaming.yaml"
RESPONSES = RECORDINGS / "openai" / "openai__test_responses_create_basic_content_mode0.yaml"
EMBEDDINGS = RECORDINGS / "openai" / "openai__test_embeddings_no_content.yaml"
MESSAGES = RECORDINGS / "anthropic" / "anthropic__test_anthropic_message_create_legacy.yaml"
CHAT_ARGS = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say this is a test"}]}
IDENTITY = ("user.id", "enduser.id", "enduser.pseudo.id", "session.id", "gen_ai.conversation.id")


def _openai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)


def _identity(span: Any) -> dict[str, Any]:
    return {k: v for k, v in (span.attributes or {}).items() if k in IDENTITY or k.startswith(("app.", "tenant."))}


def _with_baggage(entries: dict[str, str]) -> Any:
    ctx = context.get_current()
    for key, value in entries.items():
        ctx = baggage.set_baggage(key, value, ctx)
    return context.attach(ctx)


def _chat(entries: dict[str, str], calls: int = 1, **args: Any) -> None:
    """``calls`` chat calls (the recording replayed) with ``entries`` in the caller's baggage."""
    token = _with_baggage(entries)
    try:
        with serve_cassette(CHAT) as srv:
            client = _openai(srv.url)
            for _ in range(calls):
                client.chat.completions.create(**CHAT_ARGS, **args)
    finally:
        context.detach(token)


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(BAGGAGE_ENV, raising=False)
    yield


@pytest.mark.parametrize("defer", [True, False], ids=["deferred", "inline"])
def test_baggage_user_and_conversation_reach_the_genai_span(instrument: Any, no_env: None, defer: bool) -> None:
    inst = instrument(defer=defer)
    _chat({"user.id": "u-42", "gen_ai.conversation.id": "conv-7", "session.id": "s-1",
           "api.token": "sk-not-for-spans", "tenant.id": "acme"})
    (span,) = inst.genai_spans()
    # Only the listed keys: nothing else the baggage carries (it also arrives from outside).
    assert _identity(span) == {"user.id": "u-42", "gen_ai.conversation.id": "conv-7", "session.id": "s-1"}
    assert "api.token" not in span.attributes
    # Never a metric attribute: one time series per user would be unbounded, and it is PII.
    for points in inst.metrics().values():
        for point in points:
            assert not set(point.attributes) & set(IDENTITY)


def test_baggage_from_an_incoming_w3c_header(instrument: Any, no_env: None) -> None:
    """What a server instrumentation does with a request from the service in front: the default
    propagators extract the ``baggage`` header into the context the handler runs in."""
    inst = instrument()
    incoming = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "baggage": "user.id=u%2042,gen_ai.conversation.id=thread-9;meta=1,other=x"}
    token = context.attach(propagate.extract(incoming))
    try:
        with serve_cassette(CHAT) as srv:
            _openai(srv.url).chat.completions.create(**CHAT_ARGS)
    finally:
        context.detach(token)
    (span,) = inst.genai_spans()
    assert _identity(span) == {"user.id": "u 42", "gen_ai.conversation.id": "thread-9"}
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"


def test_a_streamed_call_and_an_async_one_get_them_too(instrument: Any, no_env: None) -> None:
    inst = instrument()

    async def call_async(url: str) -> None:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        await client.chat.completions.create(**CHAT_ARGS)
        await client.close()

    with serve_cassette(CHAT_STREAM) as srv:
        token = _with_baggage({"user.id": "streamer"})
        try:
            stream = _openai(srv.url).chat.completions.create(**CHAT_ARGS, stream=True)
            for _ in stream:
                pass
        finally:
            context.detach(token)
    with serve_cassette(CHAT) as srv:
        token = _with_baggage({"user.id": "async-user"})
        try:
            asyncio.run(call_async(srv.url))
        finally:
            context.detach(token)
    assert sorted(s.attributes.get("user.id") for s in inst.genai_spans()) == ["async-user", "streamer"]


def test_openai_request_fields(instrument: Any, no_env: None) -> None:
    inst = instrument()
    with serve_cassette(CHAT) as srv:
        client = _openai(srv.url)
        client.chat.completions.create(**CHAT_ARGS, user="legacy-user")
        client.chat.completions.create(**CHAT_ARGS, user="legacy-user", safety_identifier="hashed-7f3a")
        client.chat.completions.create(**CHAT_ARGS, safety_identifier="x" * (MAX_VALUE_CHARS + 1))  # left out
        client.chat.completions.create(**CHAT_ARGS, extra_body={"user": 12345})  # not a string: left out
    with serve_cassette(EMBEDDINGS) as srv:
        _openai(srv.url).embeddings.create(model="text-embedding-3-small", input="hi", user="embedder")
    spans = inst.genai_spans()
    assert [_identity(s) for s in spans] == [
        {"user.id": "legacy-user"}, {"user.id": "hashed-7f3a"}, {}, {}, {"user.id": "embedder"}]


def test_responses_conversation(instrument: Any, no_env: None) -> None:
    inst = instrument()
    args = {"model": "gpt-4o-mini", "input": "Say this is a test", "instructions": "You are a helpful assistant."}
    with serve_cassette(RESPONSES) as srv:
        client = _openai(srv.url)
        client.responses.create(**args, conversation="conv_68a1", safety_identifier="h-1")
        client.responses.create(**args, extra_body={"conversation": {"id": "conv_68a2"}})
        client.responses.create(**args, extra_body={"conversation": {"id": ["not", "an", "id"]}})
    assert [_identity(s) for s in inst.genai_spans()] == [
        {"gen_ai.conversation.id": "conv_68a1", "user.id": "h-1"}, {"gen_ai.conversation.id": "conv_68a2"}, {}]


def test_anthropic_metadata_user_id(instrument: Any, no_env: None) -> None:
    inst = instrument()
    with serve_cassette(MESSAGES) as srv:
        client = anthropic.Anthropic(base_url=srv.url, api_key="k", max_retries=0)
        client.messages.create(model="claude-3-5-sonnet-20241022", max_tokens=100,
                               messages=[{"role": "user", "content": "Hi"}], metadata={"user_id": "anon-5"})
    (span,) = inst.genai_spans()
    assert _identity(span) == {"user.id": "anon-5"}


def test_the_request_wins_over_baggage(instrument: Any, no_env: None) -> None:
    inst = instrument()
    _chat({"user.id": "from-baggage", "gen_ai.conversation.id": "conv-b"}, safety_identifier="from-request")
    (span,) = inst.genai_spans()
    assert _identity(span) == {"user.id": "from-request", "gen_ai.conversation.id": "conv-b"}


@pytest.mark.parametrize(("setting", "expected"), [
    ("tenant.id, app.*", {"tenant.id": "acme", "app.plan": "pro", "app.region": "eu"}),
    ("none", {}),
    ("  ", {"user.id": "u-1"}),  # blank: the default keys
])
def test_the_keys_come_from_the_environment(instrument: Any, monkeypatch: pytest.MonkeyPatch, setting: str,
                                            expected: dict[str, str]) -> None:
    monkeypatch.setenv(BAGGAGE_ENV, setting)
    inst = instrument()
    _chat({"user.id": "u-1", "tenant.id": "acme", "app.plan": "pro", "app.region": "eu",
           "application": "not-a-prefix-match"})
    (span,) = inst.genai_spans()
    assert _identity(span) == expected
    assert "application" not in span.attributes


def test_the_keys_as_an_instrument_argument(instrument: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BAGGAGE_ENV, "none")  # the argument wins over the environment
    inst = instrument(baggage_keys=["enduser.id"])
    _chat({"enduser.id": "e-3", "user.id": "u-3"})
    (span,) = inst.genai_spans()
    assert _identity(span) == {"enduser.id": "e-3"}


def test_a_too_long_value_is_left_out_and_said_once(instrument: Any, no_env: None,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    inst = instrument()
    with caplog.at_level(logging.WARNING, "lqo.instrumentation.httpx"):
        _chat({"user.id": "u" * (MAX_VALUE_CHARS + 1), "gen_ai.conversation.id": "c" * MAX_VALUE_CHARS}, calls=2)
        spans = inst.genai_spans()
    # Cut, an identifier could name someone else: left out whole; the one at the limit is kept.
    assert [_identity(s) for s in spans] == [{"gen_ai.conversation.id": "c" * MAX_VALUE_CHARS}] * 2
    said = [r.getMessage() for r in caplog.records if "baggage entry user.id" in r.getMessage()]
    assert len(said) == 1 and "u" * 20 not in said[0]


def test_baggage_keys_parsing(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv(BAGGAGE_ENV, raising=False)
    assert BaggageKeys().exact == frozenset(IDENTITY)
    keys = BaggageKeys(" a , ,b.*,c ")
    assert (keys.exact, keys.prefixes) == (frozenset({"a", "c"}), ("b.",))
    assert not BaggageKeys("NONE") and not BaggageKeys([])
    with caplog.at_level(logging.WARNING, "lqo.instrumentation.httpx"):
        everything = BaggageKeys("*")
    assert everything.prefixes == ("",) and "every baggage entry" in caplog.text
    ctx = baggage.set_baggage("anything", "v", context.Context())
    assert everything.attributes(ctx, {}) == {"anything": "v"}
    assert everything.attributes(None, {}) == {} and everything.attributes(context.Context(), {}) == {}
