"""deploy/grafana: the committed dashboards are what dashboards.py builds, they refer only to the
provisioned datasources and to variables they define, and every query they hold runs. There
is no Grafana binary here, so the queries are run as Grafana would send them: PromQL with the
variables and $__rate_interval / $__range filled in, against the real Prometheus loaded with
the shipped rules; SQL with the ClickHouse plugin's macros expanded as the plugin expands them
(grafana/clickhouse-datasource, pkg/macros), against the store of a real collector, through
`lqo query`. A real collector filled both from GenAI spans sent with the OTel SDK."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.parse
from typing import Any

import pytest
import yaml
from conftest import ROOT
from livestack import COLLECTOR, SERVICE, prometheus_config, send_wave, time_compressed
from promstack import get_json, query, wait_until

GRAFANA = ROOT / "deploy" / "grafana"
BOARDS = {p.stem: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))}
MODEL = "gpt-4o-mini"
BUILT_INS = {"__rate_interval", "__range", "__interval", "__timeFilter", "__timeInterval", "__fromTime", "__toTime", "__data",
             "__url_time_range", "__value"}


# Counters of failures, which a healthy collector exports without series until something fails.
FAILURE_METRICS = {"lqo_receiver_refused_spans_total", "lqo_receiver_refused_requests_total",
                   "lqo_processor_failed_batches_total", "lqo_processor_dropped_spans_total",
                   "lqo_exporter_send_failed_spans_total"}


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def _targets(kind: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [(name, panel["title"], target) for name, board in BOARDS.items() for panel in _panels(board)
            for target in panel.get("targets", []) if target["datasource"]["type"] == kind]


def test_committed_dashboards_are_what_the_generator_builds() -> None:
    assert set(BOARDS) == {"lqo-overview", "lqo-quality", "lqo-traces", "lqo-collector"}
    result = subprocess.run([sys.executable, str(GRAFANA / "dashboards.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_dashboards_refer_to_provisioned_datasources_and_their_own_variables() -> None:
    provisioned = {d["uid"]: d["type"] for d in
                   yaml.safe_load((GRAFANA / "provisioning/datasources/lqo.yml").read_text())["datasources"]}
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/lqo.yml").read_text())["providers"][0]
    assert provider["options"]["path"].endswith("/lqo") and provider["type"] == "file"
    for name, board in BOARDS.items():
        assert board["uid"] == name and board["title"]
        defined = {v["name"] for v in board["templating"]["list"]}
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        cells: set[tuple[int, int]] = set()
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, (name, panel["title"])
            mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
            assert not cells & mine, f"{name}: {panel['title']} overlaps another panel"
            cells |= mine
            for target in panel.get("targets", []):
                ref = target["datasource"]
                assert provisioned.get(ref["uid"]) == ref["type"], (name, panel["title"], ref)
                text = target.get("expr") or target["rawSql"]
                used = set(re.findall(r"\$\{?(\w+)", text))
                assert used <= defined | BUILT_INS, f"{name}/{panel['title']}: undefined {used - defined - BUILT_INS}"
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":
                assert provisioned.get(variable["datasource"]["uid"]) == variable["datasource"]["type"]


# --- every query, run -------------------------------------------------------------------------

def _regex_value(value: str) -> str:
    """A variable's value in a PromQL regex matcher, escaped as Grafana escapes it (a
    backslash, itself escaped in the PromQL string, before each regex metacharacter)."""
    return re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\\\1", value)


def _promql(expr: str, instance: str = "") -> str:
    """PromQL as Grafana sends it: $service, $model and $instance as one selected value each, the
    rate interval (four one-second scrapes and more) and the range."""
    return (expr.replace("$service", _regex_value(SERVICE)).replace("$model", _regex_value(MODEL))
            .replace("$instance", _regex_value(instance))
            .replace("$__rate_interval", "30s").replace("$__range", "1h"))


def _sql(sql: str, start: int, end: int, trace_id: str) -> str:
    """SQL as the ClickHouse plugin runs it: variables interpolated by Grafana, then the plugin's
    macros (pkg/macros/macros.go: $__timeFilter is `col >= toDateTime(from) AND col <= toDateTime(to)`,
    $__fromTime and $__toTime are `toDateTime(from)` and `toDateTime(to)`)."""
    sql = (sql.replace("${service:singlequote}", f"'{SERVICE}'").replace("${model:singlequote}", f"'{MODEL}'")
           .replace("${trace_id}", trace_id).replace("${conversation:sqlstring}", "''"))  # none chosen
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({start}) AND \1 <= toDateTime({end})", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({start})").replace("$__toTime", f"toDateTime({end})")
    sql = re.sub(r"\$__timeInterval\((\w+)\)", r"toStartOfInterval(toDateTime(\1), INTERVAL 60 second)", sql)
    assert "$" not in sql, f"a variable or macro this test does not expand: {sql}"
    return sql


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One collector and one Prometheus with the shipped rules, filled by two waves of calls."""
    from conftest import start_collector
    from promstack import Daemons

    tmp = tmp_path_factory.mktemp("dashboards")
    (tmp / "collector").mkdir()
    col = start_collector(tmp / "collector", COLLECTOR)
    daemons = Daemons(tmp)
    try:
        prom = daemons.prometheus(prometheus_config(col, time_compressed(tmp)))
        start = int(time.time()) - 1
        send_wave(col.http_url, injections=6)
        wait_until("the first wave scraped", lambda: query(prom, "gen_ai_client_operation_duration_seconds_count"))
        time.sleep(2)
        send_wave(col.http_url, injections=6)
        wait_until("rules over both waves", lambda: [r for r in query(prom, "service_model:gen_ai_client_operations:rate5m")
                                                     if float(r["value"][1]) > 0])
        wait_until("both waves stored", lambda: col.wait_stored(48, timeout=1) >= 48)
        wait_until("both waves' feedback stored",
                   lambda: col.wait_stored(8, timeout=1, table="otel_traces_genai_evaluations") >= 8)
        # (the first wave's results came before the exporter remembered calls for them: the second's have the model)
        wait_until("the feedback's rules", lambda: query(
            prom, f'service_model_evaluation:lqo_evaluation_result_score:mean5m{{gen_ai_request_model="{MODEL}"}}'))
        yield col, prom, start
    finally:
        daemons.stop()
        col.stop()


@pytest.mark.parametrize(("board", "panel", "target"), _targets("prometheus"),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_promql_query_answers(stack: Any, board: str, panel: str, target: dict[str, Any]) -> None:
    col, prom, _ = stack
    expr = _promql(target["expr"], f"127.0.0.1:{col.metrics_port}")
    values = [float(r["value"][1]) for r in query(prom, expr)]
    used = set(re.findall(r"\b(?:lqo|gen_ai|process)_\w+", target["expr"])) - {"lqo_collector"}
    if not values and used <= FAILURE_METRICS:
        # nothing failed in this healthy stack, so no series yet: the names must be the collector's
        declared = set(re.findall(r"^# TYPE (\w+) ", col.metrics(), re.M))
        assert used <= declared, f"{board} / {panel}: {used - declared} not exported by the collector"
        return
    assert values, f"{board} / {panel}: no series for {expr}"
    assert any(v == v for v in values), f"{board} / {panel}: only NaN for {expr}"


def test_variables_list_the_service_and_model(stack: Any) -> None:
    col, prom, _ = stack
    expected = {"service": SERVICE, "model": MODEL, "instance": f"127.0.0.1:{col.metrics_port}"}
    for board in BOARDS.values():
        for variable in board["templating"]["list"]:
            if variable["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
            assert m, variable["query"]
            match = urllib.parse.urlencode({"match[]": _promql(m.group(1))})
            values = get_json(f"{prom}/api/v1/label/{m.group(2)}/values?{match}")["data"]
            assert expected[variable["name"]] in values


@pytest.mark.parametrize(("board", "panel", "target"), _targets("grafana-clickhouse-datasource"),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_sql_query_answers(stack: Any, board: str, panel: str, target: dict[str, Any]) -> None:
    col, _, start = stack
    [trace] = col.query(f"SELECT TraceId FROM otel_traces WHERE ServiceName = '{SERVICE}' "
                        "AND SpanAttributes['lqo.flags'] != '' LIMIT 1")
    rows = col.query(_sql(target["rawSql"], start, int(time.time()) + 1, trace["TraceId"]))
    assert rows, f"{board} / {panel}: no rows"
    if target["queryType"] == "traces":  # the columns Grafana's trace view reads
        [span] = rows
        assert span["traceID"] == trace["TraceId"] and span["serviceName"] == SERVICE
        assert {"key": "gen_ai.request.model", "value": MODEL} in span["tags"]
        assert span["duration"] >= 0 and span["startTime"] > start * 1000
    if panel == "Spend by model in the time range":
        [row] = rows
        assert int(row["calls"]) == 44 and float(row["cost_usd"]) > 0 and int(row["unpriced_calls"]) == 0
    if panel == "Conversations":  # the first wave's ten summaries, three tickets, twice
        assert {r["conversation"]: int(r["calls"]) for r in rows} == {"ticket-0": 8, "ticket-1": 6, "ticket-2": 6}
        assert all(r["trace_id"] and r["service"] == SERVICE and float(r["cost_usd"]) > 0 for r in rows)
    if panel == "Spend by end user in the time range":  # the summaries, by two agents, twice
        assert {r["user"]: (int(r["calls"]), int(r["conversations"])) for r in rows} == {
            "agent-0": (10, 3), "agent-1": (10, 3)}
        assert all(float(r["cost_usd"]) > 0 for r in rows)
    if panel == "PII found, by type":
        assert {r["entity"] for r in rows} >= {"CREDIT_CARD", "PHONE_NUMBER"}
    if panel == "Flagged calls":
        assert all(r["trace_id"] and {"pii", "prompt_injection"} & set(r["flags"].split(", ")) for r in rows)
        assert "4111 1111" not in json.dumps(rows)  # the card number was redacted before storage (its text: "4111" alone turns up in timestamps)
    if panel == "Evaluation results by model":  # four streamed calls' feedback, twice: 3 up, 1 down
        [row] = rows
        assert (row["evaluation"], row["service"], row["model"], int(row["results"])) == (
            "user_feedback", SERVICE, MODEL, 8)
        assert float(row["mean_score"]) == 0.75 and row["labels"] == "thumbs_down 2, thumbs_up 6"
    if panel == "Lowest-scored calls":
        assert [(float(r["score"]), r["label"]) for r in rows[:3]] == [(0, "thumbs_down"), (0, "thumbs_down"),
                                                                      (1, "thumbs_up")]
        assert all(r["trace_id"] and r["model"] == MODEL for r in rows) and len(rows) == 8


def test_exemplars_link_the_panels_to_stored_traces(stack: Any) -> None:
    """The real Prometheus (exemplar storage on, as in the compose stack) keeps the collector's
    exemplars; each names a trace that is in the store, and the provisioned datasource turns the
    exemplar's label into a link to the LLM traces dashboard."""
    col, prom, start = stack
    quantile = next(t["expr"] for _, panel, t in _targets("prometheus")
                    if panel == "Call duration by model (p50, p95)" and t.get("exemplar"))
    params = urllib.parse.urlencode({"query": _promql(quantile), "start": start, "end": int(time.time()) + 1})
    found = wait_until("exemplars of the p95 query", lambda: [
        e for s in get_json(f"{prom}/api/v1/query_exemplars?{params}")["data"] for e in s["exemplars"]])
    trace_ids = {e["labels"]["trace_id"] for e in found}
    in_list = ", ".join(f"'{t}'" for t in sorted(trace_ids))
    stored = col.query(f"SELECT DISTINCT TraceId FROM otel_traces WHERE TraceId IN ({in_list}) "
                       f"AND ServiceName = '{SERVICE}'")
    assert {r["TraceId"] for r in stored} == trace_ids
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/lqo.yml").read_text())["datasources"]
    [destination] = next(d for d in datasources if d["uid"] == "lqo-prometheus")["jsonData"]["exemplarTraceIdDestinations"]
    assert destination["name"] == "trace_id"  # the exemplar label the collector writes
    assert destination["url"].startswith("/d/lqo-traces/") and "var-trace_id=${__value.raw}" in destination["url"]
    assert "trace_id" in {v["name"] for v in BOARDS["lqo-traces"]["templating"]["list"]}
