"""What adding GenAI events (sent as log records) to their spans costs the pipeline per batch.

Batches of 8,192 ``bench/workload.py`` spans (half GenAI) go through ``EventBuffer.attach``:
with the buffer empty (no producer sends log records: every batch pays this), and with 2,000
events waiting for other spans (each batch's GenAI spans are looked up). Then the pipeline's
hold for late events (``Pipeline._hold``, ``service.queue.hold_for_events``): no scope has sent
events (every batch pays this), one other scope has (the batch's scopes are looked up, nothing
held), and the batch's own scope has (its GenAI spans without messages are split off and held;
the workload's GenAI spans carry messages, so they are stripped of them first). Thread CPU per
span, median of the batches after the first.

    .venv/bin/python bench/genai_events.py
"""

from __future__ import annotations

import secrets
import statistics
import time
from typing import Any

from ingest import make_request

from lqo.collector.model import otlp
from lqo.collector.model.genai_events import Event, EventBuffer
from lqo.collector.model.spanbatch import SpanBatch
from lqo.collector.pipeline import Pipeline
from lqo.collector.telemetry import SelfTelemetry


def per_span(buffer: EventBuffer, batches: list[SpanBatch]) -> float:
    times = []
    for batch in batches:
        fresh = SpanBatch(batch.table, batch.approx_bytes)  # no cached GenAI mask
        started = time.thread_time()
        buffer.attach(fresh)
        times.append((time.thread_time() - started) / len(fresh) * 1e6)
    return statistics.median(times[1:])


def without_messages(request: Any) -> Any:
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                kept = [kv for kv in span.attributes if kv.key not in ("gen_ai.input.messages", "gen_ai.output.messages")]
                del span.attributes[:]
                span.attributes.extend(kept)
    return request


def hold_per_span(scopes: list[str], batches: list[SpanBatch]) -> tuple[float, int]:
    pipeline = Pipeline("bench", [], [], SelfTelemetry(), 100_000, 256 * 1024**2)
    pipeline.events.scopes.update(dict.fromkeys(scopes))
    times, held = [], 0
    for batch in batches:
        fresh = SpanBatch(batch.table, batch.approx_bytes)
        started = time.thread_time()
        pipeline._hold(fresh)
        times.append((time.thread_time() - started) / len(fresh) * 1e6)
        held = sum(len(h.batch) for h in pipeline._held)
        pipeline._held.clear()
    return statistics.median(times[1:]), held


def main() -> None:
    batches = [otlp.decode_protobuf(make_request(8192, seed=i).SerializeToString()).batch for i in range(11)]
    waiting = EventBuffer()
    waiting.add([Event(secrets.token_hex(24), "gen_ai.user.message", 1, {"content": "hi"}) for _ in range(2000)])
    print(f"empty buffer                      {per_span(EventBuffer(), batches):.4f} µs CPU per span")
    print(f"2,000 events waiting, none match  {per_span(waiting, batches):.3f} µs CPU per span "
          "(the GenAI mask included, which the processors reuse)")
    bare = [otlp.decode_protobuf(without_messages(make_request(8192, seed=i)).SerializeToString()).batch
            for i in range(11)]
    for label, scopes, data in (("hold: no scope sends events", [], batches),
                                ("hold: another scope sends events", ["node-app"], batches),
                                ("hold: this scope does, all held", ["lqo.bench"], bare)):
        cost, held = hold_per_span(scopes, data)
        print(f"{label:34s}{cost:.4f} µs CPU per span ({held} of {len(data[-1])} held)")


if __name__ == "__main__":
    main()
