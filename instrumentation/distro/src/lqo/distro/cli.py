"""``lqo-instrument <command…>``: run a Python program with GenAI auto-instrumentation.

Same as ``opentelemetry-instrument`` with this distro's defaults: OTLP/HTTP to the local
collector (``http://127.0.0.1:4318``) and message content on the span, unless the standard
``OTEL_*`` variables say otherwise.
"""

from __future__ import annotations

import os
import shutil
import sys

from . import apply_defaults

USAGE = """usage: lqo-instrument <command> [args…]

Runs a Python program with OpenTelemetry auto-instrumentation and GenAI spans exported to the
LLM Quality Observer collector. Configure with the standard OTEL_* variables, e.g.
  OTEL_SERVICE_NAME=my-app OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 lqo-instrument python app.py
Defaults: endpoint http://127.0.0.1:4318 (OTLP/HTTP), traces only,
OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=SPAN_ONLY.
"""


def _which(command: str) -> str:
    """``shutil.which``, but a program that is not there (or cannot be run) ends the run with
    the shell's message and status, where ``opentelemetry-instrument`` passes None to exec."""
    found = shutil.which(command)
    if found is not None:
        return found
    script = os.path.isfile(command)
    if script and os.sep in command:
        reason, status = "Permission denied (not executable)", 126
    else:
        reason, status = "command not found", 127
    hint = f"; a script runs as: lqo-instrument python {command}" if script else ""
    print(f"lqo-instrument: {command}: {reason}{hint}", file=sys.stderr)
    raise SystemExit(status)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, end="", file=sys.stderr if not args else sys.stdout)
        raise SystemExit(2 if not args else 0)
    if args[0] == "--version":  # this distro's, not opentelemetry-instrument's alone
        from opentelemetry.instrumentation.version import __version__ as otel

        from lqo.instrumentation.httpx.version import __version__ as httpx

        from .version import __version__
        print(f"lqo-instrument {__version__} (lqo-instrumentation-httpx {httpx}, opentelemetry-instrumentation {otel})")
        raise SystemExit(0)
    apply_defaults()
    from opentelemetry.instrumentation import auto_instrumentation

    auto_instrumentation.which = _which  # its run() looks the command up with it
    sys.argv = ["lqo-instrument", *args]
    auto_instrumentation.run()


if __name__ == "__main__":
    main()
