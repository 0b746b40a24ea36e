"""Telemetry-thread cost per streamed message: parsing a recorded stream into the call record.

What lqo's telemetry thread does with a streamed response's bytes (``StreamParser`` and the
family's stream decoder), timed in a loop per recorded stream: with every event decoded (no
``skip``/``quiet``/``run``, as before session 17), with the skip as the instrumentation runs it
(content capture off), and with content capture on (every delta is content then: text-only
deltas are read from their bytes in runs, any other event is decoded):

    .venv/bin/python bench/stream_decode.py [--repeat 200]

Streams: OpenAI chat (the recorded stream with its content event repeated to 200 events, as
``bench/overhead.py``'s long stream), the largest recorded stream of Anthropic Messages, Ollama
and the Responses API, and the largest with tool calls or thinking of each family that has them. Medians of ``--repeat`` runs, in µs per message.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def streams() -> dict[str, Any]:
    import overhead

    from lqo.instrumentation.httpx.decoders import Router
    from tests.instrumentation.replay import RECORDINGS, load_cassette

    out = {"openai chat, 200 events": overhead.long_stream(load_cassette(overhead.STREAM)[0], 200)}
    out["openai chat, 200 events"].request_body = json.dumps(overhead.STREAM_ARGS)
    largest: dict[str, Any] = {}
    for path in sorted(RECORDINGS.glob("*/*.yaml")):
        for ex in load_cassette(path):
            if ex.method != "POST" or ex.status != 200 or not ex.streamed:
                continue
            route = Router().route(ex.path.split("?", 1)[0])
            if route is None:
                continue
            name = route[0].name
            # Besides text: the largest streams of tool calls and thinking, decoded differently.
            names = [f"{name}, {kind}" for kind, marker in (("tool calls", b'"tool_calls"'), ("tool calls", b"input_json_delta"),
                                                            ("thinking", b"thinking_delta")) if marker in ex.body]
            if name != "openai.chat_completions":
                names.append(name)
            for key in names:
                if key not in largest or len(ex.body) > len(largest[key].body):
                    largest[key] = ex
    return {**out, **dict(sorted(largest.items()))}


def decode_once(ex: Any, capture: bool, skip: bool) -> tuple[float, int]:
    from lqo.instrumentation.httpx._record import CallRecord
    from lqo.instrumentation.httpx._streams import StreamParser
    from lqo.instrumentation.httpx.decoders import Router

    family, operation = Router().route(ex.path.split("?", 1)[0])  # type: ignore[misc]
    rec = CallRecord(operation, capture)
    body = json.loads(ex.request_body) if ex.request_body else None
    if isinstance(body, dict):
        family.request(operation, body, rec)
    acc = family.stream(operation, rec)
    kind = "sse" if "event-stream" in ex.content_type else "ndjson"
    # (``run`` by keyword, and only where the decoder has it: the bench also runs on older code.)
    run = {"run": acc.run} if skip and hasattr(acc, "run") else {}
    parser = StreamParser(kind, "", acc.event, *((getattr(acc, "skip", None), getattr(acc, "quiet", None))
                                                 if skip else ()), **run)
    t0 = time.perf_counter()
    parser.feed(ex.body)
    parser.close()
    acc.finish()
    return time.perf_counter() - t0, parser.events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    modes = (("all decoded", False, False), ("skip (default)", False, True), ("capture on", True, True))
    print(f"{'µs per message, median of ' + str(args.repeat):44s}" + "".join(f"{m:>16s}" for m, _, _ in modes)
          + f"{'decoded (skip)':>16s}")
    for label, ex in streams().items():
        messages = max(1, ex.body.count(b"\n\n") if "event-stream" in ex.content_type else ex.body.count(b"\n"))
        row, decoded = [], 0
        for _, capture, skip in modes:
            times = []
            for _ in range(args.repeat):
                spent, events = decode_once(ex, capture, skip)
                times.append(spent)
                if skip and not capture:
                    decoded = events
            row.append(statistics.median(times) / messages * 1e6)
        print(f"{label:44s}" + "".join(f"{v:16.2f}" for v in row) + f"{decoded:>10d} of {messages}")


if __name__ == "__main__":
    main()
