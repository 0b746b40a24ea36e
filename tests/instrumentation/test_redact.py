"""lqo-distro's redaction of credentials in URL query strings (``lqo.distro.redact``)."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from lqo.distro.redact import RedactUrlSecrets, redact_url


@pytest.mark.parametrize(("url", "expected"), [
    ("https://g.googleapis.com/v1beta/models/m:generateContent?key=AIza123",
     "https://g.googleapis.com/v1beta/models/m:generateContent?key=REDACTED"),
    ("https://h/p?alt=sse&KEY=s1&api_key=s2&x=1#frag", "https://h/p?alt=sse&KEY=REDACTED&api_key=REDACTED&x=1#frag"),
    ("https://h/p?access_token=t&token=u&X-Amz-Signature=v", "https://h/p?access_token=REDACTED&token=REDACTED&X-Amz-Signature=REDACTED"),
    ("https://h/p?keyword=k&monkey=m&key=", "https://h/p?keyword=k&monkey=m&key="),  # other names; nothing to hide
    ("https://h/p", "https://h/p"),
    ("https://h/p?key", "https://h/p?key"),
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_processor_redacts_url_attributes_as_the_span_starts() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(RedactUrlSecrets())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    tracer.start_span("GET", attributes={"url.full": "https://h/p?key=s&alt=sse", "http.url": "https://h/q?sig=x",
                                         "url.query": "api-key=y&a=1", "server.address": "h"}).end()
    tracer.start_span("plain", attributes={"url.full": "https://h/p?a=1"}).end()
    first, second = exporter.get_finished_spans()
    assert dict(first.attributes) == {"url.full": "https://h/p?key=REDACTED&alt=sse", "http.url": "https://h/q?sig=REDACTED",
                                      "url.query": "api-key=REDACTED&a=1", "server.address": "h"}
    assert dict(second.attributes) == {"url.full": "https://h/p?a=1"}
