"""Messages that travel as log-based events reach the checks and the store: openai-v2 with
content capture records each call's messages as ``gen_ai.user.message`` / ``gen_ai.choice`` log
records beside its span (the older semantic conventions; Node's instrumentation does the same,
tests/instrumentation/test_node_producer.py). Exported over OTLP/HTTP with the SDK's batch
processors to ``lqo collector`` with ``genai_normalize`` and ``pii``: the stored span carries
the recorded messages as semconv attributes, with the PII in the prompt found and redacted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.instrumentation.expected import expected_for
from tests.instrumentation.replay import RECORDINGS, load_cassette

PRODUCER = Path(__file__).parent / "apps" / "events_producer.py"
CASSETTE = "openai__test_chat_completion_with_content.yaml"


def test_openai_v2_message_events_become_the_spans_messages(make_collector: Any) -> None:
    col = make_collector({
        "processors": {"genai_normalize": {}, "pii": {}},
        "service": {"pipelines": {"traces": {"processors": ["genai_normalize", "pii"]}}},
    })
    run = subprocess.run([sys.executable, str(PRODUCER), col.http_url, CASSETTE, "Call me at 415-555-0132."],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    expected = expected_for(load_cassette(RECORDINGS / "openai" / CASSETTE)[0])
    assert run.stdout.strip() == expected.output_text[0]
    assert col.wait_stored(1) == 1
    [span] = col.query("SELECT `Events.Name` AS events, `Events.Attributes` AS event_attrs, SpanAttributes AS a "
                       "FROM otel_traces")
    assert span["events"][:2] == ["gen_ai.user.message", "gen_ai.choice"]  # then the pii check's result
    attrs = span["a"]
    [asked] = json.loads(attrs["gen_ai.input.messages"])
    assert asked["role"] == "user" and "Say this is a test" in asked["parts"][0]["content"]
    [answer] = json.loads(attrs["gen_ai.output.messages"])
    assert answer["parts"][0]["content"] == expected.output_text[0]
    assert answer["finish_reason"] == expected.finish_reasons[0]
    # the pii check read the messages the events brought: the phone number is gone everywhere
    assert attrs["lqo.pii.entities"] == "PHONE_NUMBER" and "415-555-0132" not in json.dumps(span)
