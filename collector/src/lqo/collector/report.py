"""``lqo report``: the GenAI calls of a recent window at a glance, from the per-minute roll-ups.

Calls, failed share, latency and time-to-first-chunk percentiles, tokens, spend and flagged
calls, by service and model (or by service, provider or model alone), and a total. Calls are
calls to a model: agents' and tools' spans (``NOT_CALLS``) are left out. One
read-only query of ``<table>_genai_1m``: as cheap over a month as over an hour.
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


def report_sql(schema: SchemaSpec, since_seconds: float, by: str = "model", top: int = 50) -> str:
    """The report over the last ``since_seconds``, grouped as ``GROUPS[by]``, with a total row
    (the keys of which read ``all``); largest spend first, then most calls."""
    if by not in GROUPS:
        raise ValueError(f"unknown grouping {by!r}; use one of {', '.join(GROUPS)}")
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
  AND Operation NOT IN ({", ".join(f"'{op}'" for op in NOT_CALLS)})
GROUP BY GROUPING SETS (({columns}), ())
ORDER BY grouping({keys[0][0]}) DESC, cost_usd DESC, calls DESC
LIMIT {int(top) + 1}"""
