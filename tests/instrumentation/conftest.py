from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lqo.instrumentation.httpx import HttpxGenAIInstrumentor


@dataclass
class Instrumented:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    instrumentor: HttpxGenAIInstrumentor

    def genai_spans(self) -> list[Any]:
        # The SDK's own flush: the instrumentor hooks it to wait for its deferred telemetry.
        self.tracer_provider.force_flush()
        return [s for s in self.exporter.get_finished_spans()
                if s.instrumentation_scope.name == "lqo.instrumentation.httpx"]

    def metrics(self) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        self.meter_provider.force_flush()
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    out.setdefault(m.name, []).extend(m.data.data_points)
        return out


@pytest.fixture
def instrument() -> Iterator[Any]:
    made: list[Instrumented] = []

    def make(**kwargs: Any) -> Instrumented:
        exporter = InMemorySpanExporter()
        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(exporter))
        reader = InMemoryMetricReader()
        mp = MeterProvider(metric_readers=[reader])
        inst = HttpxGenAIInstrumentor()
        inst.instrument(tracer_provider=tp, meter_provider=mp, **kwargs)
        made.append(Instrumented(exporter, reader, tp, mp, inst))
        return made[-1]

    yield make
    for m in made:
        m.instrumentor.uninstrument()
