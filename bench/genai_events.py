"""What adding GenAI events (sent as log records) to their spans costs the pipeline per batch.

Batches of 8,192 ``bench/workload.py`` spans (half GenAI) go through ``EventBuffer.attach``:
with the buffer empty (no producer sends log records: every batch pays this), and with 2,000
events waiting for other spans (each batch's GenAI spans are looked up). Thread CPU per span,
median of the batches after the first.

    .venv/bin/python bench/genai_events.py
"""

from __future__ import annotations

import secrets
import statistics
import time

from ingest import make_request

from lqo.collector.model import otlp
from lqo.collector.model.genai_events import Event, EventBuffer
from lqo.collector.model.spanbatch import SpanBatch


def per_span(buffer: EventBuffer, batches: list[SpanBatch]) -> float:
    times = []
    for batch in batches:
        fresh = SpanBatch(batch.table, batch.approx_bytes)  # no cached GenAI mask
        started = time.thread_time()
        buffer.attach(fresh)
        times.append((time.thread_time() - started) / len(fresh) * 1e6)
    return statistics.median(times[1:])


def main() -> None:
    batches = [otlp.decode_protobuf(make_request(8192, seed=i).SerializeToString()).batch for i in range(11)]
    waiting = EventBuffer()
    waiting.add([Event(secrets.token_hex(24), "gen_ai.user.message", 1, {"content": "hi"}) for _ in range(2000)])
    print(f"empty buffer                      {per_span(EventBuffer(), batches):.4f} µs CPU per span")
    print(f"2,000 events waiting, none match  {per_span(waiting, batches):.3f} µs CPU per span "
          "(the GenAI mask included, which the processors reuse)")


if __name__ == "__main__":
    main()
