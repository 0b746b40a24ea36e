"""Replay recordings through the openai SDK under a third-party instrumentation, exporting OTLP.

Usage: producer.py {openinference|openllmetry}[+lqo] OTLP_HTTP_URL CASSETTE... — each call runs under
a parent span named after its cassette, so the test can find the producer's span for each one.
``+lqo`` adds lqo's httpx instrumentation: each call is then recorded twice, the SDK
instrumentation's span around lqo's (exported after it: lqo's worker makes its span later).
Runs in its own process: both instrumentations patch the openai package for good.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from tests.instrumentation import sdk_calls
from tests.instrumentation.replay import RECORDINGS, serve_cassette


def main() -> None:
    mode, url, cassettes = sys.argv[1], sys.argv[2], sys.argv[3:]
    which, _, also = mode.partition("+")
    provider = TracerProvider(resource=Resource.create({"service.name": f"producer-{mode}"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces")))
    if which == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor
    else:
        os.environ["TRACELOOP_TRACE_CONTENT"] = "true"
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    if also == "lqo":
        from lqo.instrumentation.httpx import HttpxGenAIInstrumentor

        HttpxGenAIInstrumentor().instrument(tracer_provider=provider)
    tracer = provider.get_tracer("producer")
    for name in cassettes:
        server = serve_cassette(RECORDINGS / "openai" / name)
        with server, tracer.start_as_current_span(Path(name).stem):
            is_async = "_async_" in name
            client = sdk_calls.make_client("openai", server.url, is_async)
            try:
                if is_async:
                    asyncio.run(sdk_calls.run_async(client, server.exchanges[0]))
                else:
                    sdk_calls.run_sync(client, server.exchanges[0])
            except Exception as exc:  # recorded 4xx/5xx: the span records it
                print(f"{name}: {type(exc).__name__}", file=sys.stderr)
    provider.shutdown()


if __name__ == "__main__":
    main()
