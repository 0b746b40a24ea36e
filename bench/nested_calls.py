"""What marking nested records of one LLM call costs (genai_normalize's ``mark_nested_calls``).

Batches of calls with random ids, each under an app span, go through ``NestedCalls.process``:
calls recorded once (the common case, where every inference span is still looked up in and
added to the memory of recent spans), every call recorded three times (a framework's span, an
SDK instrumentation's, lqo's), and calls whose app span is not in the batch (their parents may
come later: remembered too). Thread CPU per inference span, median of the rounds, once the
memory is full.

    .venv/bin/python bench/nested_calls.py --batch 5000 --rounds 9
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from datetime import datetime

import pyarrow as pa

from lqo.collector.model.spanbatch import SCHEMA, SpanBatch
from lqo.processors.normalize.calls import MEMORY, NestedCalls

ATTRS = [("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", "openai"),
         ("gen_ai.request.model", "gpt-4o"), ("gen_ai.usage.input_tokens", "120"),
         ("gen_ai.usage.output_tokens", "40"), ("server.address", "api.openai.com")]


def _batch(n: int, depth: int, with_app_span: bool = True) -> SpanBatch:
    """``n`` inference spans: chains of ``depth``, each under an app span (in the batch or not)."""
    rows: list[dict] = []
    inference = 0
    empty = {k: [] if k.startswith(("Events.", "Links.")) else None for k in SCHEMA.names}
    while inference < n:
        trace, parent = secrets.token_hex(16), secrets.token_hex(8)
        if with_app_span:
            rows.append({**empty, "Timestamp": datetime(2026, 12, 1), "SpanName": "POST /ask", "TraceId": trace,
                         "SpanId": parent, "ParentSpanId": "", "SpanAttributes": [("http.route", "/ask")]})
        for _ in range(depth):
            span = secrets.token_hex(8)
            rows.append({**empty, "Timestamp": datetime(2026, 12, 1), "SpanName": "chat gpt-4o",
                         "TraceId": trace, "SpanId": span, "ParentSpanId": parent, "SpanAttributes": ATTRS})
            parent = span
            inference += 1
    return SpanBatch(pa.Table.from_pylist(rows, schema=SCHEMA))


def measure(batch_size: int, rounds: int, depth: int, with_app_span: bool) -> float:
    nested = NestedCalls()
    for _ in range(2 * MEMORY // batch_size + 1):  # fill the memory first
        nested.process(_batch(batch_size, depth, with_app_span))
    per_span = []
    for _ in range(rounds):
        batch = _batch(batch_size, depth, with_app_span)
        batch.genai_mask()  # computed by genai_normalize before, in the pipeline
        started = time.thread_time()
        nested.process(batch)
        per_span.append((time.thread_time() - started) / batch_size * 1e6)
    return statistics.median(per_span)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    for label, depth, with_app_span in (("recorded once", 1, True), ("recorded 3 times, nested", 3, True),
                                        ("recorded once, app span later", 1, False)):
        print(f"{label:32s} {measure(args.batch, args.rounds, depth, with_app_span):.2f} µs CPU per inference span")


if __name__ == "__main__":
    main()
