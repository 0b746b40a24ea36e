"""Realistic OTLP trace payloads for benchmarks: half GenAI chat spans, half HTTP spans.

GenAI spans carry ~1 KB of ``gen_ai.input.messages`` / ``gen_ai.output.messages`` as
the semantic conventions' JSON, plus the usual request/response/usage attributes.
HTTP spans look like an instrumented web framework's server spans.
"""

from __future__ import annotations

import json
import os
import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1 import trace_pb2

_WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "our", "model", "answers", "questions", "about", "invoices", "shipping", "refunds", "accounts", "passwords", "weather", "stocks", "recipes", "travel", "plans"]

MODELS = ("gpt-4o-mini", "gpt-4.1", "claude-sonnet-4-5", "llama3.1:8b")
ROUTES = ("/api/orders/{id}", "/api/users/{id}", "/healthz", "/api/search", "/api/cart")


def _kv(key: str, value: object) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _sentence(rng: random.Random, n_bytes: int) -> str:
    out: list[str] = []
    size = 0
    while size < n_bytes:
        word = rng.choice(_WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def genai_span(rng: random.Random, trace_id: bytes, now_ns: int) -> trace_pb2.Span:
    model = rng.choice(MODELS)
    inp = json.dumps(
        [
            {"role": "system", "parts": [{"type": "text", "content": _sentence(rng, 200)}]},
            {"role": "user", "parts": [{"type": "text", "content": _sentence(rng, 350)}]},
        ]
    )
    out = json.dumps(
        [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": _sentence(rng, 400)}],
                "finish_reason": "stop",
            }
        ]
    )
    start = now_ns - rng.randrange(1_000_000_000, 5_000_000_000)
    return trace_pb2.Span(
        trace_id=trace_id,
        span_id=os.urandom(8),
        parent_span_id=os.urandom(8),
        name=f"chat {model}",
        kind=trace_pb2.Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=start,
        end_time_unix_nano=start + rng.randrange(200_000_000, 4_000_000_000),
        attributes=[
            _kv("gen_ai.operation.name", "chat"),
            _kv("gen_ai.provider.name", "openai" if model.startswith("gpt") else "anthropic"),
            _kv("gen_ai.request.model", model),
            _kv("gen_ai.response.model", model),
            _kv("gen_ai.request.temperature", 0.7),
            _kv("gen_ai.request.max_tokens", 512),
            _kv("gen_ai.response.id", "chatcmpl-" + os.urandom(12).hex()),
            _kv("gen_ai.response.finish_reasons", "stop"),
            _kv("gen_ai.usage.input_tokens", rng.randrange(50, 2000)),
            _kv("gen_ai.usage.output_tokens", rng.randrange(10, 800)),
            _kv("server.address", "api.openai.com"),
            _kv("server.port", 443),
            _kv("gen_ai.input.messages", inp),
            _kv("gen_ai.output.messages", out),
        ],
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_UNSET),
    )


def http_span(rng: random.Random, trace_id: bytes, now_ns: int) -> trace_pb2.Span:
    route = rng.choice(ROUTES)
    start = now_ns - rng.randrange(1_000_000, 900_000_000)
    status = rng.choice((200, 200, 200, 201, 404, 500))
    return trace_pb2.Span(
        trace_id=trace_id,
        span_id=os.urandom(8),
        name=f"GET {route}",
        kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start,
        end_time_unix_nano=start + rng.randrange(100_000, 300_000_000),
        attributes=[
            _kv("http.request.method", "GET"),
            _kv("http.route", route),
            _kv("url.path", route.replace("{id}", str(rng.randrange(1, 10_000)))),
            _kv("url.scheme", "https"),
            _kv("http.response.status_code", status),
            _kv("server.address", "shop.example.com"),
            _kv("server.port", 443),
            _kv("network.protocol.version", "1.1"),
            _kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
            _kv("client.address", f"10.0.{rng.randrange(256)}.{rng.randrange(256)}"),
        ],
        status=trace_pb2.Status(
            code=trace_pb2.Status.STATUS_CODE_ERROR if status >= 500 else 0,
            message="Internal Server Error" if status >= 500 else "",
        ),
    )


def make_request(
    n_spans: int, seed: int = 0, now_ns: int = 1_760_000_000_000_000_000
) -> ExportTraceServiceRequest:
    """One export request of ``n_spans`` spans from one service, half GenAI."""
    rng = random.Random(seed)
    spans = []
    for i in range(n_spans):
        trace_id = os.urandom(16)
        maker = genai_span if i % 2 == 0 else http_span
        spans.append(maker(rng, trace_id, now_ns))
    resource = {
        "service.name": f"shop-{seed % 4}",
        "service.version": "1.4.2",
        "deployment.environment.name": "prod",
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": "1.38.0",
        "host.name": "web-7f9c",
    }
    request = ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.extend(_kv(k, v) for k, v in resource.items())
    ss = rs.scope_spans.add()
    ss.scope.name = "lqo.bench"
    ss.scope.version = "0.1.0"
    ss.spans.extend(spans)
    return request
