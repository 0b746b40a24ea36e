"""Batches of GenAI spans for processor unit tests (the collector's own SpanBatch shape)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pyarrow as pa

from lqo.collector.model.spanbatch import SCHEMA, SpanBatch

WHEN = datetime(2026, 11, 1, 12)


def messages(*pairs: tuple[str, str]) -> str:
    """Semconv message JSON from (role, text) pairs."""
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]} for role, text in pairs])


def chat(user: str | None = None, output: str | None = None, system: str | None = None,
         **extra: Any) -> dict[str, str]:
    attrs = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o"}
    if user is not None:
        attrs["gen_ai.input.messages"] = messages(("user", user))
    if output is not None:
        attrs["gen_ai.output.messages"] = json.dumps(
            [{"role": "assistant", "parts": [{"type": "text", "content": output}], "finish_reason": "stop"}])
    if system is not None:
        attrs["gen_ai.system_instructions"] = json.dumps([{"type": "text", "content": system}])
    attrs.update({k.replace("__", "."): str(v) for k, v in extra.items()})
    return attrs


def batch_of(spans: list[dict[str, str]], events: list[list[tuple[str, int, dict[str, str]]]] | None = None,
             trace_ids: list[str] | None = None) -> SpanBatch:
    rows = []
    for i, attrs in enumerate(spans):
        row: dict[str, Any] = {name: None for name in SCHEMA.names}
        row.update(Timestamp=WHEN, SpanName="chat gpt-4o", TraceId=(trace_ids or [])[i] if trace_ids else f"t{i}",
                   SpanId=f"s{i}", Duration=1_000_000, SpanAttributes=list(attrs.items()))
        for name in SCHEMA.names:
            if name.startswith(("Events.", "Links.")):
                row[name] = []
        if events and events[i]:
            row["Events.Name"] = [e[0] for e in events[i]]
            row["Events.Timestamp"] = [datetime.fromtimestamp(e[1] / 1e9) for e in events[i]]
            row["Events.Attributes"] = [list(e[2].items()) for e in events[i]]
        rows.append(row)
    return SpanBatch(pa.Table.from_pylist(rows, schema=SCHEMA))


def attributes(batch: SpanBatch) -> list[dict[str, str]]:
    return [dict(kv) for kv in batch.table.column("SpanAttributes").to_pylist()]


def evaluation_events(batch: SpanBatch, name: str) -> list[list[dict[str, str]]]:
    """Per span: the attributes of its gen_ai.evaluation.result events for check ``name``."""
    import numpy as np

    return [[a for n, _, a in evs if n == "gen_ai.evaluation.result" and a.get("gen_ai.evaluation.name") == name]
            for evs in batch.events(np.arange(len(batch)))]


def otlp_tracer(http_url: str, service: str) -> tuple[Any, Any]:
    """(provider, tracer) of the real OTel SDK exporting OTLP/HTTP to a collector at ``http_url``;
    ``provider.shutdown()`` flushes."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{http_url}/v1/traces")))
    return provider, provider.get_tracer(service)
