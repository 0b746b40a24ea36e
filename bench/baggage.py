"""What copying the caller's baggage onto a GenAI span costs the telemetry thread per call
(``_baggage.BaggageKeys.attributes``, run where the worker finishes a call; nothing runs on the
application's call path). Best of 5 rounds of 200,000 calls, default keys.

    .venv/bin/python bench/baggage.py
"""

from __future__ import annotations

import timeit

from opentelemetry import baggage, context

from lqo.instrumentation.httpx._baggage import BaggageKeys


def main() -> None:
    keys = BaggageKeys(None)
    own = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}
    listed = baggage.set_baggage("gen_ai.conversation.id", "conv-1", baggage.set_baggage("user.id", "u-1"))
    crowded = listed
    for i in range(8):  # what else an application's baggage may carry
        crowded = baggage.set_baggage(f"app.other{i}", "v", crowded)
    cases = {"no baggage": context.Context(), "two listed entries": listed,
             "two listed, eight other entries": crowded}
    n = 200_000
    for name, c in cases.items():
        best = min(timeit.repeat(lambda c=c: keys.attributes(c, own), number=n, repeat=5)) / n * 1e6
        print(f"{name:34s}{best:.3f} µs per call")


if __name__ == "__main__":
    main()
