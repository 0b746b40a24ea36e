"""What the GenAI tables cost at insert and save at query time, side by side in one process.

One embedded store (chdb), two databases holding the same spans: ``views`` with the GenAI
tables (``otel_traces_genai``, ``otel_traces_genai_1m`` and their materialized views) and
``plain`` without (``genai_tables: false``). The workload is bench/workload.py's (half GenAI
chat spans with ~1 KB of messages, half HTTP spans; the GenAI ones priced and 3% flagged for
PII, as the default pipeline leaves them), its spans spread evenly over ``--days`` (so the
roll-ups hold a row per minute, service and model wherever a call fell), decoded once into
the Arrow batches the exporter inserts, then inserted batch by batch into both databases, the
order alternating: CPU of the process (chdb's threads included) and wall time per span, median
over batches.

Then the dashboards' questions, each asked ``--repeat`` times of both shapes in turns over the
whole range, median wall time:

  spend by model   per service and model: calls, cost, unpriced calls, tokens, p95 duration
                   (spans: SpanAttributes parsed per row; tables: the per-minute roll-ups)
  PII by type      entity types found (spans: split the attribute string; tables: the array)
  flagged calls    the latest 200 flagged calls with their scores
  recent calls     the latest 200 GenAI calls with tokens, cost, error, flags

    .venv/bin/python bench/genai_tables.py --spans 1000000 --days 30   # ~12 GenAI calls a minute
    .venv/bin/python bench/genai_tables.py --spans 1000000 --days 1    # ~350 a minute
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import make_request

from lqo.collector.exporters.clickhouse.backends import ChdbBackend
from lqo.collector.exporters.clickhouse.schema import SchemaSpec
from lqo.collector.model.otlp import decode_protobuf

GENAI = "SpanAttributes['gen_ai.operation.name'] != ''"
# (title, on the spans as the dashboards asked before the GenAI tables, on the GenAI tables now)
QUESTIONS = [
    ("spend by model", f"""
        SELECT ServiceName AS service, SpanAttributes['gen_ai.request.model'] AS model, count() AS calls,
               sum(toFloat64OrZero(SpanAttributes['lqo.cost.usd'])) AS cost_usd,
               countIf(SpanAttributes['lqo.cost.source'] = 'unknown_model') AS unpriced_calls,
               sum(toInt64OrZero(SpanAttributes['gen_ai.usage.input_tokens'])) AS input_tokens,
               sum(toInt64OrZero(SpanAttributes['gen_ai.usage.output_tokens'])) AS output_tokens,
               quantile(0.95)(Duration) / 1e9 AS p95_seconds
        FROM {{db}}.otel_traces WHERE {GENAI} GROUP BY service, model ORDER BY cost_usd DESC LIMIT 50""", """
        SELECT ServiceName AS service, RequestModel AS model, sum(Calls) AS calls, sum(CostUsd) AS cost_usd,
               sum(UnpricedCalls) AS unpriced_calls, sum(InputTokens) AS input_tokens,
               sum(OutputTokens) AS output_tokens, quantileTDigestMerge(0.95)(DurationQuantiles) / 1e9 AS p95_seconds
        FROM {db}.otel_traces_genai_1m GROUP BY service, model ORDER BY cost_usd DESC LIMIT 50"""),
    ("PII by type", f"""
        SELECT arrayJoin(splitByChar(',', SpanAttributes['lqo.pii.entities'])) AS entity, count() AS calls
        FROM {{db}}.otel_traces WHERE {GENAI} AND SpanAttributes['lqo.pii.entities'] != ''
        GROUP BY entity ORDER BY calls DESC""", """
        SELECT arrayJoin(PiiEntities) AS entity, count() AS calls FROM {db}.otel_traces_genai
        WHERE notEmpty(PiiEntities) GROUP BY entity ORDER BY calls DESC"""),
    ("flagged calls", f"""
        SELECT Timestamp AS time, ServiceName AS service, SpanAttributes['gen_ai.request.model'] AS model,
               SpanAttributes['lqo.flags'] AS flags, SpanAttributes['lqo.pii.entities'] AS pii,
               toFloat64OrNull(SpanAttributes['lqo.injection.score']) AS injection, TraceId AS trace_id
        FROM {{db}}.otel_traces WHERE {GENAI} AND SpanAttributes['lqo.flags'] != ''
        ORDER BY Timestamp DESC LIMIT 200""", """
        SELECT Timestamp AS time, ServiceName AS service, RequestModel AS model,
               arrayStringConcat(Flags, ', ') AS flags, arrayStringConcat(PiiEntities, ', ') AS pii,
               InjectionScore AS injection, TraceId AS trace_id
        FROM {db}.otel_traces_genai WHERE notEmpty(Flags) ORDER BY Timestamp DESC LIMIT 200"""),
    ("recent calls", f"""
        SELECT Timestamp AS time, ServiceName AS service, SpanName AS span,
               SpanAttributes['gen_ai.provider.name'] AS provider, Duration / 1e6 AS duration_ms,
               toInt64OrNull(SpanAttributes['gen_ai.usage.input_tokens']) AS input_tokens,
               toInt64OrNull(SpanAttributes['gen_ai.usage.output_tokens']) AS output_tokens,
               toFloat64OrNull(SpanAttributes['lqo.cost.usd']) AS cost_usd,
               SpanAttributes['error.type'] AS error, SpanAttributes['lqo.flags'] AS flags, TraceId AS trace_id
        FROM {{db}}.otel_traces WHERE {GENAI} ORDER BY Timestamp DESC LIMIT 200""", """
        SELECT Timestamp AS time, ServiceName AS service, SpanName AS span, Provider AS provider,
               Duration / 1e6 AS duration_ms, InputTokens AS input_tokens, OutputTokens AS output_tokens,
               CostUsd AS cost_usd, ErrorType AS error, arrayStringConcat(Flags, ', ') AS flags, TraceId AS trace_id
        FROM {db}.otel_traces_genai ORDER BY Timestamp DESC LIMIT 200"""),
]


def as_processed(request: Any, rng: random.Random, start_ns: int, slot_ns: int) -> Any:
    """The spans spread over ``slot_ns`` from ``start_ns`` (as a steady stream of calls would be),
    the GenAI ones as the default pipeline leaves them: priced, and 3% flagged for PII."""
    for span in request.resource_spans[0].scope_spans[0].spans:
        duration = span.end_time_unix_nano - span.start_time_unix_nano
        span.start_time_unix_nano = start_ns + rng.randrange(slot_ns)
        span.end_time_unix_nano = span.start_time_unix_nano + duration
        attrs = {kv.key: kv.value for kv in span.attributes}
        if "gen_ai.operation.name" not in attrs:
            continue
        usd = attrs["gen_ai.usage.input_tokens"].int_value * 2.5e-6 + attrs["gen_ai.usage.output_tokens"].int_value * 1e-5
        extra = {"lqo.cost.usd": f"{usd:.8f}", "lqo.cost.source": "computed", "lqo.injection.score": "0"}
        if rng.random() < 0.03:
            extra |= {"lqo.pii.count": "1", "lqo.pii.entities": "EMAIL_ADDRESS", "lqo.pii.action": "redacted",
                      "lqo.flags": '["pii"]'}
        for key, value in extra.items():
            span.attributes.add(key=key).value.string_value = value
    return request


def batches(spans: int, batch: int, days: float) -> list:
    """The Arrow batches of the run: requests of ``batch`` spans, spread evenly over ``days``."""
    n = max(1, spans // batch)
    end = 1_760_000_000_000_000_000
    step = int(days * 86400e9 / n)
    rng = random.Random(7)
    out = []
    for i in range(n):
        start = end - (n - i) * step
        request = as_processed(make_request(batch, seed=i), rng, start, step)
        out.append(decode_protobuf(request.SerializeToString()).batch.table)
        if (i + 1) % max(1, n // 10) == 0:
            print(f"  decoded {i + 1}/{n} requests", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spans", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=8192, help="spans per insert (the exporter's batches)")
    ap.add_argument("--days", type=float, default=30.0, help="the time range the spans are spread over")
    ap.add_argument("--repeat", type=int, default=7, help="runs of each question, each shape")
    args = ap.parse_args()

    directory = tempfile.mkdtemp(prefix="lqo-genai-bench-")
    try:
        run(args, ChdbBackend(directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)  # a 1M-span store is ~1 GB


def run(args: argparse.Namespace, store: ChdbBackend) -> None:
    specs = {"views": SchemaSpec("views"), "plain": SchemaSpec("plain", genai=False)}
    for spec in specs.values():
        for statement in spec.statements():
            store.execute(statement)
    settings = {"materialize_skip_indexes_on_insert": 0, "materialized_views_ignore_errors": 1}

    print(f"decoding {args.spans} spans", file=sys.stderr)
    tables = batches(args.spans, args.batch, args.days)
    per_span: dict[str, dict[str, list[float]]] = {name: {"cpu": [], "wall": []} for name in specs}
    for i, table in enumerate(tables):
        order = list(specs) if i % 2 == 0 else list(reversed(specs))
        for name in order:
            cpu, wall = time.process_time(), time.perf_counter()
            store.insert_arrow(name, "otel_traces", table, settings)
            per_span[name]["cpu"].append((time.process_time() - cpu) / table.num_rows * 1e6)
            per_span[name]["wall"].append((time.perf_counter() - wall) / table.num_rows * 1e6)
        if (i + 1) % max(1, len(tables) // 10) == 0:
            print(f"  inserted {i + 1}/{len(tables)} batches into both", file=sys.stderr)

    def count(sql: str) -> int:
        return int(store.query(sql, "TSVRaw").decode().strip())

    genai = count(f"SELECT countIf({GENAI}) FROM views.otel_traces")
    assert count("SELECT count() FROM views.otel_traces_genai") == genai
    assert count("SELECT sum(Calls) FROM views.otel_traces_genai_1m") == genai

    insert = {name: {k: round(statistics.median(v), 2) for k, v in d.items()} for name, d in per_span.items()}
    result: dict = {
        "spans": len(tables) * args.batch, "genai_spans": genai, "days": args.days,
        "rollup_rows": count("SELECT count() FROM views.otel_traces_genai_1m"),
        "insert_us_per_span_median": insert,
        "insert_cpu_views_vs_plain": round(insert["views"]["cpu"] / insert["plain"]["cpu"], 3),
        "queries_ms_median": {},
    }
    for title, on_spans, on_tables in QUESTIONS:
        times: dict[str, list[float]] = {"spans": [], "tables": []}
        answers = {}
        for r in range(args.repeat):
            shapes = [("spans", on_spans), ("tables", on_tables)]
            for shape, sql in shapes if r % 2 == 0 else reversed(shapes):
                t = time.perf_counter()
                answers[shape] = store.query(sql.format(db="views"), "JSONCompact")
                times[shape].append((time.perf_counter() - t) * 1e3)
        spans_ms, tables_ms = (statistics.median(times[s]) for s in ("spans", "tables"))
        result["queries_ms_median"][title] = {
            "spans": round(spans_ms, 1), "genai_tables": round(tables_ms, 1),
            "speedup": round(spans_ms / tables_ms, 1),
            "rows": len(json.loads(answers["tables"])["data"]),
        }
    print(json.dumps(result, indent=2))
    store.close()


if __name__ == "__main__":
    main()
