"""Real Prometheus and Alertmanager processes on loopback (Debian packages; bin/bootstrap
installs them), and small clients for their HTTP APIs."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import free_port, on_free_ports

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
AMTOOL = shutil.which("amtool")
NEEDS = ("Prometheus, promtool, Alertmanager and amtool come from the Debian packages `prometheus` "
         "and `prometheus-alertmanager`; bin/bootstrap installs them")


def get_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def query(prom: str, expr: str) -> list[dict[str, Any]]:
    """An instant PromQL query; its result vector (or matrix)."""
    body = get_json(f"{prom}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_until(what: str, probe: Callable[[], Any], timeout: float = 30.0, every: float = 0.25) -> Any:
    """``probe()``'s first truthy answer; fails naming ``what`` and the last answer."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        seen = probe()
        if seen:
            return seen
        time.sleep(every)
    raise AssertionError(f"waited {timeout:.0f} s for {what}; last saw {seen!r}")


class Daemons:
    """Starts daemons that serve HTTP on a free port and stops them at the end of a test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []

    def _start(self, name: str, argv: Callable[[int], list[str]], ready_path: str) -> str:
        def attempt() -> str:
            port = free_port()
            log_path = self.tmp_path / f"{name}.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(argv(port), stdout=log, stderr=subprocess.STDOUT)
            self.procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"{url}{ready_path}", timeout=1) as r:
                        if r.status == 200:
                            return url
                except OSError:
                    time.sleep(0.2)
            raise AssertionError(f"{name} did not start: {log_path.read_text()[-2000:]}")

        return on_free_ports(attempt)

    def prometheus(self, config: str, name: str = "prometheus") -> str:
        """Prometheus with ``config`` (YAML text) written beside its data; its base URL."""
        assert PROMETHEUS and PROMTOOL, NEEDS
        config_path = self.tmp_path / f"{name}.yml"
        config_path.write_text(config)
        return self._start(name, lambda port: [
            PROMETHEUS, f"--config.file={config_path}", f"--storage.tsdb.path={self.tmp_path / name}",
            f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle",
            "--enable-feature=exemplar-storage"], "/-/ready")  # as the compose stack runs it

    def alertmanager(self, config_path: Path, name: str = "alertmanager") -> str:
        """Alertmanager with the config file at ``config_path``, clustering off; its base URL."""
        assert ALERTMANAGER and AMTOOL, NEEDS
        return self._start(name, lambda port: [
            ALERTMANAGER, f"--config.file={config_path}", f"--storage.path={self.tmp_path / name}",
            f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="], "/-/ready")

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()

