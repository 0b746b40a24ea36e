"""What a few lines of Python cost right after a wait, beside lqo's own part of a call.

An LLM call waits for the provider: the application's thread sleeps in ``recv`` for tens of
milliseconds to seconds, and whatever runs after that runs cold (other threads and processes,
or the host of a VM, have used the core and its caches meanwhile). ``bench/overhead.py
--server-delay-ms 20`` shows lqo's own time in ``Client.send`` at ~30 µs after such a wait
against ~7 µs without one. This asks what any code costs there, on the same machine, in one
process, with the same wait:

  floor       a stand-in for the least an instrumentation's call path does: read the current
              context, make an object with four fields and two timestamps, and queue it
              (a ``ContextVar.get``, an ``__init__``, ``perf_counter`` / ``time_ns``, a deque
              append); timed right after a ``time.sleep`` of the wait, and back to back (warm)
  floor+spin  the same after the wait and a busy loop of ``--spin-us`` in other code: does
              running first warm the machine up again, or only what it touches?
  lqo         lqo's own time in ``Client.send`` (the real ``openai`` SDK against the local
              replay server of ``bench/overhead.py`` answering after the wait), split into the
              part before the client's own ``send`` (the request: the span made current) and
              the part after (the response queued for the telemetry thread), as in
              ``overhead.py``'s ``SendClock``: timing layers below and above lqo's ``send``;
              each call alternates with one without lqo, whose layer-only times are subtracted

    .venv/bin/python bench/cold_floor.py --calls 400 --wait-ms 20

Medians (and the 90th percentile) in µs. The floor's cold/warm ratio says how much of lqo's
cold cost is the machine's price for running any Python after a wait, not lqo's code.
"""

from __future__ import annotations

import argparse
import collections
import contextvars
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # the replay server and the request

_now = time.perf_counter_ns
_var: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("ctx")
_var.set({})
_queue: collections.deque[Any] = collections.deque()


class _Record:
    def __init__(self, ctx: dict[str, Any], request: Any) -> None:
        self.ctx = ctx
        self.request = request
        self.start = time.perf_counter()
        self.start_ns = time.time_ns()


def floor(request: Any) -> None:
    """The stand-in call path (see the module doc)."""
    ctx = _var.get()
    if ctx.get("suppress"):
        return
    _queue.append(_Record(ctx, request))


def _stats(ns: list[float]) -> tuple[float, float]:
    return statistics.median(ns) / 1e3, statistics.quantiles(ns, n=10)[-1] / 1e3


def _spin(us: float) -> None:
    end = _now() + us * 1000
    while _now() < end:
        pass


def measure_floor(calls: int, wait_s: float, spin_us: float) -> dict[str, tuple[float, float]]:
    cold: list[int] = []
    spun: list[int] = []
    for _ in range(calls):
        time.sleep(wait_s)
        t0 = _now()
        floor(None)
        cold.append(_now() - t0)
        time.sleep(wait_s)
        _spin(spin_us)
        t0 = _now()
        floor(None)
        spun.append(_now() - t0)
        _queue.clear()
    warm: list[int] = []
    for _ in range(calls):
        t0 = _now()
        floor(None)
        warm.append(_now() - t0)
    _queue.clear()
    return {"floor, cold": _stats(cold), "floor, cold after the spin": _stats(spun), "floor, warm": _stats(warm)}


def measure_lqo(calls: int, url: str) -> dict[str, tuple[float, float]]:
    """lqo's own time before and after the client's send (``overhead.SendClock``), each call
    against one without lqo."""
    import openai

    from lqo.instrumentation.httpx import HttpxGenAIInstrumentor

    tp, mp = overhead.discarding_providers()
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    clock = overhead.SendClock(type(client._client))  # its lower layer before lqo's send
    inst = HttpxGenAIInstrumentor()
    inst.instrument(defer=True, tracer_provider=tp, meter_provider=mp)
    lqo_on = overhead.switch(inst)
    parts: dict[bool, tuple[list[float], list[float]]] = {True: ([], []), False: ([], [])}
    try:
        for i in range(calls * 2):
            on = bool(i % 2)
            lqo_on(on)
            clock.before, clock.after = parts[on]
            with clock:
                client.chat.completions.create(**overhead.ARGS)
        inst.flush()
    finally:
        lqo_on(True)
        inst.uninstrument()
    skip = min(20, calls // 10)  # the first calls warm the SDK up
    (on_pre, on_post), (off_pre, off_post) = ([x[skip:] for x in parts[on]] for on in (True, False))

    def added(*pairs: tuple[list[float], list[float]]) -> tuple[float, float]:  # (with lqo, without), s
        return _stats([1e9 * sum(w[i] - o[i] for w, o in pairs) for i in range(len(pairs[0][0]))])

    return {"lqo, before the send": added((on_pre, off_pre)),
            "lqo, after the send": added((on_post, off_post)),
            "lqo, both": added((on_pre, off_pre), (on_post, off_post))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--wait-ms", type=float, default=20.0, help="the wait before each cold run (the provider's think time)")
    ap.add_argument("--spin-us", type=float, default=1000.0, help="busy time in other code after the wait")
    args = ap.parse_args()
    rows = measure_floor(args.calls, args.wait_ms / 1000, args.spin_us)
    with overhead.replay_server(delay_ms=args.wait_ms) as url:
        rows |= {f"{k}, after a {args.wait_ms:g} ms wait": v for k, v in measure_lqo(args.calls, url).items()}
    with overhead.replay_server(delay_ms=0) as url:
        rows |= {f"{k}, answered at once": v for k, v in measure_lqo(args.calls, url).items()}
    print(f"{args.calls} calls, wait {args.wait_ms:g} ms, spin {args.spin_us:g} µs; µs: median (p90)")
    for name, (median, p90) in rows.items():
        print(f"  {name:44} {median:8.2f} ({p90:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
