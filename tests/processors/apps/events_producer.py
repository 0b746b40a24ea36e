"""An app whose LLM calls' messages travel as log-based events: openai-v2 with content capture
on (the older semantic conventions: ``gen_ai.user.message`` / ``gen_ai.choice`` log records
beside each span), exporting spans and log records over OTLP/HTTP with the SDK's batch
processors, replaying a recording.

Usage: events_producer.py OTLP_HTTP_URL CASSETTE [MORE_PROMPT] — prints the answer's text. The
prompt is the recording's, with MORE_PROMPT appended (a replay answers whatever it is asked).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

os.environ["OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"] = "true"

import openai
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tests.instrumentation.replay import RECORDINGS, serve_cassette


def main() -> None:
    url, cassette, more = sys.argv[1], sys.argv[2], " ".join(sys.argv[3:])
    resource = Resource.create({"service.name": "events-producer"})
    traces = TracerProvider(resource=resource)
    traces.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces")))
    logs = LoggerProvider(resource=resource)
    logs.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{url}/v1/logs")))
    OpenAIInstrumentor().instrument(tracer_provider=traces, logger_provider=logs)
    with serve_cassette(RECORDINGS / "openai" / cassette) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="test-key", max_retries=0)
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"Say this is a test {more}".strip()}])
    print(reply.choices[0].message.content)
    logs.shutdown()  # the events first, as the SDKs' default schedules (1 s against 5 s) do
    traces.shutdown()


if __name__ == "__main__":
    main()
