"""deploy/compose, checked statically (there is no Docker engine here): the file follows the
Compose Specification, the collector's config is valid for lqo, every file it mounts exists,
images are pinned, ports are DESIGN.md's and published on loopback only, secrets come from the
environment, and the addresses the parts use to find each other are the compose services'."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from conftest import ROOT

from lqo.collector.config import DEFAULT_PROCESSORS, load_file
from lqo.collector.service import validate_config

COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]


def test_compose_file_follows_the_compose_specification() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    result = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_DIR / "compose.yaml")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(SERVICES) == {"collector", "clickhouse", "prometheus", "alertmanager", "grafana"}


def test_the_collector_config_is_valid_and_uses_the_clickhouse_service() -> None:
    raw = load_file(COMPOSE_DIR / "collector.yaml", env={})
    built = validate_config(raw)
    assert built.pipeline.exporters == ["clickhouse", "prometheus"]
    assert built.pipeline.processors == list(DEFAULT_PROCESSORS)  # the default pipeline's, in order
    assert raw["exporters"]["clickhouse"]["endpoint"] == "http://clickhouse:8123"
    assert "password" not in raw["exporters"]["clickhouse"]  # from $LQO_CLICKHOUSE_PASSWORD
    assert SERVICES["collector"]["environment"]["LQO_CLICKHOUSE_PASSWORD"].startswith("${CLICKHOUSE_PASSWORD:?")
    # inside the container it listens on all interfaces; the host sees only loopback (below)
    endpoints = {p: raw["receivers"]["otlp"]["protocols"][p]["endpoint"] for p in ("grpc", "http")}
    assert endpoints == {"grpc": "0.0.0.0:4317", "http": "0.0.0.0:4318"}
    assert raw["service"]["telemetry"]["metrics"]["address"] == "0.0.0.0:8888"


def test_the_exporters_queue_is_kept_on_a_volume_the_collector_can_write() -> None:
    raw = load_file(COMPOSE_DIR / "collector.yaml", env={})
    built = validate_config(raw)
    exporter = built.components["exporters"]["clickhouse"]
    assert exporter.sending_queue.storage == "file_storage" and exporter.retry_on_failure.max_elapsed_time == 0
    directory = built.components["extensions"]["file_storage"].directory
    mounts = {m.split(":")[1]: m.split(":")[0] for m in SERVICES["collector"]["volumes"]}
    assert mounts[directory] in yaml.safe_load((COMPOSE_DIR / "compose.yaml").read_text())["volumes"]
    # a new named volume takes the image directory's owner: the Dockerfile makes it the lqo user's
    dockerfile = (COMPOSE_DIR / "Dockerfile").read_text()
    assert f"install -d -o lqo -g lqo -m 0700 {directory}" in dockerfile
    assert "USER 10001:10001" in dockerfile


def test_every_mounted_file_exists_and_every_image_is_pinned() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"
        image = service["image"]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image
    build = SERVICES["collector"]["build"]
    context = (COMPOSE_DIR / build["context"]).resolve()
    dockerfile = context / build["dockerfile"]
    assert context == ROOT and dockerfile.exists()
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            assert (context / line.split()[1]).exists(), line


def test_ports_are_designs_and_published_on_loopback_only() -> None:
    published = {}
    for name, service in SERVICES.items():
        for port in service.get("ports", []):
            host, host_port, container_port = port.split(":")
            assert host == "127.0.0.1", f"{name} publishes {port} beyond this host"
            published[int(host_port)] = (name, int(container_port))
    assert published[4317] == ("collector", 4317) and published[4318] == ("collector", 4318)
    assert published[8888] == ("collector", 8888)
    assert {published[p][0] for p in (3000, 9090, 9093)} == {"grafana", "prometheus", "alertmanager"}


def test_secrets_come_from_the_environment() -> None:
    for name, service in SERVICES.items():
        for key, value in service.get("environment", {}).items():
            if "PASSWORD" in key:
                assert str(value).startswith("${"), f"{name}: {key} is a literal secret"
    text = (COMPOSE_DIR / "compose.yaml").read_text()
    env_example = (COMPOSE_DIR / ".env.example").read_text()
    for variable in set(re.findall(r"\$\{(\w+):\?", text)):
        assert f"{variable}=" in env_example, f"{variable} is missing from .env.example"
    assert "deploy/compose/.env" in (ROOT / ".gitignore").read_text().splitlines()


def test_the_parts_find_each_other_by_service_name() -> None:
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in prometheus["scrape_configs"]}
    assert jobs["lqo-collector"] == ["collector:8888"]
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    datasources = {d["uid"]: d for d in yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/lqo.yml").read_text())["datasources"]}
    assert datasources["lqo-prometheus"]["url"] == "http://prometheus:9090"
    assert datasources["lqo-clickhouse"]["jsonData"]["host"] == "clickhouse"
    assert "grafana-clickhouse-datasource" in SERVICES["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["grafana"]["volumes"] if v.startswith(".")}
    dashboards_provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/lqo.yml").read_text())["providers"][0]
    assert mounts[dashboards_provider["options"]["path"]] == "../grafana/dashboards"
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (COMPOSE_DIR / "../grafana/dashboards" / Path(home).name).exists()
