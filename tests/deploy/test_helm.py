"""deploy/helm/lqo, rendered and linted by Helm itself (helm-python-sdk binds Helm v4's Go SDK;
there is no cluster here): every object of every storage mode is valid against the Kubernetes
OpenAPI schemas of the oldest and newest supported versions (strict: an unknown field fails),
the Prometheus Operator's objects against its CRDs' models, the collector's config is valid for
lqo, the parts find each other, the rules and dashboards are deploy/'s, secrets stay in Secrets,
and wrong values fail at install with a message that says what to set."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import trustme
import yaml
from cloudcoil.models.prometheus_operator import v1 as monitoring
from conftest import ROOT, CollectorProcess, free_port
from livestack import SERVICE, send_wave
from promstack import wait_until

from lqo.collector.config import DEFAULT_PROCESSORS, load_yaml
from lqo.collector.service import validate_config

CHART = ROOT / "deploy" / "helm" / "lqo"
RELEASE, NAMESPACE = "obs", "llm"
FULLNAME = "obs-lqo"
# The Kubernetes versions the chart supports (Chart.yaml's kubeVersion) and the newest one
# kubernetes-validate knows.
KUBE_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
PASSWORD, GRAFANA_PASSWORD = "s3cret-ClickHouse-pw", "s3cret-grafana-pw"
MONITORING = {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
              "prometheusRule": {"enabled": True}, "grafana": {"dashboards": {"enabled": True}}}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "clickhouse": {"storage": {"mode": "clickhouse"}, "replicaCount": 2,
                   "clickhouse": {"auth": {"password": PASSWORD, "grafanaPassword": GRAFANA_PASSWORD}},
                   **MONITORING, "grafana": {"dashboards": {"enabled": True}, "datasources": {"enabled": True}},
                   "networkPolicy": {"enabled": True}},
    "external": {"storage": {"mode": "external", "external": {
                     "endpoint": "https://ch.example.internal:8443", "database": "llm",
                     "clusterName": "main", "existingSecret": "lqo-clickhouse"}},
                 "autoscaling": {"enabled": True, "maxReplicas": 6}, **MONITORING,
                 "extraEnv": [{"name": "OTEL_RESOURCE_ATTRIBUTES", "value": "deployment.environment=prod"},
                              {"name": "LQO_TOXICITY_CHECKPOINT", "value": "/models/toxic_original-c1212f89.ckpt"}],
                 "extraVolumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "lqo-models"}}],
                 "extraVolumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
                 "networkPolicy": {"enabled": True, "otlpFrom": [{"namespaceSelector": {}}]},
                 "auth": {"existingSecret": "lqo-token", "query": {"existingSecret": "lqo-readers"}},
                 "tls": {"existingSecret": "lqo-tls", "clientAuth": True},
                 "metrics": {"tls": True, "auth": {"existingSecret": "lqo-scrape"}}},
    # each collector's sending queue on a claim of its own: a StatefulSet
    "queue-on-claims": {"storage": {"mode": "clickhouse"},
                        "clickhouse": {"auth": {"password": PASSWORD, "grafanaPassword": GRAFANA_PASSWORD}},
                        "sendingQueue": {"volume": "claim", "claim": {"size": "20Gi", "storageClass": "fast-ssd"}},
                        "autoscaling": {"enabled": True, "maxReplicas": 4}, **MONITORING},
}


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Template path → its objects, as `helm install` would send them (values checked first)."""
    chart.validate_schema(values or {})
    manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return {path.removeprefix("lqo/templates/"): [doc for doc in yaml.safe_load_all(text) if doc]
            for path, text in manifests.items() if path.endswith(".yaml")}


def objects(chart: helm.Chart, values: dict[str, Any] | None = None,
            hooks: bool = False) -> dict[tuple[str, str], dict[str, Any]]:
    """The release's objects by (kind, name); with hooks, the `helm test` pods instead."""
    rendered = [obj for docs in render(chart, values).values() for obj in docs
                if ("helm.sh/hook" in obj["metadata"].get("annotations", {})) == hooks]
    by_key = {(obj["kind"], obj["metadata"]["name"]): obj for obj in rendered}
    assert len(by_key) == len(rendered), "two objects of one kind share a name"
    return by_key


def collector_config(objs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return load_yaml(objs["ConfigMap", FULLNAME]["data"]["collector.yaml"], "ConfigMap", env={})


def pod_spec(objs: dict[tuple[str, str], dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return objs[kind, name]["spec"]["template"]["spec"]


def collector_workload(objs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    """The collectors' Deployment, or their StatefulSet (sendingQueue.volume claim)."""
    [workload] = [obj for (kind, name), obj in objs.items()
                  if kind in ("Deployment", "StatefulSet") and name == FULLNAME]
    return workload


def helm_test_script(chart: helm.Chart, values: dict[str, Any], metrics_port: int, http_port: int) -> str:
    """`helm test`'s pod script, pointed at a collector on this host's loopback ports."""
    [hook] = objects(chart, values, hooks=True).values()
    script = hook["spec"]["containers"][0]["command"][-1]
    return (script.replace(f"{FULLNAME}.{NAMESPACE}.svc", "127.0.0.1")
            .replace(":8888/", f":{metrics_port}/").replace(":4318/", f":{http_port}/"))


def tls_secret_files(directory: Path) -> None:
    """A kubernetes.io/tls Secret's files as the pod mounts them (cert-manager's ca.crt too), for
    a certificate of 127.0.0.1 from a throwaway CA."""
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(directory / "ca.crt"))
    server.cert_chain_pems[0].write_to_path(str(directory / "tls.crt"))
    server.private_key_pem.write_to_path(str(directory / "tls.key"))


def render_error(chart: helm.Chart, values: dict[str, Any]) -> str:
    with pytest.raises(helm.HelmError) as failure:
        render(chart, values)
    return str(failure.value)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_chart_lints_clean(name: str) -> None:
    for version in KUBE_VERSIONS:
        report = helm.lint(CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE, kube_version=f"v{version}")
        problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings, errors
        assert not problems and not report["errors"], (version, problems, report["errors"])


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_object_is_valid_for_kubernetes_and_the_prometheus_operator(chart: helm.Chart, name: str) -> None:
    objs = objects(chart, VALUE_SETS[name]) | objects(chart, VALUE_SETS[name], hooks=True)
    custom = 0
    for (kind, obj_name), obj in objs.items():
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", obj_name), obj_name
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            # the CRDs' models (cloudcoil, generated from prometheus-operator's CRDs): required
            # fields and patterns checked; an unknown field would not survive the round trip
            model = getattr(monitoring, kind).model_validate(obj)
            assert model.model_dump(by_alias=True, exclude_none=True, mode="json") == obj, kind
            custom += 1
            continue
        for version in KUBE_VERSIONS:
            error = None
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                error = f"{kind}/{obj_name} on Kubernetes {version}: {exc.message} at {list(exc.path)}"
            assert error is None, error
    assert custom == (0 if name == "defaults" else 2)


def test_defaults_run_one_collector_on_the_embedded_store(chart: helm.Chart) -> None:
    objs = objects(chart)
    assert {kind for kind, _ in objs} == {"ServiceAccount", "ConfigMap", "Service", "Deployment",
                                          "PersistentVolumeClaim"}
    deployment = objs["Deployment", FULLNAME]["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"] == {"type": "Recreate"}
    claim = objs["PersistentVolumeClaim", f"{FULLNAME}-data"]
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    volumes = {v["name"]: v for v in deployment["template"]["spec"]["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == f"{FULLNAME}-data"
    mounts = {m["name"]: m["mountPath"] for m in deployment["template"]["spec"]["containers"][0]["volumeMounts"]}
    endpoint = collector_config(objs)["exporters"]["clickhouse"]["endpoint"]
    assert endpoint.removeprefix("embedded://").startswith(mounts["data"] + "/")
    assert "env" not in deployment["template"]["spec"]["containers"][0]  # no credentials to pass


@pytest.mark.parametrize("name", VALUE_SETS)
def test_the_collector_config_is_valid_and_listens_on_designs_ports(chart: helm.Chart, name: str,
                                                                    tmp_path: Path) -> None:
    objs = objects(chart, VALUE_SETS[name])
    raw = collector_config(objs)
    built = validate_config(raw)
    assert built.pipeline.processors == list(DEFAULT_PROCESSORS)
    assert built.pipeline.exporters == ["clickhouse", "prometheus"]
    endpoints = {p: raw["receivers"]["otlp"]["protocols"][p]["endpoint"] for p in ("grpc", "http")}
    assert endpoints == {"grpc": "0.0.0.0:4317", "http": "0.0.0.0:4318"}  # the pod's interfaces
    assert raw["service"]["telemetry"]["metrics"]["address"] == "0.0.0.0:8888"
    assert "password" not in raw["exporters"]["clickhouse"] and "username" not in raw["exporters"]["clickhouse"]
    # as shipped, the collector's own check accepts it
    path = tmp_path / "collector.yaml"
    path.write_text(objs["ConfigMap", FULLNAME]["data"]["collector.yaml"])
    lqo = Path(sys.executable).with_name("lqo")
    result = subprocess.run([str(lqo), "collector", "--config", str(path), "--validate"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

    workload = collector_workload(objs)["spec"]["template"]["spec"]
    ports = {p["name"]: p["containerPort"] for p in workload["containers"][0]["ports"]}
    assert ports == {"otlp-grpc": 4317, "otlp-http": 4318, "metrics": 8888}
    service = objs["Service", FULLNAME]["spec"]
    assert {p["name"]: (p["port"], p["targetPort"]) for p in service["ports"]} == {
        name: (port, name) for name, port in ports.items()}
    assert service["type"] == "ClusterIP"  # reachable inside the cluster only, unless configured


def test_config_values_merge_over_the_charts(chart: helm.Chart) -> None:
    values = {"storage": {"ttl": "90d", "rollupTtl": "400d"}, "config": {
        "processors": {"pii": {"entities": ["EMAIL_ADDRESS", "PHONE_NUMBER"]}},
        "exporters": {"clickhouse": {"create_schema": False, "batch": {"max_rows": 250000, "max_bytes": 268435456}}},
        "service": {"queue": {"max_bytes": "512MiB"}, "telemetry": {"logs": {"level": "warning"}},
                    "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["redaction", "pii", "cost"],
                                             "exporters": ["clickhouse", "prometheus"]}}}}}
    raw = collector_config(objects(chart, values))
    built = validate_config(raw)
    assert built.pipeline.processors == ["redaction", "pii", "cost"]  # lists replace the chart's
    clickhouse = built.components["exporters"]["clickhouse"]
    assert clickhouse.create_schema is False and (clickhouse.batch.max_rows, clickhouse.batch.max_bytes) == (250000, 268435456)
    assert clickhouse.ttl == 90 * 86400 and clickhouse.endpoint.startswith("embedded://")  # maps merge
    assert clickhouse.rollup_ttl == 400 * 86400 and clickhouse.genai_tables is True
    assert built.service.queue.max_bytes == 512 * 1024**2 and built.service.telemetry.logs.level == "warning"
    assert built.service.telemetry.metrics.address == "0.0.0.0:8888"
    assert built.components["processors"]["pii"].entities == ["EMAIL_ADDRESS", "PHONE_NUMBER"]


@pytest.mark.parametrize("name", ["clickhouse", "external"])
def test_with_a_clickhouse_server_the_exporters_queue_is_kept_on_the_pods_data_volume(chart: helm.Chart,
                                                                                     name: str) -> None:
    objs = objects(chart, VALUE_SETS[name])
    built = validate_config(collector_config(objs))
    directory = built.components["extensions"]["file_storage"].directory
    assert "file_storage" in built.service.extensions  # beside the external set's authenticators
    clickhouse = built.components["exporters"]["clickhouse"]
    assert clickhouse.sending_queue.storage == "file_storage"
    assert (clickhouse.sending_queue.queue_size, clickhouse.sending_queue.max_bytes) == (2_000_000, 4 * 1024**3)
    assert clickhouse.retry_on_failure.max_elapsed_time == 0
    spec = pod_spec(objs, "Deployment", FULLNAME)
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    volume = mounts[str(Path(directory).parent)]
    assert {v["name"]: v for v in spec["volumes"]}[volume] == {"name": volume, "emptyDir": {}}

    smaller = objects(chart, {**VALUE_SETS[name], "sendingQueue": {"queueSize": 10, "maxBytes": "64MiB"}})
    queue = validate_config(collector_config(smaller)).components["exporters"]["clickhouse"].sending_queue
    assert (queue.queue_size, queue.max_bytes) == (10, 64 * 1024**2)
    off = validate_config(collector_config(objects(chart, {**VALUE_SETS[name], "sendingQueue": {"persistent": False}})))
    assert "file_storage" not in off.components["extensions"]
    assert off.components["exporters"]["clickhouse"].sending_queue.storage is None


def test_queues_on_claims_make_the_collectors_a_stateful_set(chart: helm.Chart) -> None:
    """sendingQueue.volume claim: a claim per collector, so the queue outlives the pod; the autoscaler
    and the config follow the StatefulSet."""
    objs = objects(chart, VALUE_SETS["queue-on-claims"])
    assert ("Deployment", FULLNAME) not in objs
    stateful = objs["StatefulSet", FULLNAME]["spec"]
    assert stateful["serviceName"] == FULLNAME and stateful["podManagementPolicy"] == "Parallel"
    [claim] = stateful["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "queue"
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    mounts = {m["name"]: m["mountPath"] for m in stateful["template"]["spec"]["containers"][0]["volumeMounts"]}
    built = validate_config(collector_config(objs))
    assert built.components["extensions"]["file_storage"].directory == mounts["queue"]
    assert objs["HorizontalPodAutoscaler", FULLNAME]["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    # the claims take the pods' labels, and the selectors still pick only the collectors
    assert stateful["selector"]["matchLabels"].items() <= stateful["template"]["metadata"]["labels"].items()
    # with the embedded store there is no queue to keep: still one Deployment
    embedded = objects(chart, {"sendingQueue": {"volume": "claim"}})
    assert ("Deployment", FULLNAME) in embedded and ("StatefulSet", FULLNAME) not in embedded


def test_the_embedded_store_keeps_its_queue_in_memory(chart: helm.Chart) -> None:
    built = validate_config(collector_config(objects(chart, {})))
    assert built.components["extensions"] == {}
    assert built.components["exporters"]["clickhouse"].sending_queue.storage is None


@pytest.mark.parametrize("name", VALUE_SETS)
def test_pods_run_locked_down(chart: helm.Chart, name: str) -> None:
    objs = objects(chart, VALUE_SETS[name])
    dockerfile = (ROOT / "deploy" / "compose" / "Dockerfile").read_text()
    image_user = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    assert image_user, "the image's USER is numeric, so runAsNonRoot can be checked"
    for (kind, obj_name), obj in objs.items():
        if kind not in ("Deployment", "StatefulSet"):
            continue
        spec = obj["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, obj_name
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False and context["capabilities"] == {"drop": ["ALL"]}
            assert "limits" in container["resources"] and "requests" in container["resources"]
            assert container["readinessProbe"] and container["livenessProbe"]
    collector = collector_workload(objs)["spec"]["template"]["spec"]
    assert (collector["securityContext"]["runAsUser"], collector["securityContext"]["runAsGroup"]) == (
        int(image_user[1]), int(image_user[2]))
    container = collector["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp", "/etc/lqo", "/var/lib/lqo/data"}
    scheme = {"scheme": "HTTPS"} if VALUE_SETS[name].get("metrics", {}).get("tls") else {}
    assert (container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]) == (
        {"path": "/healthz", "port": "metrics", **scheme}, {"path": "/readyz", "port": "metrics", **scheme})
    # long enough for the collector to flush its queues on SIGTERM (service.shutdown_timeout)
    shutdown = validate_config(collector_config(objs)).service.shutdown_timeout
    assert collector["terminationGracePeriodSeconds"] > shutdown
    assert container["image"] == "lqo-collector:" + yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]


def test_selectors_pick_their_own_pods(chart: helm.Chart) -> None:
    objs = objects(chart, VALUE_SETS["clickhouse"])
    collector = objs["Deployment", FULLNAME]["spec"]
    clickhouse = objs["StatefulSet", f"{FULLNAME}-clickhouse"]["spec"]

    def picks(selector: dict[str, str], workload: dict[str, Any]) -> bool:
        return selector.items() <= workload["template"]["metadata"]["labels"].items()

    for workload in (collector, clickhouse):
        assert picks(workload["selector"]["matchLabels"], workload)
    for selector, own, other in (
            (objs["Service", FULLNAME]["spec"]["selector"], collector, clickhouse),
            (objs["Service", f"{FULLNAME}-clickhouse"]["spec"]["selector"], clickhouse, collector),
            (objs["PodDisruptionBudget", FULLNAME]["spec"]["selector"]["matchLabels"], collector, clickhouse),
            (objs["NetworkPolicy", FULLNAME]["spec"]["podSelector"]["matchLabels"], collector, clickhouse)):
        assert picks(selector, own) and not picks(selector, other)
    monitor = objs["ServiceMonitor", FULLNAME]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= objs["Service", FULLNAME]["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] in {p["name"] for p in objs["Service", FULLNAME]["spec"]["ports"]}
    assert objs["ServiceMonitor", FULLNAME]["metadata"]["labels"]["release"] == "kps"


def test_the_bundled_clickhouse_is_the_collectors_store(chart: helm.Chart) -> None:
    objs = objects(chart, VALUE_SETS["clickhouse"])
    name = f"{FULLNAME}-clickhouse"
    service = objs["Service", name]
    http = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "http")
    assert collector_config(objs)["exporters"]["clickhouse"]["endpoint"] == f"http://{name}:{http}"
    env = {e["name"]: e for e in pod_spec(objs, "Deployment", FULLNAME)["containers"][0]["env"]}
    server_env = {e["name"]: e for e in pod_spec(objs, "StatefulSet", name)["containers"][0]["env"]}
    assert env["LQO_CLICKHOUSE_USERNAME"]["value"] == server_env["CLICKHOUSE_USER"]["value"] == "lqo"
    assert env["LQO_CLICKHOUSE_PASSWORD"]["valueFrom"] == server_env["CLICKHOUSE_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": name, "key": "password"}}
    secret = objs["Secret", name]["data"]
    assert set(secret) == {"password", "grafana-password"}
    # the image runs the init script, which creates the read-only grafana user, on a new volume
    script = (ROOT / "deploy" / "clickhouse" / "grafana-user.sh").read_text()
    assert objs["ConfigMap", f"{name}-init"]["data"]["grafana-user.sh"].rstrip("\n") == script.rstrip("\n")
    for variable in set(re.findall(r"\$\{?(CLICKHOUSE_\w+)", script)):
        assert variable in server_env, f"the init script reads ${variable}, which the server is not given"
    mounts = {m["name"]: m["mountPath"] for m in pod_spec(objs, "StatefulSet", name)["containers"][0]["volumeMounts"]}
    assert mounts["init"] == "/docker-entrypoint-initdb.d" and mounts["data"] == "/var/lib/clickhouse"
    assert objs["StatefulSet", name]["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    # more than one collector: they share the server, and a budget keeps one up while nodes drain
    assert objs["Deployment", FULLNAME]["spec"]["replicas"] == 2
    assert "strategy" not in objs["Deployment", FULLNAME]["spec"]  # rolling updates
    assert objs["PodDisruptionBudget", FULLNAME]["spec"]["maxUnavailable"] == 1


def test_an_external_clickhouse_takes_its_credentials_from_the_users_secret(chart: helm.Chart) -> None:
    objs = objects(chart, VALUE_SETS["external"])
    exporter = collector_config(objs)["exporters"]["clickhouse"]
    assert (exporter["endpoint"], exporter["database"], exporter["cluster_name"]) == (
        "https://ch.example.internal:8443", "llm", "main")
    env = {e["name"]: e for e in pod_spec(objs, "Deployment", FULLNAME)["containers"][0]["env"]}
    assert env["LQO_CLICKHOUSE_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "lqo-clickhouse", "key": "username"}
    assert env["LQO_CLICKHOUSE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "lqo-clickhouse", "key": "password"}
    assert env["OTEL_RESOURCE_ATTRIBUTES"]["value"] == "deployment.environment=prod"
    assert not any(kind in ("Secret", "StatefulSet", "PersistentVolumeClaim") for kind, _ in objs)
    # a checkpoint volume for the toxicity processor, mounted where LQO_TOXICITY_CHECKPOINT points
    spec = pod_spec(objs, "Deployment", FULLNAME)
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert env["LQO_TOXICITY_CHECKPOINT"]["value"].startswith(mounts["models"]["mountPath"] + "/")
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "lqo-models"}} in spec["volumes"]
    # relative paths in the config (the ONNX cache, .lqo/models) resolve on the writable data volume
    assert spec["containers"][0]["workingDir"] == mounts["data"]["mountPath"]
    assert spec["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_autoscaling_scales_the_collectors_on_cpu(chart: helm.Chart) -> None:
    objs = objects(chart, VALUE_SETS["external"])
    hpa = objs["HorizontalPodAutoscaler", FULLNAME]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    assert "replicas" not in objs["Deployment", FULLNAME]["spec"]  # the autoscaler owns it
    assert objs["PodDisruptionBudget", FULLNAME]["spec"]["maxUnavailable"] == 1
    # CPU utilisation is measured against the request, which the chart sets
    assert pod_spec(objs, "Deployment", FULLNAME)["containers"][0]["resources"]["requests"]["cpu"]


def test_secrets_stay_in_secrets(chart: helm.Chart) -> None:
    manifests = chart.render(VALUE_SETS["clickhouse"], name=RELEASE, namespace=NAMESPACE)
    for path, text in manifests.items():
        for doc in yaml.safe_load_all(text) if path.endswith(".yaml") else [text]:
            if isinstance(doc, dict) and doc.get("kind") == "Secret":
                continue
            dumped = json.dumps(doc)
            for secret in (PASSWORD, GRAFANA_PASSWORD):
                assert secret not in dumped, f"{path} holds a password outside a Secret"
    # and the checksum that rolls the pods on a config change is not a hash of one either
    assert PASSWORD not in collector_config(objects(chart, VALUE_SETS["clickhouse"])).__repr__()


def test_auth_and_tls_come_from_the_users_secrets(chart: helm.Chart) -> None:
    """auth/tls.existingSecret: the Secrets are mounted whole (so the kubelet's updates arrive and
    the collector re-reads them) where the config the chart writes looks for them."""
    objs = objects(chart, VALUE_SETS["external"])
    raw = collector_config(objs)
    built = validate_config(raw)
    assert built.service.extensions == ["bearertokenauth", "bearertokenauth/metrics", "bearertokenauth/query",
                                       "file_storage"]
    token_file = built.components["extensions"]["bearertokenauth"].filename
    assert built.components["extensions"]["bearertokenauth/query"].filename == "/etc/lqo-query-auth/token"
    protocols = built.components["receivers"]["otlp"].protocols
    assert protocols.http.query_auth.authenticator == "bearertokenauth/query"  # readers' token for /api/v1/*
    assert protocols.grpc.auth.authenticator == "bearertokenauth"
    for protocol in (protocols.grpc, protocols.http):
        assert protocol.auth.authenticator == "bearertokenauth"
        assert (protocol.tls.cert_file, protocol.tls.key_file, protocol.tls.client_ca_file) == (
            "/etc/lqo-tls/tls.crt", "/etc/lqo-tls/tls.key", "/etc/lqo-tls/ca.crt")
        assert protocol.tls.reload_interval == 60
    deployment = pod_spec(objs, "Deployment", FULLNAME)
    assert {v["name"]: v for v in deployment["volumes"]}["query-auth"]["secret"]["secretName"] == "lqo-readers"
    assert {m["name"]: m["mountPath"] for m in deployment["containers"][0]["volumeMounts"]}["query-auth"] == (
        "/etc/lqo-query-auth")
    [hook] = objects(chart, VALUE_SETS["external"], hooks=True).values()
    for spec in (deployment, hook["spec"]):
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["auth"]["secret"]["secretName"] == "lqo-token"
        assert volumes["tls"]["secret"]["secretName"] == "lqo-tls"
        mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
        assert all("subPath" not in m for m in mounts.values())
        assert (mounts["auth"]["mountPath"], mounts["tls"]["mountPath"]) == ("/etc/lqo-auth", "/etc/lqo-tls")
        assert spec["securityContext"]["fsGroup"] == 10001  # the Secrets' files are group-readable
    assert token_file == "/etc/lqo-auth/token"
    # /metrics: the receivers' certificate (no client certificates: scrapers have none), a token
    # of its own; the probes over HTTPS; the ServiceMonitor scrapes with both
    metrics = built.service.telemetry.metrics
    assert (metrics.tls.cert_file, metrics.tls.key_file, metrics.tls.client_ca_file) == (
        "/etc/lqo-tls/tls.crt", "/etc/lqo-tls/tls.key", None)
    assert metrics.auth.authenticator == "bearertokenauth/metrics"
    assert built.components["extensions"]["bearertokenauth/metrics"].filename == "/etc/lqo-metrics-auth/token"
    assert {v["name"]: v for v in deployment["volumes"]}["metrics-auth"]["secret"]["secretName"] == "lqo-scrape"
    container = deployment["containers"][0]
    assert {m["name"]: m["mountPath"] for m in container["volumeMounts"]}["metrics-auth"] == "/etc/lqo-metrics-auth"
    assert container["livenessProbe"]["httpGet"]["scheme"] == container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    [endpoint] = objs["ServiceMonitor", FULLNAME]["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"] == {
        "ca": {"secret": {"name": "lqo-tls", "key": "ca.crt"}}, "serverName": f"{FULLNAME}.{NAMESPACE}.svc"}
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": {"name": "lqo-scrape", "key": "token"}}
    # without them the receivers are plain and open, as before
    plain = validate_config(collector_config(objects(chart)))
    assert plain.service.extensions == [] and plain.components["receivers"]["otlp"].protocols.http.tls is None
    assert plain.service.telemetry.metrics.tls is None and plain.service.telemetry.metrics.auth is None
    plain_monitor = objects(chart, MONITORING)["ServiceMonitor", FULLNAME]["spec"]["endpoints"][0]
    assert not {"scheme", "tlsConfig", "authorization"} & set(plain_monitor)


@pytest.mark.parametrize(("values", "message"), [
    ({"replicas": 2}, "replicas"),  # a typo of replicaCount
    ({"storage": {"mode": "postgres"}}, "mode"),
    ({"storage": {"mode": "external", "external": {"endpoint": "ch.example:8123"}}}, "endpoint"),
    ({"auth": {"token": "in-the-values"}}, "token"),  # tokens live in Secrets only
    ({"config": {"exporter": {}}}, "exporter"),
    ({"serviceMonitor": {"interval": "15 seconds"}}, "interval"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"sendingQueue": {"maxBytes": "4 gigs"}}, "maxBytes"),
])
def test_values_the_schema_refuses(chart: helm.Chart, values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as failure:
        chart.validate_schema(values)
    assert message in str(failure.value)


@pytest.mark.parametrize(("values", "message"), [
    ({"replicaCount": 2}, "storage.mode embedded runs one collector"),
    ({"autoscaling": {"enabled": True}}, "autoscaling.enabled: storage.mode embedded runs one collector"),
    ({"storage": {"mode": "clickhouse"}}, "clickhouse.auth.password: set a password"),
    ({"storage": {"mode": "clickhouse"}, "clickhouse": {"auth": {"password": "x"}}}, "clickhouse.auth.grafanaPassword"),
    ({"storage": {"mode": "external"}}, "storage.external.endpoint: set it"),
    ({"storage": {"mode": "external", "external": {"endpoint": "http://ch:8123"}}}, "storage.external.existingSecret"),
    ({"grafana": {"datasources": {"enabled": True}}}, "storage.mode embedded has none"),
    ({"tls": {"clientAuth": True}}, "tls.clientAuth: needs tls.existingSecret"),
    ({"metrics": {"tls": True}}, "metrics.tls: needs tls.existingSecret"),
])
def test_missing_settings_fail_at_install_saying_what_to_set(chart: helm.Chart, values: dict[str, Any],
                                                             message: str) -> None:
    assert message in render_error(chart, values)


def test_an_existing_secret_replaces_the_charts(chart: helm.Chart) -> None:
    values = {"storage": {"mode": "clickhouse"}, "clickhouse": {"auth": {"existingSecret": "my-ch"}}}
    objs = objects(chart, values)
    assert not any(kind == "Secret" for kind, _ in objs)
    refs = [e["valueFrom"]["secretKeyRef"] for spec in (pod_spec(objs, "Deployment", FULLNAME),
                                                       pod_spec(objs, "StatefulSet", f"{FULLNAME}-clickhouse"))
            for e in spec["containers"][0]["env"] if "valueFrom" in e]
    assert refs and all(ref["name"] == "my-ch" for ref in refs)


def test_the_prometheus_rule_holds_deploys_rules(chart: helm.Chart) -> None:
    objs = objects(chart, VALUE_SETS["external"])
    shipped = [group for path in sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.yml"))
               for group in yaml.safe_load(path.read_text())["groups"]]
    groups = objs["PrometheusRule", FULLNAME]["spec"]["groups"]
    assert sorted(groups, key=lambda g: g["name"]) == sorted(shipped, key=lambda g: g["name"])
    # the alert on a missing collector selects the job the ServiceMonitor gives its targets
    relabel = objs["ServiceMonitor", FULLNAME]["spec"]["endpoints"][0]["relabelings"]
    job = next(r["replacement"] for r in relabel if r["targetLabel"] == "job")
    exprs = [rule["expr"] for group in groups for rule in group["rules"] if "job=" in rule["expr"]]
    assert exprs and all(f'job="{job}"' in expr for expr in exprs)


def test_the_grafana_objects_are_deploys_dashboards_and_their_datasources(chart: helm.Chart) -> None:
    objs = objects(chart, VALUE_SETS["clickhouse"])
    dashboards = objs["ConfigMap", f"{FULLNAME}-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = {p.name: json.loads(p.read_text()) for p in (ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")}
    assert {name: json.loads(text) for name, text in dashboards["data"].items()} == shipped
    provisioning = yaml.safe_load(objs["Secret", f"{FULLNAME}-datasources"]["stringData"]["lqo-datasources.yaml"])
    sources = {d["uid"]: d for d in provisioning["datasources"]}
    used = {ref["uid"] for board in shipped.values() for ref in _datasource_refs(board)}
    assert used <= set(sources)
    compose = {d["uid"]: d for d in yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/lqo.yml").read_text())["datasources"]}
    assert {uid: d["type"] for uid, d in sources.items()} == {uid: d["type"] for uid, d in compose.items()}
    clickhouse = sources["lqo-clickhouse"]
    service = objs["Service", f"{FULLNAME}-clickhouse"]["spec"]
    assert clickhouse["jsonData"]["host"] == f"{FULLNAME}-clickhouse"
    assert clickhouse["jsonData"]["port"] in {p["port"] for p in service["ports"] if p["name"] == "native"}
    assert clickhouse["jsonData"]["username"] == "grafana"  # the init script's read-only user
    assert clickhouse["secureJsonData"]["password"] == GRAFANA_PASSWORD


def _datasource_refs(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict) and "uid" in node["datasource"]:
            yield node["datasource"]
        for value in node.values():
            yield from _datasource_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasource_refs(value)


def test_the_packaged_chart_carries_the_linked_files(chart: helm.Chart, tmp_path: Path) -> None:
    """files/ links to deploy/'s rules, dashboards and init script; `helm package` copies them in."""
    archive = Path(chart.save(tmp_path))
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for name in ("lqo/files/rules/lqo-alerts.yml", "lqo/files/dashboards/lqo-overview.json",
                     "lqo/files/grafana-user.sh", "lqo/values.schema.json"):
            assert members[name].isfile(), name
        packaged = tar.extractfile(members["lqo/files/rules/lqo-alerts.yml"])
        assert packaged is not None
        assert packaged.read() == (ROOT / "deploy/prometheus/rules/lqo-alerts.yml").read_bytes()
    with helm.Chart.load_archive(io.BytesIO(archive.read_bytes()).getvalue()) as from_archive:
        assert render(from_archive, VALUE_SETS["external"]) == render(chart, VALUE_SETS["external"])


def test_the_docs_values_example_installs(chart: helm.Chart) -> None:
    text = (ROOT / "docs" / "deploy.md").read_text()
    section = text.split("## Kubernetes (Helm)", 1)[1].split("\n## ", 1)[0]
    examples = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert examples, "docs/deploy.md shows a values example for the chart"
    for example in examples:
        built = validate_config(collector_config(objects(chart, yaml.safe_load(example))))
        assert built.pipeline.exporters == ["clickhouse", "prometheus"]


# The pod's filesystem, in a user and mount namespace of the collector's own: the root read-only,
# /tmp writable (the chart's emptyDir; its contents stay, as the checkout may live there), a
# tmpfs for the data volume, which is the working directory, HOME read-only (the image's
# /var/lib/lqo), the code (this checkout and its .venv, $3) read-only wherever it lives.
POD_FILESYSTEM = """set -eu
mount -t tmpfs tmpfs /mnt
mkdir -p /mnt/etc /mnt/data /mnt/home
cp "$1" /mnt/etc/collector.yaml
mount --bind /tmp /tmp
mount --bind /mnt/home /mnt/home && mount -o remount,bind,ro /mnt/home
mount --bind "$3" "$3" && mount -o remount,bind,ro "$3"
mount -o remount,bind,ro /
if touch "$3/code-is-writable" 2>/dev/null; then echo "the code is writable" >&2; exit 97; fi
if touch /root-is-writable 2>/dev/null; then echo "the root is writable" >&2; exit 97; fi
cd /mnt/data
HOME=/mnt/home exec "$2" collector --config /mnt/etc/collector.yaml
"""


def test_the_collector_runs_on_a_read_only_root_as_the_chart_runs_it(chart: helm.Chart, tmp_path: Path) -> None:
    """readOnlyRootFilesystem: the default pipeline (Presidio included) and the embedded store
    work with only /tmp and the data volume writable; spans sent with the OTel SDK are stored,
    PII redacted, and the collector stops cleanly on SIGTERM."""
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare or "unshare", "-rm", "true"], capture_output=True) if unshare else None
    if probe is None or probe.returncode != 0:
        pytest.skip("no user and mount namespaces here (unshare -rm), so no read-only root to run in")
    raw = collector_config(objects(chart))
    grpc, http, metrics = free_port(), free_port(), free_port()
    # loopback and free ports instead of the pod's 0.0.0.0:4317/4318/8888; the store at the same
    # depth under the data volume's mount
    raw["receivers"]["otlp"]["protocols"] = {"grpc": {"endpoint": f"127.0.0.1:{grpc}"},
                                            "http": {"endpoint": f"127.0.0.1:{http}"}}
    raw["service"]["telemetry"]["metrics"]["address"] = f"127.0.0.1:{metrics}"
    assert raw["exporters"]["clickhouse"]["endpoint"] == "embedded:///var/lib/lqo/data/clickhouse"
    raw["exporters"]["clickhouse"]["endpoint"] = "embedded:///mnt/data/clickhouse"
    config = tmp_path / "collector.yaml"
    config.write_text(yaml.safe_dump(raw))
    command = [unshare, "-rm", "--propagation", "private", "bash", "-c", POD_FILESYSTEM, "pod", str(config),
               str(Path(sys.executable).with_name("lqo")), str(ROOT)]
    collector = CollectorProcess(tmp_path, config, grpc, http, metrics, command=command)
    try:
        collector.start(timeout=120)
        send_wave(collector.http_url, injections=1)

        def stored() -> list[str]:
            sql = (f"SELECT SpanAttributes['gen_ai.input.messages'] FROM otel_traces "
                   f"WHERE ServiceName = '{SERVICE}' ORDER BY Timestamp")
            request = urllib.request.Request(f"{collector.http_url}/api/v1/query",
                                             data=json.dumps({"sql": sql, "format": "json"}).encode(),
                                             headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as r:
                rows = [json.loads(line) for line in r.read().splitlines() if line.strip()]
            return [next(iter(row.values())) for row in rows] if len(rows) == 19 else []

        messages = wait_until("the 19 spans are stored", stored, timeout=60)
        # `helm test`'s pod script, pointed at this collector's loopback ports
        script = helm_test_script(chart, {}, metrics, http)
        probe = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert probe.returncode == 0 and "OTLP/HTTP answers" in probe.stdout, probe.stderr
        card = next(m for m in messages if "about my card" in m)
        assert "<PHONE_NUMBER>" in card and "<CREDIT_CARD>" in card and "415-555-0132" not in card  # pii ran
        assert collector.stop() == 0
    finally:
        if collector.proc is not None and collector.proc.poll() is None:
            collector.proc.kill()
            collector.proc.wait()
    output = collector.log()
    assert "collector stopped" in output
    for sign in ("Read-only file system", "Permission denied", "Traceback"):
        assert sign not in output, output[-3000:]


def test_the_helm_test_pod_checks_tls_and_the_token(chart: helm.Chart, make_collector: Any, tmp_path: Path) -> None:
    """`helm test` against a collector with the chart's auth and tls config, the Secrets' files laid
    out as the pod mounts them: it verifies the certificate, is refused without the token and let
    in with it."""
    values = {"auth": {"existingSecret": "t"}, "tls": {"existingSecret": "c"}}
    raw = collector_config(objects(chart, values))
    auth_dir, tls_dir = tmp_path / "lqo-auth", tmp_path / "lqo-tls"
    auth_dir.mkdir()
    tls_dir.mkdir()
    tls_secret_files(tls_dir)
    (auth_dir / "token").write_text("helm-test-token\n")
    security = json.loads(json.dumps({k: raw[k] for k in ("extensions",)} | {
        "receivers": raw["receivers"], "service": {"extensions": raw["service"]["extensions"]}})
        .replace("/etc/lqo-auth", str(auth_dir)).replace("/etc/lqo-tls", str(tls_dir)))
    for protocol in security["receivers"]["otlp"]["protocols"].values():
        del protocol["endpoint"]  # the fixture's loopback ports
    collector = make_collector(security)
    script = helm_test_script(chart, values, collector.metrics_port, collector.http_port)
    script = script.replace("/etc/lqo-auth", str(auth_dir)).replace("/etc/lqo-tls", str(tls_dir))
    probe = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and "OTLP/HTTP answers (https)" in probe.stdout, probe.stderr
    assert 'reason="unauthenticated"' in collector.metrics()  # the refusal it checked for
    # The Secret rotated and the pod holding the old token: the test fails, saying why.
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "token").write_text("helm-test-token\n")
    (auth_dir / "token").write_text("rotated-token\n")
    time.sleep(1.2)  # the collector looks at the file at most once a second
    failed = subprocess.run([sys.executable, "-c", script.replace(str(auth_dir), str(stale))],
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0 and "401" in failed.stderr


def test_the_charts_app_version_is_the_collectors() -> None:
    """The image tag defaults to appVersion: a release of the collector bumps the chart with it."""
    from lqo.collector.version import __version__

    chart_yaml = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart_yaml["appVersion"] == __version__
    assert chart_yaml["kubeVersion"] == f">={KUBE_VERSIONS[0]}-0"  # the oldest version the tests check


def test_the_install_notes_tell_clients_what_to_set(chart: helm.Chart) -> None:
    def notes(values: dict[str, Any]) -> str:
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
        return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))

    plain = notes({})
    assert f"http://{FULLNAME}.{NAMESPACE}.svc:4318" in plain
    assert "can send spans and query them" in plain  # the open default is said out loud
    secured = notes(VALUE_SETS["external"])
    assert f"https://{FULLNAME}.{NAMESPACE}.svc:4317" in secured and "OTEL_EXPORTER_OTLP_CERTIFICATE" in secured
    assert "OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer%20<a token from Secret lqo-token>" in secured
    assert "(TOKEN: one from Secret lqo-readers)" in secured and "--cert client.crt" in secured
    assert "can send spans" not in secured
    assert "can send spans:" in notes({"auth": {"query": {"existingSecret": "readers"}}})


def test_the_helm_test_pod_asks_readiness_over_tls_when_metrics_tls_is_set(chart: helm.Chart, make_collector: Any,
                                                                         tmp_path: Path) -> None:
    """metrics.tls: the collector serves 8888 over TLS (the receivers' certificate), and the
    `helm test` pod asks /readyz over HTTPS, verifying it."""
    values = {"tls": {"existingSecret": "c"}, "metrics": {"tls": True}}
    raw = collector_config(objects(chart, values))
    tls_dir = tmp_path / "lqo-tls"
    tls_dir.mkdir()
    tls_secret_files(tls_dir)
    metrics = {k: v for k, v in raw["service"]["telemetry"]["metrics"].items() if k != "address"}
    security = json.loads(json.dumps({
        "receivers": raw["receivers"], "service": {"telemetry": {"metrics": metrics}}}).replace("/etc/lqo-tls", str(tls_dir)))
    for protocol in security["receivers"]["otlp"]["protocols"].values():
        del protocol["endpoint"]  # the fixture's loopback ports
    collector = make_collector(security, start=False)
    collector.admin_ca = tls_dir / "ca.crt"
    collector.start()
    script = helm_test_script(chart, values, collector.metrics_port, collector.http_port)
    script = script.replace("/etc/lqo-tls", str(tls_dir))
    assert 'admin = "https"' in script
    probe = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0 and "OTLP/HTTP answers (https)" in probe.stdout, probe.stderr
