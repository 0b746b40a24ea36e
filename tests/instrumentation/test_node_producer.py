"""Acceptance 4: OTLP from another language. A Node.js program (``@opentelemetry/sdk-node`` +
``@opentelemetry/instrumentation-openai``, the ``openai`` npm client against a local replay of a
recording) exports to the collector over OTLP gRPC and over HTTP; its spans are stored."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

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
