"""``lqo report``: the GenAI calls of a recent window at a glance.

Calls, failed share, latency and time-to-first-chunk percentiles, tokens, spend and flagged
calls, by service and model (or by service, provider or model alone), and a total. Calls are
calls to a model: agents' and tools' spans (``NOT_CALLS``) are left out. One read-only query of
the per-minute roll-ups ``<table>_genai_1m``: as cheap over a month as over an hour.

By end user (``user.id``, else ``enduser.id``) or by conversation (``gen_ai.conversation.id``)
the same figures come from the GenAI calls table ``<table>_genai`` itself: the roll-ups do not
keep those keys (one row per user and minute would be as many rows as calls). That query reads
the window's calls, so it costs in proportion to them; calls without the key are one row, ``-``.

``--evaluations`` reports the evaluation results producers sent instead (``<table>_genai_evaluations``:
users' feedback, evaluators' scores), per evaluation name and the same keys, each joined to its
call by its response id, or else by its span: how many, the mean and lowest score, and each label's count.
"""

from __future__ import annotations

from lqo.collector.exporters.clickhouse.schema import SchemaSpec, quote_ident
from lqo.collector.model.spanbatch import NOT_CALLS

GROUPS = {  # --by → (column, output name) of each key
    "model": (("ServiceName", "service"), ("Provider", "provider"), ("RequestModel", "model")),
    "service": (("ServiceName", "service"),),
    "provider": (("Provider", "provider"),),
    "request_model": (("RequestModel", "model"),),
}
CALL_GROUPS = {  # --by → the GenAI table's column, and the output name: read from calls, not roll-ups
    "user": ("UserId", "user"),
    "conversation": ("ConversationId", "conversation"),
}
BY = (*GROUPS, *CALL_GROUPS)


def label_counts(column: str) -> str:
    """SQL for each label's count among a group's evaluation results, as text: ``thumbs_up 12,
    thumbs_down 3`` (``-`` for results without a label); the report's and the dashboards'."""
    return (f"arrayStringConcat(arrayMap((label, n) -> concat(label, ' ', toString(n)), "
            f"(sumMap([if({column} = '', '-', {column})], [toUInt64(1)]) AS counted).1, counted.2), ', ')")
_CALLS_ONLY = f"Operation NOT IN ({', '.join(repr(op) for op in NOT_CALLS)})"


def report_sql(schema: SchemaSpec, since_seconds: float, by: str = "model", top: int = 50) -> str:
    """The report over the last ``since_seconds``, grouped as ``GROUPS[by]``, with a total row
    (the keys of which read ``all``); largest spend first, then most calls."""
    if by in CALL_GROUPS:
        return _calls_sql(schema, since_seconds, by, top)
    if by not in GROUPS:
        raise ValueError(f"unknown grouping {by!r}; use one of {', '.join(BY)}")
    keys = GROUPS[by]
    key_select = ", ".join(f"if(grouping({column}) = 1, 'all', {column}) AS {name}" for column, name in keys)
    columns = ", ".join(column for column, _ in keys)
    table = f"{quote_ident(schema.database)}.{quote_ident(schema.rollup_table)}"
    window = max(60, int(since_seconds))
    return f"""SELECT {key_select},
       sum(Calls) AS calls,
       round(sum(Errors) / sum(Calls), 4) AS failed_share,
       round(quantileTDigestMerge(0.5)(DurationQuantiles) / 1e9, 3) AS p50_s,
       round(quantileTDigestMerge(0.95)(DurationQuantiles) / 1e9, 3) AS p95_s,
       if(isNaN(quantileTDigestMerge(0.95)(TimeToFirstChunkQuantiles) AS ttfc), NULL, round(ttfc, 3)) AS ttfc_p95_s,
       sum(InputTokens) AS input_tokens,
       sum(OutputTokens) AS output_tokens,
       round(sum(CostUsd), 6) AS cost_usd,
       sum(UnpricedCalls) AS unpriced_calls,
       sum(FlaggedCalls) AS flagged_calls
FROM {table}
WHERE Minute >= toStartOfMinute(now() - INTERVAL {window} SECOND)
  AND {_CALLS_ONLY}
GROUP BY GROUPING SETS (({columns}), ())
ORDER BY grouping({keys[0][0]}) DESC, cost_usd DESC, calls DESC
LIMIT {int(top) + 1}"""


def evaluations_sql(schema: SchemaSpec, since_seconds: float, by: str = "model", top: int = 50) -> str:
    """The evaluation results of the last ``since_seconds`` per evaluation name and ``by``'s keys
    (read from each result's call: calls from up to a day before the window; a result whose call
    is not stored has keys ``-``), most results first."""
    if by in CALL_GROUPS:
        keys: tuple[tuple[str, str], ...] = (CALL_GROUPS[by],)
    elif by in GROUPS:
        keys = GROUPS[by]
    else:
        raise ValueError(f"unknown grouping {by!r}; use one of {', '.join(BY)}")
    window = max(60, int(since_seconds))
    evaluations = f"{quote_ident(schema.database)}.{quote_ident(schema.evaluations_table)}"
    calls = f"{quote_ident(schema.database)}.{quote_ident(schema.genai_table)}"
    key_select = ", ".join(f"if(g.{column} = '', '-', g.{column}) AS {name}" for column, name in keys)
    columns = ", ".join(f"g.{column}" for column, _ in keys)
    return f"""SELECT e.Name AS evaluation, {key_select},
       count() AS results,
       round(avg(e.ScoreValue), 4) AS mean_score,
       round(min(e.ScoreValue), 4) AS min_score,
       {label_counts("e.ScoreLabel")} AS labels
FROM (SELECT Name, ScoreValue, ScoreLabel, SpanId, ResponseId FROM {evaluations}
      WHERE Timestamp >= now() - INTERVAL {window} SECOND) AS e
LEFT JOIN (SELECT SpanId, ResponseId, {", ".join(sorted({c for c, _ in keys}))} FROM {calls}
           WHERE Timestamp >= now() - INTERVAL {window + 86400} SECOND) AS g
ON (e.ResponseId != '' AND e.ResponseId = g.ResponseId) OR (e.ResponseId = '' AND e.SpanId != '' AND e.SpanId = g.SpanId)
GROUP BY e.Name, {columns}
ORDER BY results DESC, evaluation
LIMIT {int(top)}"""


def _calls_sql(schema: SchemaSpec, since_seconds: float, by: str, top: int) -> str:
    """The same figures from the calls themselves, for a key the roll-ups do not keep."""
    column, name = CALL_GROUPS[by]
    table = f"{quote_ident(schema.database)}.{quote_ident(schema.genai_table)}"
    window = max(60, int(since_seconds))
    return f"""SELECT multiIf(grouping({column}) = 1, 'all', {column} = '', '-', {column}) AS {name},
       count() AS calls,
       round(countIf(StatusCode = 'Error' OR ErrorType != '') / count(), 4) AS failed_share,
       round(quantileTDigest(0.5)(Duration) / 1e9, 3) AS p50_s,
       round(quantileTDigest(0.95)(Duration) / 1e9, 3) AS p95_s,
       if(isNaN(quantileTDigestIf(0.95)(ifNull(TimeToFirstChunk, 0), TimeToFirstChunk IS NOT NULL) AS ttfc),
          NULL, round(ttfc, 3)) AS ttfc_p95_s,
       sum(InputTokens) AS input_tokens,
       sum(OutputTokens) AS output_tokens,
       round(sum(ifNull(CostUsd, 0)), 6) AS cost_usd,
       countIf(CostSource = 'unknown_model') AS unpriced_calls,
       countIf(notEmpty(Flags)) AS flagged_calls
FROM {table}
WHERE Timestamp >= now() - INTERVAL {window} SECOND
  AND {_CALLS_ONLY}
GROUP BY GROUPING SETS (({column}), ())
ORDER BY grouping({column}) DESC, cost_usd DESC, calls DESC
LIMIT {int(top) + 1}"""
