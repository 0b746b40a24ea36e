"""deploy/prometheus and deploy/alertmanager: the shipped configs pass promtool and amtool, the
rules' own unit tests pass on simulated time, and on a live stack (a real collector, the real
Prometheus with the shipped config and rules, the real Alertmanager with its shipped config)
every rule evaluates cleanly, every recording rule yields series, every metric and label the
rules name is one the collector exports, and an alert reaches Alertmanager's right receiver."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, CollectorProcess
from livestack import (
    CALLS_PER_WAVE,
    COLLECTOR,
    PROM_DIR,
    RULE_FILES,
    SERVICE,
    prometheus_config,
    send_wave,
    time_compressed,
)
from prometheus_client.parser import text_string_to_metric_families
from promstack import AMTOOL, NEEDS, PROMTOOL, get_json, query, wait_until

from lqo.collector.components import ComponentContext
from lqo.collector.exporters.prometheus import PrometheusExporter, PrometheusExporterConfig
from lqo.collector.telemetry import SelfTelemetry

UNIT_TESTS = PROM_DIR / "tests" / "lqo-rules.test.yml"
AM_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"


RULES: list[dict[str, Any]] = [rule for path in RULE_FILES for group in yaml.safe_load(path.read_text())["groups"]
                               for rule in group["rules"]]


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_shipped_prometheus_config_and_rules_pass_promtool() -> None:
    assert PROMTOOL, NEEDS
    assert [p.name for p in RULE_FILES] == ["lqo-alerts.yml", "lqo-recording.yml"]
    config = _run(PROMTOOL, "check", "config", str(PROM_DIR / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    assert "2 rule files found" in config.stdout
    rules = _run(PROMTOOL, "check", "rules", *map(str, RULE_FILES))
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_rule_unit_tests_pass_and_cover_every_alert() -> None:
    assert PROMTOOL, NEEDS
    result = _run(PROMTOOL, "test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr
    tested = {case["alertname"] for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
              for case in test.get("alert_rule_test", [])}
    fired = {case["alertname"] for test in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
             for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    alerts = {r["alert"] for r in RULES if "alert" in r}
    assert alerts == tested, f"alerts without a unit test: {alerts - tested}"
    # every alert but one is shown firing; the hallucination share is shown under its threshold
    assert alerts - fired == {"LLMHallucinationRateHigh"}


def test_every_alert_says_where_and_how_bad() -> None:
    for rule in RULES:
        if "alert" not in rule:
            continue
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_shipped_alertmanager_config_passes_amtool() -> None:
    assert AMTOOL, NEEDS
    result = _run(AMTOOL, "check-config", str(AM_CONFIG))
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


# --- the live stack ---------------------------------------------------------------------------

def _names_in(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) an expression uses: our metrics are gen_ai_* and lqo_*;
    labels are those in by/on/without clauses and in selectors."""
    labels = {name.strip() for clause in re.findall(r"\b(?:by|on|without)\s*\(([^)]*)\)", expr)
              for name in clause.split(",") if name.strip()}
    labels |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr))
    words = set(re.findall(r"(?<![\w:])((?:gen_ai|lqo)_\w+|up)(?![\w:])", expr))
    return words - labels, labels


def test_rules_on_a_live_collector_and_an_alert_reaches_alertmanager(
        make_collector: Any, daemons: Any, tmp_path: Path) -> None:
    col: CollectorProcess = make_collector(COLLECTOR)
    am = daemons.alertmanager(AM_CONFIG)
    prom = daemons.prometheus(prometheus_config(col, time_compressed(tmp_path), am))

    def calls() -> float:
        result = query(prom, f'sum(gen_ai_client_operation_duration_seconds_count{{service_name="{SERVICE}"}})')
        return float(result[0]["value"][1]) if result else 0.0

    send_wave(col.http_url, injections=6)
    wait_until("the first wave scraped", lambda: calls() == CALLS_PER_WAVE + 6)
    time.sleep(2)  # scrapes of the first wave's values, so the second is an increase
    send_wave(col.http_url, injections=6)
    wait_until("the second wave scraped", lambda: calls() == 2 * (CALLS_PER_WAVE + 6))

    # every metric and label the rules name is one the collector exports
    exposition = list(text_string_to_metric_families(col.metrics()))
    families = {f.name: f.type for f in exposition}
    # label names: those on samples, and the self-telemetry's declared ones (a reason label
    # has no sample until something fails)
    exported_labels = {label for f in exposition for s in f.samples for label in s.labels}
    telemetry = SelfTelemetry()
    PrometheusExporter(PrometheusExporterConfig(), ComponentContext("prometheus", telemetry))
    exported_labels |= {label for metric in [*vars(telemetry).values(), *telemetry._extra.values()]
                        for label in getattr(metric, "_labelnames", ())}
    suffix_type = {"_bucket": "histogram", "_count": "histogram", "_sum": "histogram", "_total": "counter"}
    for rule in RULES:
        metrics, labels = _names_in(rule["expr"])
        for name in metrics - {"up"}:
            suffix = next((s for s in suffix_type if name.endswith(s)), "")
            family = name.removesuffix(suffix)
            assert family in families, f"{rule.get('record') or rule['alert']}: {name} is not exported"
            expected = suffix_type.get(suffix, "gauge")
            if suffix in ("_count", "_sum") and families[family] == "summary":  # sum and count, no buckets
                expected = "summary"
            assert families[family] == expected, (name, families[family])
        unknown = labels - exported_labels - {"le", "instance", "job"}
        assert not unknown, f"{rule.get('record') or rule['alert']}: labels {unknown} are not exported"

    # every rule evaluates cleanly, and every recording rule has series for this service
    def evaluated() -> list[dict[str, Any]]:
        groups = get_json(f"{prom}/api/v1/rules")["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if len(rules) == len(RULES) and all(r.get("lastEvaluation", "").startswith("2")
                                                           and r["health"] != "unknown" for r in rules) else []
    for rule in wait_until("every rule evaluated", evaluated):
        assert rule["health"] == "ok" and not rule.get("lastError"), rule
    for rule in RULES:
        if "record" in rule:
            wait_until(f"{rule['record']} for {SERVICE}",
                       lambda r=rule: query(prom, f'{r["record"]}{{service_name="{SERVICE}"}}'), timeout=15)

    def ratio(expr: str) -> float | None:
        """The value once rules have run on the second wave (before it, rates are 0 / 0)."""
        result = query(prom, expr)
        value = float(result[0]["value"][1]) if len(result) == 1 else math.nan
        return None if math.isnan(value) else value
    errors = wait_until("the error ratio", lambda: ratio(
        f'service_model:gen_ai_client_operation_errors:ratio_rate5m{{service_name="{SERVICE}"}}'))
    per_wave = CALLS_PER_WAVE + 6
    assert errors == pytest.approx(1 / per_wave)  # the same mix in both waves: one call failed
    pii = wait_until("the PII share", lambda: ratio(
        f'service_check:lqo_safety_flags:ratio_rate5m{{service_name="{SERVICE}",check="pii"}}'))
    assert pii == pytest.approx(1 / per_wave)  # the call with a phone and a card number

    # twelve injection attempts, six since Prometheus first saw the counter: the alert fires
    # and Alertmanager routes it to `team`, with its annotations rendered
    def delivered() -> list[dict[str, Any]]:
        return [a for a in get_json(f"{am}/api/v2/alerts")
                if a["labels"].get("alertname") == "LLMPromptInjectionAttempts"]
    [alert] = wait_until("LLMPromptInjectionAttempts in Alertmanager", delivered, timeout=30)
    assert alert["labels"]["service_name"] == SERVICE and alert["labels"]["severity"] == "warning"
    assert [r["name"] for r in alert["receivers"]] == ["team"]
    assert re.fullmatch(rf"{SERVICE}: \d+ prompt-injection attempts in 10 minutes", alert["annotations"]["summary"])
    assert "4111 1111" not in json.dumps(get_json(f"{am}/api/v2/alerts"))  # content never reaches alerts (the card text; "4111" alone can be in a timestamp)
