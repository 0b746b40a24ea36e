"""Acceptance 3: an unmodified app under ``lqo-instrument`` sends GenAI spans to a running
``lqo collector``; ``lqo query`` finds them. Also: plain ``opentelemetry-instrument`` picks up the
instrumentor through its entry point."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pki import make_pki, secured

from .expected import expected_for
from .replay import RECORDINGS, ReplayServer, load_cassette

BIN = Path(sys.executable).parent
APP = Path(__file__).parent / "apps" / "chat_app.py"


def _exchanges() -> list[Any]:
    return (load_cassette(RECORDINGS / "openai" / "openai__test_chat_completion_streaming.yaml")
            + load_cassette(RECORDINGS / "openai" / "openai__test_embeddings_no_content.yaml"))


def _app_env(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OPENAI_BASE_URL=f"{url}/v1", OPENAI_API_KEY="test-key", OTEL_SERVICE_NAME="chat-app",
               OTEL_BSP_SCHEDULE_DELAY="100", **extra)
    return env


def _run_app(collector: Any, **env: str) -> subprocess.CompletedProcess[bytes]:
    """The app under lqo-instrument against a replay of its two calls, exporting to ``collector``."""
    with ReplayServer(_exchanges()) as srv:
        out = subprocess.run([str(BIN / "lqo-instrument"), sys.executable, str(APP)],
                             env=_app_env(srv.url, OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_url, **env),
                             capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    return out


def test_lqo_instrument_to_collector(collector: Any) -> None:
    out = _run_app(collector)
    assert b"This is a test" in out.stdout
    assert collector.wait_stored(2) >= 2
    rows = collector.query(
        "SELECT SpanName, SpanKind, ServiceName, SpanAttributes FROM otel_traces "
        "WHERE ScopeName = 'lqo.instrumentation.httpx' ORDER BY Timestamp"
    )
    assert [r["SpanName"] for r in rows] == ["chat gpt-4", "embeddings text-embedding-3-small"]
    chat, emb = rows[0]["SpanAttributes"], rows[1]["SpanAttributes"]
    assert rows[0]["ServiceName"] == "chat-app" and rows[0]["SpanKind"] == "Client"
    assert chat["gen_ai.provider.name"] == "openai"
    chat_expected = expected_for(_exchanges()[0])
    assert chat["gen_ai.response.model"] == chat_expected.response_model
    assert chat["gen_ai.usage.input_tokens"] == str(chat_expected.input_tokens)
    assert chat["gen_ai.usage.output_tokens"] == str(chat_expected.output_tokens)
    assert json.loads(chat["gen_ai.response.finish_reasons"]) == chat_expected.finish_reasons
    assert float(chat["gen_ai.response.time_to_first_chunk"]) > 0
    # The distro's default content mode is SPAN_ONLY: the collector's checks get the text.
    assert json.loads(chat["gen_ai.output.messages"])[0]["parts"][0]["content"] == '"This is a test."'
    emb_expected = expected_for(_exchanges()[1])
    assert emb["gen_ai.usage.input_tokens"] == str(emb_expected.input_tokens)
    assert emb["gen_ai.response.model"] == emb_expected.response_model


def test_lqo_instrument_respects_user_settings(collector: Any) -> None:
    _run_app(collector, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="NO_CONTENT")
    assert collector.wait_stored(2) >= 2
    rows = collector.query("SELECT SpanAttributes FROM otel_traces WHERE SpanName = 'chat gpt-4'")
    assert rows and "gen_ai.output.messages" not in rows[0]["SpanAttributes"]


def _scopes_and_calls(collector: Any) -> tuple[set[str], int]:
    scopes = {r["ScopeName"] for r in collector.query("SELECT DISTINCT ScopeName FROM otel_traces")}
    calls = int(collector.query("SELECT count() AS c FROM otel_traces_genai")[0]["c"])
    return scopes, calls


def test_lqo_instrument_records_each_call_once(collector: Any) -> None:
    """openai-v2, OpenLLMetry's and OpenInference's openai instrumentors are installed here (the
    overhead benchmark's peers): loaded beside lqo's, each call would be four GenAI spans."""
    out = _run_app(collector)
    [line] = [ln for ln in out.stderr.decode().splitlines() if ln.startswith("lqo-distro:")]
    assert "left out 3 instrumentor(s)" in line
    for shipped in ("opentelemetry-instrumentation-openai-v2", "opentelemetry-instrumentation-openai",
                    "openinference-instrumentation-openai"):  # the installed distributions
        assert f"openai ({shipped})" in line
    assert collector.wait_stored(2, table="otel_traces_genai") >= 2
    time.sleep(0.5)  # anything else the app sent
    scopes, calls = _scopes_and_calls(collector)
    assert calls == 2  # the streamed chat and the embeddings call, once each
    assert scopes <= {"lqo.instrumentation.httpx", "opentelemetry.instrumentation.httpx"}, scopes


def test_lqo_instrument_loads_them_all_when_told(collector: Any) -> None:
    out = _run_app(collector, LQO_GENAI_SKIP_DUPLICATES="false")
    stderr = out.stderr.decode()
    assert "lqo-distro:" not in stderr
    # lqo's instrumentation sees a peer's span around its own and says so, once per peer at most
    assert "also recorded by another instrumentation" in stderr
    assert "This is a test" not in stderr
    assert collector.wait_stored(3, table="otel_traces_genai") >= 3
    scopes, _ = _scopes_and_calls(collector)
    assert {"lqo.instrumentation.httpx", "opentelemetry.instrumentation.openai_v2"} <= scopes


def test_nothing_left_out_with_lqos_own_disabled(collector: Any) -> None:
    out = _run_app(collector, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="lqo_genai_httpx")
    assert "lqo-distro:" not in out.stderr.decode()
    assert collector.wait_stored(2, table="otel_traces_genai") >= 2
    scopes, _ = _scopes_and_calls(collector)
    assert "lqo.instrumentation.httpx" not in scopes
    assert "opentelemetry.instrumentation.openai_v2" in scopes


def test_messages_recorded_as_events_reach_their_span(make_collector: Any) -> None:
    """EVENT_ONLY: the messages leave the span for a ``gen_ai.client.inference.operation.details``
    log record; the distro exports log records to the collector too, which adds the event to its
    span, and genai_normalize puts the messages back on it as attributes."""
    collector = make_collector({"processors": {"genai_normalize": {}},
                                "service": {"pipelines": {"traces": {"processors": ["genai_normalize"]}}}})
    _run_app(collector, OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT="EVENT_ONLY")
    assert collector.wait_stored(2, table="otel_traces_genai") >= 2
    [chat] = collector.query("SELECT `Events.Name` AS events, SpanAttributes AS a FROM otel_traces "
                             "WHERE ScopeName = 'lqo.instrumentation.httpx' AND SpanName = 'chat gpt-4'")
    assert chat["events"] == ["gen_ai.client.inference.operation.details"]
    assert json.loads(chat["a"]["gen_ai.output.messages"])[0]["parts"][0]["content"] == '"This is a test."'
    assert json.loads(chat["a"]["gen_ai.input.messages"])[0]["parts"][0]["content"] == "Say this is a test"
    assert 'lqo_genai_events_total{outcome="attached"} 2.0' in collector.metrics()


def test_calls_are_reported_by_user_and_conversation(make_collector: Any) -> None:
    """Who and which conversation, end to end: baggage (from a W3C header, and set in code) and a
    request's own end-user field reach the GenAI table through the collector's default
    processing, and ``lqo report --by user|conversation`` sums the calls per key."""
    collector = make_collector({"processors": {"genai_normalize": {}, "cost": {}},
                                "service": {"pipelines": {"traces": {"processors": ["genai_normalize", "cost"]}}}})
    [recorded] = load_cassette(RECORDINGS / "openai" / "openai__test_chat_completion_metrics.yaml")
    rid = json.loads(recorded.body)["id"]  # the recorded answer, five times, each with an id of its own
    chat = [dataclasses.replace(recorded, body=recorded.body.replace(rid.encode(), f"{rid}-{i}".encode()))
            for i in range(5)]
    with ReplayServer(chat) as srv:
        out = subprocess.run([str(BIN / "lqo-instrument"), sys.executable, str(APP.parent / "support_app.py")],
                             env=_app_env(srv.url, OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_url),
                             capture_output=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == b"done", out.stderr.decode()
    assert collector.wait_stored(5, table="otel_traces_genai") == 5
    rows = collector.query("SELECT UserId, ConversationId, CostUsd FROM otel_traces_genai ORDER BY Timestamp")
    assert [(r["UserId"], r["ConversationId"]) for r in rows] == [
        ("u-ann", "conv-1"), ("u-ann", "conv-1"), ("u-bob", "thread-9"), ("hashed-cy", ""), ("", "")]
    per_call = float(rows[0]["CostUsd"])
    assert per_call > 0

    def report(by: str) -> dict[str, dict[str, Any]]:
        done = subprocess.run([str(BIN / "lqo"), "report", "--config", str(collector.config_path), "--by", by,
                               "--format", "json"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return {row[by]: row for row in map(json.loads, done.stdout.splitlines())}

    users = report("user")
    assert {k: v["calls"] for k, v in users.items()} == {"all": 5, "u-ann": 2, "u-bob": 1, "hashed-cy": 1, "-": 1}
    assert users["u-ann"]["cost_usd"] == pytest.approx(2 * per_call, abs=1e-6)  # (rounded to µ$)
    assert list(users)[:2] == ["all", "u-ann"]  # the total, then the largest spend
    conversations = report("conversation")
    assert {k: v["calls"] for k, v in conversations.items()} == {"all": 5, "conv-1": 2, "thread-9": 1, "-": 2}

    # the feedback, sent as a log record by response id, joins ann's first call
    assert collector.wait_stored(1, table="otel_traces_genai_evaluations") == 1
    feedback = subprocess.run([str(BIN / "lqo"), "report", "--evaluations", "--by", "user", "--config",
                               str(collector.config_path), "--format", "json"], capture_output=True, text=True,
                              timeout=120)
    assert [(r["evaluation"], r["user"], r["results"], r["labels"]) for r in map(json.loads, feedback.stdout.splitlines())
            ] == [("user_feedback", "u-ann", 1, "thumbs_down 1")]


def test_lqo_instrument_usage() -> None:
    out = subprocess.run([str(BIN / "lqo-instrument")], capture_output=True, timeout=60)
    assert out.returncode == 2 and b"usage: lqo-instrument" in out.stderr
    from opentelemetry.instrumentation.version import __version__ as otel

    from lqo.distro.version import __version__
    version = subprocess.run([str(BIN / "lqo-instrument"), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith(f"lqo-instrument {__version__} (")
    assert f"opentelemetry-instrumentation {otel})" in version.stdout  # the distro's version, and upstream's


def test_lqo_instrument_names_a_program_it_cannot_run(tmp_path: Path) -> None:
    """The shell's message and status, not a traceback (``opentelemetry-instrument`` passes None
    to exec): a command not on PATH, a script named without ``python``, one not executable."""
    script = tmp_path / "app.py"
    script.write_text("print('ran')\n")
    hint = "; a script runs as: lqo-instrument python "
    for command, status, said in [("no-such-program-lqo", 127, "command not found"),
                                  ("app.py", 127, f"command not found{hint}app.py"),
                                  ("./app.py", 126, f"Permission denied (not executable){hint}./app.py")]:
        out = subprocess.run([str(BIN / "lqo-instrument"), command, "--flag"], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)
        assert (out.returncode, out.stdout, out.stderr) == (status, "", f"lqo-instrument: {command}: {said}\n")
    script.chmod(0o755)
    script.write_text(f"#!{sys.executable}\nprint('ran')\n")
    ran = subprocess.run([str(BIN / "lqo-instrument"), "./app.py"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "OTEL_TRACES_EXPORTER": "none"})
    assert (ran.returncode, ran.stdout) == (0, "ran\n"), ran


def test_plain_opentelemetry_instrument_finds_the_instrumentor() -> None:
    with ReplayServer(_exchanges()) as srv:
        out = subprocess.run(
            [str(BIN / "opentelemetry-instrument"), "--traces_exporter", "console",
             "--metrics_exporter", "none", "--logs_exporter", "none", sys.executable, str(APP)],
            # The peers installed here for the overhead benchmark are switched off, so these
            # spans can only be ours.
            env=_app_env(srv.url, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="openai"),
            capture_output=True, timeout=120,
        )
    assert out.returncode == 0, out.stderr.decode()
    assert b'"name": "chat gpt-4"' in out.stdout
    assert b'"name": "embeddings text-embedding-3-small"' in out.stdout
    assert b'"gen_ai.usage.output_tokens": 5' in out.stdout


def test_api_keys_in_urls_never_reach_the_collector(collector: Any) -> None:
    """Gemini's REST API takes its key in the query string; the HTTP client span (the contrib
    httpx instrumentation, loaded by lqo-instrument) records the URL, and redacts only the
    semconv's few parameters. The distro's processor redacts the key before export."""
    from .test_gemini import ANSWER, PATH, _json

    secret = "AIzaSyD-not-a-real-key-0123456789"
    with ReplayServer([_json(PATH, ANSWER)]) as srv:
        out = subprocess.run(
            [str(BIN / "lqo-instrument"), sys.executable, str(APP.parent / "gemini_rest_app.py")],
            env=_app_env(srv.url, OTEL_EXPORTER_OTLP_ENDPOINT=collector.http_url, GEMINI_BASE_URL=srv.url,
                         GEMINI_API_KEY=secret),
            capture_output=True, timeout=120,
        )
        assert f"key={secret}" in srv.received[0][1]  # the app really sent it
    assert out.returncode == 0, out.stderr.decode()
    assert b"Lyon" in out.stdout
    assert collector.wait_stored(2) >= 2
    rows = collector.query("SELECT ScopeName, SpanAttributes FROM otel_traces")
    assert {r["ScopeName"] for r in rows} >= {"lqo.instrumentation.httpx", "opentelemetry.instrumentation.httpx"}
    assert secret not in json.dumps(rows)
    (http,) = [r["SpanAttributes"] for r in rows if r["ScopeName"] == "opentelemetry.instrumentation.httpx"]
    url = http.get("url.full") or http["http.url"]
    assert url.endswith(f"{PATH}?key=REDACTED")


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_lqo_instrument_to_a_collector_with_tls_and_a_token(make_collector: Any, tmp_path: Path,
                                                            protocol: str) -> None:
    """The documented client setup (docs/configuration.md, "Securing the receivers"): only the
    standard OTEL_* variables point an unmodified app at a collector that asks for TLS and a token."""
    pki = make_pki(tmp_path / "pki")
    token = "zero-code-token-42"
    (tmp_path / "token").write_text(token + "\n")
    collector = make_collector(secured(pki, tmp_path / "token"))
    port = collector.grpc_port if protocol == "grpc" else collector.http_port
    with ReplayServer(_exchanges()) as srv:
        env = _app_env(srv.url, OTEL_EXPORTER_OTLP_ENDPOINT=f"https://127.0.0.1:{port}",
                       OTEL_EXPORTER_OTLP_PROTOCOL=protocol,
                       OTEL_EXPORTER_OTLP_CERTIFICATE=str(pki["ca"]),
                       OTEL_EXPORTER_OTLP_HEADERS=f"authorization=Bearer%20{token}")
        # requests would let these override the exporter's certificate (psf/requests#3829)
        env.pop("REQUESTS_CA_BUNDLE", None)
        env.pop("CURL_CA_BUNDLE", None)
        out = subprocess.run([str(BIN / "lqo-instrument"), sys.executable, str(APP)],
                             env=env, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert collector.wait_stored(2) >= 2
    rows = collector.query("SELECT SpanName FROM otel_traces WHERE ScopeName = 'lqo.instrumentation.httpx' "
                           "ORDER BY Timestamp")
    assert [r["SpanName"] for r in rows] == ["chat gpt-4", "embeddings text-embedding-3-small"]
    assert 'reason="unauthenticated"' not in collector.metrics()
