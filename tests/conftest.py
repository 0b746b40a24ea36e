"""Shared fixtures: real collectors as subprocesses, and a chdb-backed ClickHouse server.

chdb allows one store path per process, so the pytest process owns exactly one
(``chdb_store``), and every collector under test runs as its own ``lqo collector``
subprocess with its own embedded store — as users run it.
"""

from __future__ import annotations

import copy
import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
LQO = str(Path(sys.executable).with_name("lqo"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


T = TypeVar("T")


def on_free_ports(start: Callable[[], T], attempts: int = 3) -> T:
    """``start()``, which binds ports from :func:`free_port`, again when one was taken in between.

    A port free_port() saw free can be taken (e.g. as some client's source port) before the
    server binds it: that is new ports, not a failed test."""
    for attempt in range(attempts):
        try:
            return start()
        except (RuntimeError, OSError, AssertionError) as exc:
            clash = "address already in use" in str(exc).lower() or "failed to bind" in str(exc).lower()
            if not clash or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@dataclass
class CollectorProcess:
    workdir: Path
    config_path: Path
    grpc_port: int
    http_port: int
    metrics_port: int
    proc: subprocess.Popen[bytes] | None = None
    # what runs instead of `lqo collector --config CONFIG` (e.g. the collector inside a namespace)
    command: list[str] | None = None
    # the CA of service.telemetry.metrics.tls, when set: readiness is asked over HTTPS
    admin_ca: Path | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / "collector.log"

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60.0) -> CollectorProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes it for its lifetime
        self.proc = subprocess.Popen(
            self.command or [LQO, "collector", "--config", str(self.config_path)],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited {self.proc.returncode}:\n{self.log()}")
            try:
                context = ssl.create_default_context(cafile=str(self.admin_ca)) if self.admin_ca else None
                with urllib.request.urlopen(
                    f"{'https' if context else 'http'}://127.0.0.1:{self.metrics_port}/readyz",
                    timeout=1, context=context,
                ) as r:
                    if r.status == 200:
                        return self
            except (OSError, http.client.HTTPException):
                # (something else answering on the port free_port() chose — another test's gRPC
                # server, say: this collector then fails to bind, exits, and gets new ports)
                pass
            time.sleep(0.1)
        raise TimeoutError(f"collector not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def query(self, sql: str, fmt: str = "json") -> Any:
        """`lqo query` exactly as a user runs it; JSON results come back parsed."""
        out = subprocess.run(
            [LQO, "query", "--config", str(self.config_path), "--format", fmt, sql],
            cwd=self.workdir, capture_output=True, timeout=120,
        )
        if out.returncode != 0:
            raise AssertionError(f"lqo query failed: {out.stderr.decode()}")
        text = out.stdout.decode()
        if fmt == "json":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return text

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as r:
            return r.read().decode()

    def wait_stored(self, expected: int, timeout: float = 30.0, table: str = "otel_traces") -> int:
        deadline = time.monotonic() + timeout
        count = -1
        while time.monotonic() < deadline:
            count = int(self.query(f"SELECT count() AS c FROM {table}")[0]["c"])
            if count >= expected:
                return count
            time.sleep(0.2)
        return count


def collector_config(
    grpc_port: int, http_port: int, metrics_port: int, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    config: dict[str, Any] = {
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"127.0.0.1:{grpc_port}"},
                    "http": {"endpoint": f"127.0.0.1:{http_port}"},
                }
            }
        },
        "exporters": {
            "clickhouse": {
                "endpoint": "embedded://./store",
                "batch": {"flush_interval": "100ms"},
            }
        },
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["clickhouse"]}},
            "telemetry": {"metrics": {"address": f"127.0.0.1:{metrics_port}"}},
        },
    }
    return _merge(config, overrides or {})


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def start_collector(workdir: Path, overrides: dict[str, Any] | None = None, start: bool = True,
                    started: list[CollectorProcess] | None = None) -> CollectorProcess:
    """A collector with ``overrides`` on free loopback ports, its config in ``workdir/lqo.yaml``."""
    config_path = workdir / "lqo.yaml"

    def attempt() -> CollectorProcess:
        ports = free_port(), free_port(), free_port()
        config_path.write_text(yaml.safe_dump(collector_config(*ports, copy.deepcopy(overrides))))
        proc = CollectorProcess(workdir, config_path, *ports)
        if started is not None:
            started.append(proc)
        return proc.start() if start else proc

    return on_free_ports(attempt)


@pytest.fixture
def make_collector(tmp_path: Path) -> Iterator[Any]:
    started: list[CollectorProcess] = []

    def make(overrides: dict[str, Any] | None = None, start: bool = True) -> CollectorProcess:
        workdir = tmp_path / f"collector{len(started)}"
        workdir.mkdir()
        return start_collector(workdir, overrides, start=start, started=started)

    yield make
    for proc in started:
        try:
            proc.stop()
        except Exception:
            pass


@pytest.fixture
def collector(make_collector: Any) -> CollectorProcess:
    return make_collector()


@pytest.fixture(scope="session")
def chdb_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any]]:
    """The pytest process's one chdb store: (writer, read-only reader) connections."""
    import chdb

    path = str(tmp_path_factory.mktemp("chdb"))
    writer = chdb.connect(path)
    reader = chdb.connect(path)
    reader.query("SET readonly = 1")
    yield writer, reader
    reader.close()
    writer.close()


@pytest.fixture
def ch_server(chdb_store: tuple[Any, Any]) -> Iterator[Any]:
    from chserver import ChdbHttpServer

    writer, reader = chdb_store
    db = f"t{os.getpid()}_{free_port()}"
    writer.query(f"CREATE DATABASE IF NOT EXISTS {db}")
    server = ChdbHttpServer(writer, reader).start()
    server.database = db
    yield server
    server.stop()
    writer.query(f"DROP DATABASE IF EXISTS {db}")


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Any]:
    """Real Prometheus and Alertmanager processes (tests/promstack.py), stopped after the test."""
    from promstack import Daemons

    started = Daemons(tmp_path)
    yield started
    started.stop()
