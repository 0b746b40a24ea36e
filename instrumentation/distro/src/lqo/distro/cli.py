"""``lqo-instrument <command…>``: run a Python program with GenAI auto-instrumentation.

Same as ``opentelemetry-instrument`` with this distro's defaults: OTLP/HTTP to the local
collector (``http://127.0.0.1:4318``) and message content on the span, unless the standard
``OTEL_*`` variables say otherwise.
"""

from __future__ import annotations

import sys

from . import apply_defaults

USAGE = """usage: lqo-instrument <command> [args…]

Runs a Python program with OpenTelemetry auto-instrumentation and GenAI spans exported to the
LLM Quality Observer collector. Configure with the standard OTEL_* variables, e.g.
  OTEL_SERVICE_NAME=my-app OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 lqo-instrument python app.py
Defaults: endpoint http://127.0.0.1:4318 (OTLP/HTTP), traces only,
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY.
"""


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="", file=sys.stderr if not args else sys.stdout)
        raise SystemExit(2 if not args else 0)
    apply_defaults()
    from opentelemetry.instrumentation.auto_instrumentation import run

    sys.argv = ["lqo-instrument", *args]
    run()


if __name__ == "__main__":
    main()
