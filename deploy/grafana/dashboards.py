"""Grafana dashboards for LLM Quality Observer, built with grafana-foundation-sdk.

    .venv/bin/python deploy/grafana/dashboards.py          # writes deploy/grafana/dashboards/*.json
    .venv/bin/python deploy/grafana/dashboards.py --check  # exit 1 if the JSON is not what this builds

Four dashboards, linked to each other:
* LLM overview: calls, errors, latency, time to first chunk, tokens and spend (Prometheus), and
  spend by model over the time range (ClickHouse: the per-minute roll-ups, so a month costs
  what a few thousand rows do), and spend by end user (the GenAI calls table).
* LLM quality: safety flags and evaluation scores (Prometheus), flagged calls and PII types
  (ClickHouse: the GenAI calls table), and the evaluation results producers send — user
  feedback, evaluators' scores — by model (the evaluations table, joined to the calls).
* LLM traces: conversations and recent GenAI calls (the GenAI calls table), and one trace in
  Grafana's trace view (the spans).
* LQO collector: the collectors themselves — spans in, refused and why, queues, processors' CPU
  per span and failures, spans exported and lost, process CPU and memory by part (Prometheus).

Datasources are referred to by the uids that provisioning/datasources/lqo.yml gives them.
The ClickHouse panels use the official plugin (grafana-clickhouse-datasource) and its macros
($__timeFilter, $__timeInterval); tests/deploy/test_dashboards.py runs every query, with
the macros expanded as the plugin does, against a store and a Prometheus that a real
collector has filled.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.builders.common import VizLegendOptions
from grafana_foundation_sdk.builders.prometheus import Dataquery as PromQuery
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from lqo.collector.model.spanbatch import NOT_CALLS
from lqo.collector.report import label_counts

OUT = Path(__file__).resolve().parent / "dashboards"
PROMETHEUS = model.DataSourceRef(type_val="prometheus", uid="lqo-prometheus")
CLICKHOUSE = model.DataSourceRef(type_val="grafana-clickhouse-datasource", uid="lqo-clickhouse")
TRACES = "default.otel_traces"
TRACE_ID_TS = "default.otel_traces_trace_id_ts"
CALLS = "default.otel_traces_genai"  # a typed row per GenAI call
PER_MINUTE = "default.otel_traces_genai_1m"  # GenAI calls per minute, service, provider, operation, model
EVALUATIONS = "default.otel_traces_genai_evaluations"  # evaluation results producers send: feedback, judges

# Prometheus selectors narrowed by the dashboards' variables.
SEL = 'service_name=~"$service", gen_ai_request_model=~"$model"'
SVC = 'service_name=~"$service"'
# The same narrowing in SQL, on the GenAI tables: the chosen services and models.
CHOSEN = "ServiceName IN (${service:singlequote}) AND RequestModel IN (${model:singlequote})"
# What counts as a call in sums and counts: not an agent's or a tool's span (whose usage, if any,
# is its calls' again). Lists of rows show every GenAI span.
CALL = f"Operation NOT IN ({', '.join(repr(op) for op in NOT_CALLS)})"


# The plugin's numeric `format` for each query type.
CLICKHOUSE_FORMATS = {"timeseries": 0, "table": 1, "traces": 3}


class ClickHouseQuery(cogvariants.Dataquery):
    """A raw-SQL target of the ClickHouse plugin (the SDK has no builder for it)."""

    def __init__(self, sql: str, query_type: str, ref_id: str) -> None:
        self.sql, self.query_type, self.ref_id = sql, query_type, ref_id

    def to_json(self) -> dict[str, Any]:
        return {"datasource": CLICKHOUSE, "editorType": "sql", "format": CLICKHOUSE_FORMATS[self.query_type],
                "queryType": self.query_type, "rawSql": self.sql, "refId": self.ref_id}


class SQL(cogbuilder.Builder[ClickHouseQuery]):
    def __init__(self, sql: str, query_type: str = "table", ref_id: str = "A") -> None:
        self._query = ClickHouseQuery(" ".join(sql.split()), query_type, ref_id)

    def build(self) -> ClickHouseQuery:
        return self._query


def prom(expr: str, legend: str = "", ref_id: str = "A") -> PromQuery:
    query = PromQuery().expr(" ".join(expr.split())).ref_id(ref_id).datasource(PROMETHEUS).range()
    return query.legend_format(legend) if legend else query


def series(title: str, unit: str, *queries: PromQuery, description: str = "") -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).unit(unit).datasource(PROMETHEUS).height(8).span(12)
             .fill_opacity(10).legend(VizLegendOptions().show_legend(True).display_mode(common.LegendDisplayMode.TABLE)
                                      .placement(common.LegendPlacement.BOTTOM).calcs(["mean", "max"])))
    for query in queries:
        panel = panel.with_target(query)
    return panel.description(description) if description else panel


def single(title: str, unit: str, query: PromQuery, description: str) -> stat.Panel:
    return (stat.Panel().title(title).unit(unit).datasource(PROMETHEUS).height(4).span(6)
            .with_target(query.instant()).description(description))


def percentiles(title: str, histogram: str, description: str = "") -> timeseries.Panel:
    """p50 and p95 of a histogram in seconds, a line per model; the p95 query shows the buckets'
    exemplars (a span each, linked to its trace)."""
    return series(title, "s", *[prom(
        f"histogram_quantile({q}, sum by (le, gen_ai_request_model) (rate({histogram}_bucket{{{SEL}}}[$__rate_interval])))",
        f"p{round(q * 100)} {{{{gen_ai_request_model}}}}", ref_id=ref).exemplar(q == 0.95)
        for q, ref in ((0.5, "A"), (0.95, "B"))],
        description=description)


def sql_table(title: str, sql: str, description: str, height: int = 9, width: int = 24) -> table.Panel:
    return (table.Panel().title(title).datasource(CLICKHOUSE).height(height).span(width)
            .with_target(SQL(sql)).description(description))


def label_variable(name: str, label: str, query: str) -> dash.QueryVariable:
    """A multi-select variable over a Prometheus label's values, with "All"."""
    return (dash.QueryVariable(name).label(label).datasource(PROMETHEUS).query(query)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True))


def variables(board: dash.Dashboard) -> dash.Dashboard:
    """$service and $model, from the Prometheus metrics' label values (both multi-select)."""
    return (board.with_variable(label_variable(
                "service", "Service", "label_values(gen_ai_client_operation_duration_seconds_count, service_name)"))
            .with_variable(label_variable(
                "model", "Model",
                f"label_values(gen_ai_client_operation_duration_seconds_count{{{SVC}}}, gen_ai_request_model)")))


def board(uid: str, title: str, description: str) -> dash.Dashboard:
    links = dash.DashboardLink("LLM dashboards").type(model.DashboardLinkType.DASHBOARDS).tags(["lqo"]) \
        .as_dropdown(True).include_vars(True).keep_time(True)
    return (dash.Dashboard(title).uid(uid).description(description).tags(["lqo", "genai"])
            .time("now-6h", "now").refresh("1m").tooltip(model.DashboardCursorSync.CROSSHAIR)
            .timezone("browser").editable().link(links))


def overview() -> dash.Dashboard:
    calls = f"sum(service_model:gen_ai_client_operations:rate5m{{{SEL}}})"
    errors = f"sum(service_model:gen_ai_client_operation_errors:rate5m{{{SEL}}})"
    return (variables(board("lqo-overview", "LLM overview", "Calls, errors, latency, tokens and spend of "
                                                            "the GenAI calls lqo observes."))
            .with_row(dash.Row("Now"))
            .with_panel(single("Calls per second", "reqps", prom(calls), "GenAI operations per second, last 5 minutes."))
            .with_panel(single("Failed calls", "percentunit", prom(f"({errors} or vector(0)) / {calls}"),
                               "Share of calls that ended with an error.type, last 5 minutes."))
            .with_panel(single("p95 duration", "s", prom(
                f"histogram_quantile(0.95, sum by (le) (rate(gen_ai_client_operation_duration_seconds_bucket{{{SEL}}}[5m])))"),
                "95th percentile of call duration, last 5 minutes."))
            .with_panel(single("Spend in the time range", "currencyUSD", prom(
                f"sum(increase(lqo_cost_usd_total{{{SEL}}}[$__range]))"),
                "USD of priced calls over the dashboard's time range (models without a known price are not counted)."))
            .with_row(dash.Row("Traffic and errors"))
            .with_panel(series("Calls per second by model", "reqps", prom(
                f"sum by (service_name, gen_ai_request_model) (rate(gen_ai_client_operation_duration_seconds_count{{{SEL}}}[$__rate_interval]))",
                "{{service_name}} {{gen_ai_request_model}}")))
            .with_panel(series("Errors per second by type", "reqps", prom(
                f'sum by (gen_ai_request_model, error_type) (rate(gen_ai_client_operation_duration_seconds_count{{{SEL}, error_type!=""}}[$__rate_interval]))',
                "{{gen_ai_request_model}} {{error_type}}"),
                description="error_type: the HTTP status or exception class of failed calls."))
            .with_row(dash.Row("Latency"))
            .with_panel(percentiles("Call duration by model (p50, p95)", "gen_ai_client_operation_duration_seconds"))
            .with_panel(percentiles("Time to first chunk by model (p50, p95)",
                                    "gen_ai_client_operation_time_to_first_chunk_seconds",
                                    "How long users of streamed answers wait for the first token."))
            .with_row(dash.Row("Tokens and spend"))
            .with_panel(series("Tokens per second by type", "short", prom(
                f"sum by (gen_ai_token_type) (rate(gen_ai_client_token_usage_sum{{{SEL}}}[$__rate_interval]))",
                "{{gen_ai_token_type}}")))
            .with_panel(series("Spend per hour by model", "currencyUSD", prom(
                f"sum by (gen_ai_request_model) (rate(lqo_cost_usd_total{{{SEL}}}[$__rate_interval])) * 3600",
                "{{gen_ai_request_model}}")))
            .with_panel(sql_table("Spend by model in the time range", f"""
                SELECT ServiceName AS service, RequestModel AS model, sum(Calls) AS calls,
                       sum(CostUsd) AS cost_usd, sum(UnpricedCalls) AS unpriced_calls,
                       sum(InputTokens) AS input_tokens, sum(OutputTokens) AS output_tokens,
                       quantileTDigestMerge(0.95)(DurationQuantiles) / 1e9 AS p95_seconds
                FROM {PER_MINUTE}
                WHERE Minute >= toStartOfMinute($__fromTime) AND Minute <= $__toTime AND {CHOSEN} AND {CALL}
                GROUP BY service, model ORDER BY cost_usd DESC LIMIT 50""",
                "From the stored calls, by the minute: every call, priced or not (unpriced_calls: models "
                "without a known price)."))
            .with_panel(sql_table("Spend by end user in the time range", f"""
                SELECT UserId AS user, count() AS calls, sum(CostUsd) AS cost_usd,
                       sum(InputTokens) AS input_tokens, sum(OutputTokens) AS output_tokens,
                       countIf(notEmpty(Flags)) AS flagged_calls, uniqExact(ConversationId) AS conversations,
                       max(Timestamp) AS last_call
                FROM {CALLS}
                WHERE $__timeFilter(Timestamp) AND {CHOSEN} AND {CALL} AND UserId != ''
                GROUP BY user ORDER BY cost_usd DESC LIMIT 50""",
                "Calls whose spans carry user.id (or enduser.id): the end users who cost the most, and "
                "how many of their calls a check flagged.")))


def quality() -> dash.Dashboard:
    flags = f"sum by (check) (service_check:lqo_safety_flags:rate5m{{{SVC}}})"
    calls = f"sum(service_model:gen_ai_client_operations:rate5m{{{SVC}}})"
    return (variables(board("lqo-quality", "LLM quality", "Safety and quality checks on the GenAI calls: "
                                                          "PII, prompt injection, toxicity, hallucination."))
            .with_row(dash.Row("Checks"))
            .with_panel(series("Share of calls flagged, by check", "percentunit",
                               prom(f"{flags} / scalar({calls})", "{{check}}"),
                               description="lqo.flags on the spans: the share of calls each check tripped, last 5 minutes."))
            .with_panel(series("Flagged calls per second, by model and check", "reqps", prom(
                f"sum by (gen_ai_request_model, check) (rate(lqo_safety_flags_total{{{SEL}}}[$__rate_interval]))",
                "{{gen_ai_request_model}} {{check}}")))
            .with_panel(series("Scores by check (p90)", "percentunit", prom(
                f"histogram_quantile(0.9, sum by (le, check) (rate(lqo_evaluation_score_bucket{{{SEL}}}[$__rate_interval])))",
                "{{check}}").exemplar(True),
                description="0..1, higher is worse: toxicity, hallucination, prompt_injection. The dots are "
                            "scored calls (exemplars): click one to open its trace."))
            .with_panel(sql_table("PII found, by type", f"""
                SELECT arrayJoin(PiiEntities) AS entity, count() AS calls
                FROM {CALLS}
                WHERE $__timeFilter(Timestamp) AND {CHOSEN} AND {CALL} AND notEmpty(PiiEntities)
                GROUP BY entity ORDER BY calls DESC""",
                "Types of personal data found in prompts and answers (types only: values are never stored).",
                height=8, width=12))
            .with_row(dash.Row("Flagged calls"))
            .with_panel(sql_table("Flagged calls", f"""
                SELECT Timestamp AS time, ServiceName AS service, RequestModel AS model,
                       arrayStringConcat(Flags, ', ') AS flags, arrayStringConcat(PiiEntities, ', ') AS pii,
                       InjectionScore AS injection, ToxicityScore AS toxicity, HallucinationScore AS hallucination,
                       TraceId AS trace_id
                FROM {CALLS}
                WHERE $__timeFilter(Timestamp) AND {CHOSEN} AND notEmpty(Flags)
                ORDER BY Timestamp DESC LIMIT 200""",
                "The latest calls a check flagged; trace_id opens the call in the LLM traces dashboard.", height=10)
                        .data_links([dash.DashboardLink("Open trace").url(
                            "/d/lqo-traces/llm-traces?var-trace_id=${__data.fields.trace_id}&${__url_time_range}")]))
            .with_row(dash.Row("Feedback and evaluations"))
            .with_panel(series("Evaluation results per second, by evaluation and label", "reqps", prom(
                f"sum by (gen_ai_evaluation_name, gen_ai_evaluation_score_label) "
                f"(service_model_evaluation:lqo_evaluation_results:rate5m{{{SVC}}})",
                "{{gen_ai_evaluation_name}} {{gen_ai_evaluation_score_label}}"),
                description="gen_ai.evaluation.result records producers send (users' feedback, evaluators' "
                            "scores), as they arrive, last 5 minutes."))
            .with_panel(series("Mean evaluation score, by model and evaluation", "short", prom(
                f"avg by (gen_ai_request_model, gen_ai_evaluation_name) "
                f"(service_model_evaluation:lqo_evaluation_result_score:mean5m{{{SEL}}})",
                "{{gen_ai_request_model}} {{gen_ai_evaluation_name}}"),
                description="The mean score.value of each evaluation's results, by the model of the call "
                            "judged, last 5 minutes (its scale is the evaluator's)."))
            .with_panel(sql_table("Evaluation results by model", f"""
                SELECT e.Name AS evaluation, g.ServiceName AS service, g.RequestModel AS model,
                       count() AS results, avg(e.ScoreValue) AS mean_score,
                       {label_counts("e.ScoreLabel")} AS labels
                FROM {EVALUATED}
                GROUP BY evaluation, service, model ORDER BY evaluation, results DESC LIMIT 100""",
                "gen_ai.evaluation.result records producers send (users' feedback, evaluators' scores), "
                "joined to the calls they judge: how many, the mean score, and how often each label.",
                height=8, width=12))
            .with_panel(sql_table("Lowest-scored calls", f"""
                SELECT e.Timestamp AS time, e.Name AS evaluation, e.ScoreValue AS score, e.ScoreLabel AS label,
                       e.Explanation AS explanation, g.RequestModel AS model, g.TraceId AS trace_id
                FROM {EVALUATED}
                ORDER BY e.ScoreValue ASC NULLS LAST, e.Timestamp DESC LIMIT 100""",
                "The calls evaluations scored lowest; trace_id opens the call.", height=8, width=12)
                        .data_links([dash.DashboardLink("Open trace").url(
                            "/d/lqo-traces/llm-traces?var-trace_id=${__data.fields.trace_id}&${__url_time_range}")])))


# The evaluation results of the time range, each with its chosen call (by the response id a result
# names, else by its span): calls from up to a day before the range, since feedback comes after the call.
EVALUATED = f"""(SELECT * FROM {EVALUATIONS} WHERE $__timeFilter(Timestamp)) AS e
                INNER JOIN (SELECT SpanId, ResponseId, TraceId, ServiceName, RequestModel FROM {CALLS}
                            WHERE Timestamp >= $__fromTime - INTERVAL 1 DAY AND {CHOSEN}) AS g
                ON (e.ResponseId != '' AND e.ResponseId = g.ResponseId) OR (e.ResponseId = '' AND e.SpanId != '' AND e.SpanId = g.SpanId)"""


def traces() -> dash.Dashboard:
    trace_id = dash.TextBoxVariable("trace_id").label("Trace ID").description(
        "A trace id (32 hex digits) from a table, or from your application's logs.")
    conversation = dash.TextBoxVariable("conversation").label("Conversation").description(
        "A gen_ai.conversation.id: the recent calls of that conversation only (empty: all).")
    trace_sql = f"""
        WITH '${{trace_id}}' AS trace_id,
             (SELECT min(Start) FROM {TRACE_ID_TS} WHERE TraceId = trace_id) AS trace_start,
             (SELECT max(End) + 1 FROM {TRACE_ID_TS} WHERE TraceId = trace_id) AS trace_end
        SELECT TraceId AS traceID, SpanId AS spanID, ParentSpanId AS parentSpanID, ServiceName AS serviceName,
               SpanName AS operationName, toUnixTimestamp64Nano(Timestamp) / 1e6 AS startTime,
               Duration / 1e6 AS duration,
               arrayMap(key -> map('key', key, 'value', SpanAttributes[key]), mapKeys(SpanAttributes)) AS tags,
               arrayMap(key -> map('key', key, 'value', ResourceAttributes[key]), mapKeys(ResourceAttributes)) AS serviceTags,
               if(StatusCode = 'Error', 2, 0) AS statusCode
        FROM {TRACES}
        WHERE TraceId = trace_id AND Timestamp >= trace_start AND Timestamp <= trace_end
        ORDER BY startTime"""
    trace_panel = (dash.Panel().type("traces").title("Trace ${trace_id}").datasource(CLICKHOUSE)
                   .height(16).span(24).with_target(SQL(trace_sql, "traces")))
    return (variables(board("lqo-traces", "LLM traces", "GenAI calls as stored, and one trace in full."))
            .with_variable(trace_id)
            .with_variable(conversation)
            .with_panel(sql_table("Conversations", f"""
                SELECT ConversationId AS conversation, any(ServiceName) AS service, count() AS calls,
                       sum(InputTokens) AS input_tokens, sum(OutputTokens) AS output_tokens,
                       sum(CostUsd) AS cost_usd, countIf(notEmpty(Flags)) AS flagged_calls,
                       min(Timestamp) AS first_call, max(Timestamp) AS last_call,
                       argMax(TraceId, Timestamp) AS trace_id
                FROM {CALLS}
                WHERE $__timeFilter(Timestamp) AND {CHOSEN} AND {CALL} AND ConversationId != ''
                GROUP BY conversation ORDER BY last_call DESC LIMIT 100""",
                "Calls grouped by gen_ai.conversation.id: a conversation opens its calls below, and its "
                "latest trace.", height=8)
                        .data_links([dash.DashboardLink("Show its calls").url(
                            "/d/lqo-traces/llm-traces?var-conversation=${__data.fields.conversation}"
                            "&var-trace_id=${__data.fields.trace_id}&${__url_time_range}"
                            "&${service:queryparam}&${model:queryparam}")]))
            .with_panel(sql_table("Recent GenAI calls", f"""
                SELECT Timestamp AS time, ServiceName AS service, SpanName AS span, Provider AS provider,
                       Duration / 1e6 AS duration_ms, InputTokens AS input_tokens, OutputTokens AS output_tokens,
                       CostUsd AS cost_usd, ErrorType AS error, arrayStringConcat(Flags, ', ') AS flags,
                       TraceId AS trace_id
                FROM {CALLS}
                WHERE $__timeFilter(Timestamp) AND {CHOSEN}
                      AND (${{conversation:sqlstring}} = '' OR ConversationId = ${{conversation:sqlstring}})
                ORDER BY Timestamp DESC LIMIT 200""",
                "The latest GenAI calls (of $conversation, when one is chosen); trace_id shows the whole "
                "trace below.", height=10)
                        .data_links([dash.DashboardLink("Show trace").url(
                            "/d/lqo-traces/llm-traces?var-trace_id=${__data.fields.trace_id}&${__url_time_range}"
                            "&${service:queryparam}&${model:queryparam}")]))
            .with_panel(trace_panel))


# The collectors' own metrics, narrowed by the collector dashboard's $instance.
INST = 'job="lqo-collector", instance=~"$instance"'


def collector() -> dash.Dashboard:
    def rate(metric: str, by: str = "", extra: str = "") -> str:
        grouping = f"sum by ({by}) " if by else "sum "
        return f"{grouping}(rate({metric}{{{INST}{extra}}}[$__rate_interval]))"

    return (board("lqo-collector", "LQO collector", "The collectors themselves: intake, refusals, queues, "
                                                     "processors, export and resources.")
            .with_variable(label_variable("instance", "Collector", 'label_values(up{job="lqo-collector"}, instance)'))
            .with_row(dash.Row("Now"))
            .with_panel(single("Collectors up", "short", prom(f"sum(up{{{INST}}})"),
                               "Collectors Prometheus scrapes successfully."))
            .with_panel(single("Spans in per second", "short", prom(
                f"sum(rate(lqo_receiver_accepted_spans_total{{{INST}}}[5m]))"),
                "Spans the receivers accepted, last 5 minutes."))
            .with_panel(single("Fullest queue", "percentunit", prom(
                f"max(lqo_queue_size{{{INST}}} / lqo_queue_capacity{{{INST}}})"),
                "The fullest queue now; when one is full, the receivers refuse spans (clients retry)."))
            .with_panel(single("Spans lost per second", "short", prom(
                f"sum(rate(lqo_exporter_send_failed_spans_total{{{INST}}}[5m])) or vector(0)"),
                "Spans an exporter gave up on (store errors after retries), last 5 minutes."))
            .with_row(dash.Row("Intake"))
            .with_panel(series("Spans accepted and refused per second", "short",
                               prom(rate("lqo_receiver_accepted_spans_total", "transport"), "accepted {{transport}}"),
                               prom(rate("lqo_receiver_refused_spans_total", "reason"), "refused: {{reason}}", "B"),
                               description="Refused: queue_full and shutting_down are retried by the clients; "
                                           "invalid_* and too_large are not."))
            .with_panel(series("GenAI events from log records per second", "short", prom(
                rate("lqo_genai_events_total", "outcome"), "{{outcome}}"),
                description="Messages producers send as log-based events: attached to their span, or "
                            "expired (their span had gone through, or never came) / dropped (buffer full)."))
            .with_panel(series("Requests refused before reading", "reqps", prom(
                rate("lqo_receiver_refused_requests_total", "transport, reason"), "{{transport}}: {{reason}}"),
                description="unauthenticated: clients without a valid token (receivers with auth); "
                            "their spans are lost. The collector's log names the latest peer."))
            .with_row(dash.Row("Pipeline"))
            .with_panel(series("Queue fill", "percentunit", prom(
                f"max by (queue) (lqo_queue_size{{{INST}}} / lqo_queue_capacity{{{INST}}})", "{{queue}}"),
                description="Spans waiting between receivers and processors (pipeline/traces) and in each "
                            "exporter's sending queue, over their capacity."))
            .with_panel(series("Processor CPU per span", "µs", prom(
                f"{rate('lqo_processor_cpu_seconds_total', 'processor')} / "
                f"{rate('lqo_processor_spans_total', 'processor')} * 1e6", "{{processor}}"),
                description="CPU the pipeline spent in each processor per span it was given."))
            .with_panel(series("Processor failures and drops", "short",
                               prom(rate("lqo_processor_failed_batches_total", "processor"),
                                    "failed batches: {{processor}}"),
                               prom(rate("lqo_processor_dropped_spans_total", "processor, reason"),
                                    "dropped spans: {{processor}} {{reason}}", "B"),
                               description="A failing processor passes its batches on unprocessed (the log has "
                                           "the traceback); dropped spans are filtered by design or lost."))
            .with_row(dash.Row("Export and resources"))
            .with_panel(series("Spans exported and lost per second", "short",
                               prom(rate("lqo_exporter_sent_spans_total", "exporter"), "sent {{exporter}}"),
                               prom(rate("lqo_exporter_send_failed_spans_total", "exporter, reason"),
                                    "lost {{exporter}}: {{reason}}", "B")))
            .with_panel(series("Collector CPU (cores)", "short", prom(
                rate("process_cpu_seconds_total", "instance"), "{{instance}}"),
                description="CPU of the whole collector process: receivers, processors, the embedded store."))
            .with_panel(series("Collector memory (resident, and by part)", "bytes",
                               prom(f"sum by (instance) (process_resident_memory_bytes{{{INST}}})",
                                    "{{instance}} resident"),
                               prom(f"sum by (instance, part) (lqo_process_memory_bytes{{{INST}}})",
                                    "{{instance}} {{part}}", "B"),
                               description="resident_file is mostly the embedded store's code (reclaimable); "
                                           "resident_anon is what the process allocated: glibc malloc in use "
                                           "and held free, Arrow buffers, the embedded store's own allocator, "
                                           "Python's small objects. A part that keeps rising names a leak."))
            .with_panel(series("Processor caches: how full", "percentunit",
                               prom(f"max by (cache) (lqo_cache_entries{{{INST}}} / lqo_cache_capacity{{{INST}}})",
                                    "{{cache}}"),
                               description="Entries over capacity of each bounded cache (results per distinct text, "
                                           "memos), the fullest collector's. Memory rises while they fill and stops "
                                           "when they are full (docs/configuration.md, \"Memory\").")))


DASHBOARDS = {"lqo-overview": overview, "lqo-quality": quality, "lqo-traces": traces, "lqo-collector": collector}


def render(name: str) -> str:
    doc = json.loads(json.dumps(DASHBOARDS[name]().build(), cls=JSONEncoder))
    for number, panel in enumerate(doc["panels"], start=1):
        panel["id"] = number  # stable ids: links and alerts in Grafana refer to panels by id
    return json.dumps(doc, sort_keys=True, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs")
    args = parser.parse_args(argv)
    stale = []
    for name in DASHBOARDS:
        path, text = OUT / f"{name}.json", render(name)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path.name)
        else:
            OUT.mkdir(exist_ok=True)
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run {Path(__file__).name}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
