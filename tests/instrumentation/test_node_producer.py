"""Acceptance 4: OTLP from another language. A Node.js program (``@opentelemetry/sdk-node`` +
``@opentelemetry/instrumentation-openai``, the ``openai`` npm client against a local replay of a
recording) exports to the collector over OTLP gRPC and over HTTP; its spans are stored."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pki import make_pki, secured

from .expected import expected_for
from .replay import RECORDINGS, ReplayServer, load_cassette

NODE_DIR = Path(__file__).parent / "node"
CASSETTE = RECORDINGS / "openai" / "openai__test_chat_completion_no_content.yaml"


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_node_openai_spans_are_stored(transport: str, collector: Any) -> None:
    node = shutil.which("node")
    assert node, "node is required (bin/bootstrap installs the npm packages)"
    assert (NODE_DIR / "node_modules").is_dir(), "run bin/bootstrap: it installs tests/instrumentation/node"
    exchanges = load_cassette(CASSETTE)
    url = f"http://{collector.grpc_endpoint}" if transport == "grpc" else f"{collector.http_url}/v1/traces"
    with ReplayServer(exchanges) as srv:
        env = {**os.environ, "LQO_TRANSPORT": transport, "LQO_OTLP_URL": url, "OPENAI_BASE_URL": f"{srv.url}/v1"}
        out = subprocess.run([node, "producer.js"], cwd=NODE_DIR, env=env, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    exp = expected_for(exchanges[0])
    assert out.stdout.decode().strip() == exp.output_text[0]
    assert collector.wait_stored(1) >= 1
    rows = collector.query(
        "SELECT SpanName, ServiceName, ScopeName, SpanKind, SpanAttributes FROM otel_traces "
        f"WHERE ServiceName = 'node-producer-{transport}'"
    )
    chat = [r for r in rows if r["ScopeName"] == "@opentelemetry/instrumentation-openai"]
    assert len(chat) == 1, rows
    attrs = chat[0]["SpanAttributes"]
    assert chat[0]["SpanKind"] == "Client"
    assert chat[0]["SpanName"] == "chat gpt-4o-mini"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"] == exp.response_model
    assert attrs["gen_ai.response.id"] == exp.response_id
    assert attrs["gen_ai.usage.input_tokens"] == str(exp.input_tokens)
    assert attrs["gen_ai.usage.output_tokens"] == str(exp.output_tokens)


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_node_message_events_reach_their_spans(transport: str, make_collector: Any) -> None:
    """The Node.js instrumentation records messages as log-based events (``gen_ai.user.message``,
    ``gen_ai.choice``), not on the span: sent to the collector's logs endpoint, they are added to
    their span, and genai_normalize makes them the span's semconv messages, for the checks and
    the store."""
    node = shutil.which("node")
    assert node, "node is required (bin/bootstrap installs the npm packages)"
    collector = make_collector({"processors": {"genai_normalize": {}},
                                "service": {"pipelines": {"traces": {"processors": ["genai_normalize"]}}}})
    exchanges = load_cassette(CASSETTE)
    base = f"http://{collector.grpc_endpoint}" if transport == "grpc" else collector.http_url
    with ReplayServer(exchanges) as srv:
        env = {**os.environ, "LQO_TRANSPORT": transport, "OPENAI_BASE_URL": f"{srv.url}/v1",
               "LQO_OTLP_URL": base if transport == "grpc" else f"{base}/v1/traces",
               "LQO_OTLP_LOGS_URL": base if transport == "grpc" else f"{base}/v1/logs"}
        out = subprocess.run([node, "producer.js"], cwd=NODE_DIR, env=env, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert collector.wait_stored(1) >= 1
    [chat] = collector.query(
        "SELECT `Events.Name` AS events, SpanAttributes FROM otel_traces "
        f"WHERE ServiceName = 'node-producer-{transport}' AND ScopeName = '@opentelemetry/instrumentation-openai'")
    assert {"gen_ai.user.message", "gen_ai.choice"} <= set(chat["events"])
    attrs = chat["SpanAttributes"]
    [asked] = json.loads(attrs["gen_ai.input.messages"])
    assert asked["role"] == "user" and asked["parts"][0]["content"] == "Say this is a test"
    [answer] = json.loads(attrs["gen_ai.output.messages"])
    assert answer["parts"][0]["content"] == expected_for(exchanges[0]).output_text[0]
    metrics = collector.metrics()
    assert f'lqo_receiver_log_records_total{{kind="genai_event",receiver="otlp",transport="{transport}"}}' in metrics
    assert 'lqo_genai_events_total{outcome="attached"} 2.0' in metrics
    # the user's feedback, by the answer's response id: stored beside the call, and joined to it
    assert collector.wait_stored(1, table="otel_traces_genai_evaluations") == 1
    [feedback] = collector.query(
        "SELECT e.Name AS name, e.ScoreLabel AS label, e.ScoreValue AS score, e.ServiceName AS service, "
        "g.RequestModel AS model FROM otel_traces_genai_evaluations AS e "
        "INNER JOIN otel_traces_genai AS g ON e.ResponseId = g.ResponseId")
    assert feedback == {"name": "user_feedback", "label": "thumbs_up", "score": 1,
                        "service": f"node-producer-{transport}", "model": "gpt-4o-mini"}


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_node_spans_reach_a_collector_with_tls_and_a_token(transport: str, make_collector: Any,
                                                           tmp_path: Path) -> None:
    """The same Node.js program, configured only through the standard variables, against a
    collector that asks for TLS and a token (docs/configuration.md, "Securing the receivers")."""
    node = shutil.which("node")
    assert node, "node is required (bin/bootstrap installs the npm packages)"
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "token").write_text("node-token\n")
    collector = make_collector(secured(pki, tmp_path / "token"))
    url = (f"https://127.0.0.1:{collector.grpc_port}" if transport == "grpc"
           else f"https://127.0.0.1:{collector.http_port}/v1/traces")
    with ReplayServer(load_cassette(CASSETTE)) as srv:
        env = {**os.environ, "LQO_TRANSPORT": transport, "LQO_OTLP_URL": url, "OPENAI_BASE_URL": f"{srv.url}/v1",
               "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20node-token",
               "OTEL_EXPORTER_OTLP_CERTIFICATE": str(pki["ca"]),  # the gRPC exporter's CA
               "NODE_EXTRA_CA_CERTS": str(pki["ca"])}  # Node's https agent (the HTTP exporter)
        out = subprocess.run([node, "producer.js"], cwd=NODE_DIR, env=env, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert collector.wait_stored(1) >= 1
    rows = collector.query("SELECT SpanName FROM otel_traces "
                           f"WHERE ServiceName = 'node-producer-{transport}'")
    assert "chat gpt-4o-mini" in [r["SpanName"] for r in rows]
    assert 'reason="unauthenticated"' not in collector.metrics()
