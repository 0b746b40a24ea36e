"""Config validation names the key and the fix; the collector flushes on shutdown."""

from __future__ import annotations

import subprocess

import pytest
from conftest import LQO
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from lqo.collector.config import ConfigError, load_yaml, parse_duration, parse_size
from lqo.collector.service import validate_config

BASE = """
receivers:
  otlp:
    protocols:
      grpc:
exporters:
  clickhouse:
    endpoint: {endpoint}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [clickhouse]
"""


def _validate(text: str, env: dict[str, str] | None = None):
    return validate_config(load_yaml(text, "test.yaml", env or {}))


def test_env_substitution_with_types_and_defaults():
    built = _validate(
        BASE.format(endpoint="${env:CH_URL}")
        + "  telemetry:\n    metrics:\n      address: 127.0.0.1:${env:MPORT:-9999}\n",
        {"CH_URL": "http://db.internal:8123"},
    )
    assert built.components["exporters"]["clickhouse"].endpoint == "http://db.internal:8123"
    assert built.service.telemetry.metrics.address == "127.0.0.1:9999"
    grpc = built.components["receivers"]["otlp"].protocols.grpc
    assert grpc is not None and grpc.endpoint == "127.0.0.1:4317"  # `grpc:` alone = defaults


@pytest.mark.parametrize(
    "text,expected",
    [
        (BASE.format(endpoint="${env:NOPE}"),
         "exporters.clickhouse.endpoint: environment variable NOPE is not set"),
        (BASE.format(endpoint="ftp://x"),
         "exporters.clickhouse.endpoint: use embedded://PATH for the built-in store"),
        (BASE.format(endpoint="embedded://x").replace("endpoint:", "endpont: x\n    endpoint:"),
         "exporters.clickhouse.endpont: unknown key; did you mean 'endpoint'? valid keys here are: batch, cluster_name"),
        # in an optional section, and in a list's items: the section's keys, not a pointer to the docs
        (BASE.format(endpoint="embedded://x").replace("      grpc:", "      grpc:\n        endpoit: h:1"),
         "receivers.otlp.protocols.grpc.endpoit: unknown key; did you mean 'endpoint'? valid keys here are: "
         "auth, endpoint, max_recv_msg_size, tls, workers"),
        (BASE.format(endpoint="embedded://x").replace("exporters:\n", "processors:\n  filter: {drop: [{nme: x}]}\n"
                                                      "exporters:\n").replace("      exporters:", "      processors: "
                                                                               "[filter]\n      exporters:"),
         "processors.filter.drop.0.nme: unknown key; valid keys here are: attributes, genai, service_name, span_kind"),
        (BASE.format(endpoint="embedded://x\n    batch:\n      max_rows: -1"),
         "exporters.clickhouse.batch.max_rows: Input should be greater than 0 (got -1)"),
        (BASE.format(endpoint="embedded://x").replace("exporters: [clickhouse]", "exporters: [kafka]"),
         "service.pipelines.traces.exporters: 'kafka' is not defined under exporters (defined: clickhouse)"),
        (BASE.format(endpoint="embedded://x").replace("  clickhouse:\n", "  clickhouse:\n  kafka:\n")
         .replace("exporters: [clickhouse]", "exporters: [kafka]"),
         "exporters.kafka: unknown exporter type 'kafka'; available: clickhouse"),
        (BASE.format(endpoint="embedded://x").replace("      grpc:", "      grpc:\n        endpoint: nohost"),
         "receivers.otlp.protocols.grpc.endpoint: endpoint: 'nohost' is not HOST:PORT"),
        ("receivers: [1, 2]\n", "service: required"),
        ("receivers: {otlp: {}\n", "not valid YAML"),
        (BASE.format(endpoint="embedded://x") + "connectors: {}\n",
         "connectors: unknown top-level key; valid keys are: extensions, receivers, processors"),
        (BASE.format(endpoint="embedded://x").replace("    traces:", "    logs:"),
         "only one pipeline, named 'traces'"),
    ],
)
def test_validation_errors_name_the_key_and_the_fix(text, expected):
    with pytest.raises(ConfigError) as err:
        _validate(text)
    assert expected in str(err.value)


def test_units():
    assert parse_duration("250ms") == 0.25 and parse_duration("72h") == 259200 and parse_duration(3) == 3
    assert parse_size("20MiB") == 20 * 1024 * 1024 and parse_size(10) == 10
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_cli_says_its_version():
    from lqo.collector.version import __version__

    out = subprocess.run([LQO, "--version"], capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, f"lqo {__version__}\n")


def test_cli_reports_config_errors_with_exit_code_2(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(BASE.format(endpoint="ftp://x"))
    out = subprocess.run([LQO, "collector", "--config", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 2
    assert "exporters.clickhouse.endpoint" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([LQO, "collector", "--config", str(tmp_path / "missing.yaml")],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "does not exist" in out.stderr


def test_reading_where_nothing_was_stored_says_so_and_makes_no_store(tmp_path):
    """``lqo query``/``report``/``erase`` run away from the collector (another directory, no
    --config): a clear error naming the directory they looked in, and no empty store left there."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(BASE.format(endpoint="embedded://./store"))
    for args in (["query", "SELECT 1"], ["report"], ["erase", "--user", "ann", "--yes"]):
        out = subprocess.run([LQO, *args, "--config", str(cfg)], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 1 and out.stdout == "", out
        assert out.stderr.startswith(f"lqo {args[0]}: no store at {tmp_path / 'store'}") and "Traceback" not in out.stderr
        assert f"run lqo {args[0]} where the collector runs" in out.stderr
    assert not (tmp_path / "store").exists()


def test_query_refuses_writes_and_table_functions(collector):
    for sql, word in [("DROP TABLE otel_traces", "read-only"),
                      ("SELECT 1; DROP TABLE otel_traces", "one statement"),
                      ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "readonly")]:
        out = subprocess.run([LQO, "query", "--config", str(collector.config_path), sql],
                             cwd=collector.workdir, capture_output=True, text=True)
        assert out.returncode == 1 and word in out.stderr, out.stderr
    assert collector.query("SELECT count() AS c FROM otel_traces") == [{"c": 0}]


def test_port_in_use_is_a_clear_error(make_collector):
    first = make_collector()
    second = make_collector(start=False)
    second.config_path.write_text(first.config_path.read_text().replace("./store", "./store2"))
    out = subprocess.run([LQO, "collector", "--config", str(second.config_path)],
                         cwd=second.workdir, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "cannot listen" in out.stderr and "Traceback" not in out.stderr


def test_sigterm_flushes_everything_accepted(make_collector):
    c = make_collector({"exporters": {"clickhouse": {"batch": {"flush_interval": "5s"}}}})
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=c.grpc_endpoint, insecure=True)))
    tracer = provider.get_tracer("t")
    for i in range(500):
        tracer.start_span(f"s{i}").end()
    provider.shutdown()  # all 500 acknowledged by the collector
    assert c.stop() == 0  # long flush_interval: only the shutdown flush can have written them
    restarted = c.start()
    assert restarted.query("SELECT count() AS c FROM otel_traces") == [{"c": 500}]
    assert "shutting down" in c.log()
    # the start says where to send and what runs
    assert (f"collector ready: OTLP/gRPC 127.0.0.1:{c.grpc_port}, OTLP/HTTP 127.0.0.1:{c.http_port}; metrics and "
            f"health on 127.0.0.1:{c.metrics_port}; processors: none; exporters: clickhouse\n") in c.log()


def test_lqo_schema_prints_the_configured_ddl(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(BASE.format(endpoint="http://db:8123")
                   .replace("    endpoint: http://db:8123\n",
                            "    endpoint: http://db:8123\n    database: otel\n"
                            "    ttl: 30d\n    cluster_name: prod\n"))
    out = subprocess.run([LQO, "schema", "--config", str(cfg)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "CREATE TABLE IF NOT EXISTS `otel`.`otel_traces` ON CLUSTER `prod`" in out.stdout
    assert "ENGINE = ReplicatedMergeTree()" in out.stdout
    assert "TTL toDateTime(Timestamp) + toIntervalDay(30)" in out.stdout
    assert out.stdout.count(";\n") == 9  # database, spans, lookup + view, GenAI calls, roll-ups, evaluations + 2 views


def test_default_config_runs_the_installed_offline_processors_and_both_exporters():
    from lqo.collector.config import default_config

    built = validate_config(default_config({}))
    assert built.pipeline.processors == ["redaction", "genai_normalize", "pii", "cost", "hallucination", "prompt_injection"]
    assert built.pipeline.exporters == ["clickhouse", "prometheus"]
    assert built.service.telemetry.metrics.address == "127.0.0.1:8888"


def test_the_collector_fixture_retries_on_ports_taken_before_it_binds(make_collector, monkeypatch) -> None:
    """free_port() can hand out a port another socket takes before the collector binds it; the
    fixture then starts the collector on new ports instead of failing the test."""
    import socket

    import conftest

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    real, calls = conftest.free_port, []

    def first_busy() -> int:
        calls.append(1)
        return busy if len(calls) == 2 else real()  # the HTTP port of the first attempt

    monkeypatch.setattr(conftest, "free_port", first_busy)
    try:
        col = make_collector()
    finally:
        taken.close()
    assert len(calls) == 6 and col.http_port != busy
    assert "Address already in use" in col.log()
