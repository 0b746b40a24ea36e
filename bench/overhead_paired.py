"""Added latency per call and per streamed chunk, each instrumented call paired with a plain one.

``bench/overhead.py`` compares processes, or lqo's blocks on and off, taking turns in blocks of
calls. On this 2-core VM two processes of the same code differ by up to ~20 µs per call at the
median, and blocks of ~25 ms catch the machine's slow and fast moments unevenly, so a block's
on/off difference moves by tens of µs from run to run. Here every instrumented call is paired
with an uninstrumented one made right beside it, in the same process: what the two calls have
in common (the machine's moment, the process's layout, the server) cancels, and the median of
the differences comes with a confidence interval.

One local replay server (``overhead.py``'s: a recorded chat completion, the recorded 9-event
stream and a long stream of ``--long-chunks`` events); one client process per variant with the
real ``openai`` SDK, the OpenTelemetry SDK (``BatchSpanProcessor`` into a discarding exporter, a
``MeterProvider``), content capture off, instrumented once:

  none         nothing is switched: both calls of a pair run the same code (the A/A control;
               its interval should hold 0)
  lqo          lqo-instrumentation-httpx; on and off by putting its ``send`` in and taking it
               out (``overhead.switch``), its telemetry thread and instruments living on
  openai-v2    opentelemetry-instrumentation-openai-v2
  openllmetry  Traceloop's opentelemetry-instrumentation-openai
               (the peers: on and off by putting each method their instrumentor wrapped back
               to the wrapper or to the function it wraps; instrument/uninstrument per call
               would stack OpenLLMetry's wrappers)

Each round makes ``--plain`` pairs of chat completions, then a pair of the short stream and one
of the long stream, each read to its end. A pair's two calls go in either order, as many pairs
each way: the chat completions' orders are a shuffle of halves, the streams' alternate round by
round (both stream pairs of a round in the same order). Each call is timed as wall time (the
latency the caller sees), as CPU of the calling thread, and by the garbage collection run on
that thread. Per call is the chat completions' difference; per chunk is, round by round, (long
pair's difference − short pair's) / (extra events). The processes take turns every ``--turn``
rounds. Which call of a pair goes first moves the difference by up to hundreds of µs (see
``balanced``), so the figure is the mean of the two orders' medians.

lqo does its telemetry (the SDK span, parsing, metrics) on its own thread. After each pair that
work is finished (lqo's ``flush()``) outside the timed calls, so it lands in no call's latency,
and its CPU is reported beside the latency (``deferred``): in an application it runs while the
caller waits for the provider, and where there is no such wait it competes with the caller for
the GIL (``overhead.py``'s ``mean`` and ``block`` columns count it that way). The peers do all
their work inside the call, so their latency is their whole cost.

Every run checks that the switch took: the spans exported must be exactly one per instrumented
call (none for a call with the instrumentation off).

    .venv/bin/python bench/overhead.py --paired --rounds 1000
    .venv/bin/python bench/overhead.py --paired --rounds 300 --server-delay-ms 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # the replay server, the requests, the SDK setup, lqo's switch

VARIANTS = ("none", "lqo", "openai-v2", "openllmetry")
KINDS = ("plain", "short", "long")


def wrapper_switch(modules: list[str]) -> Any:
    """``on(bool)`` for an instrumentation built on wrapt: every method of these modules' classes
    that is now a ``FunctionWrapper`` is set back to the wrapper or to the function it wraps."""
    swaps: list[tuple[type, str, Any, Any]] = []
    for name in modules:
        for mod_name, mod in list(sys.modules.items()):
            if mod is None or not (mod_name == name or mod_name.startswith(name + ".")):
                continue
            for cls in list(vars(mod).values()):
                if not isinstance(cls, type) or cls.__module__ != mod_name:
                    continue
                for attr, value in list(vars(cls).items()):
                    if type(value).__name__.endswith("FunctionWrapper") and hasattr(value, "__wrapped__"):
                        swaps.append((cls, attr, value, value.__wrapped__))
    if not swaps:
        raise SystemExit(f"nothing in {modules} is wrapped: cannot switch this instrumentation")

    def on(enabled: bool) -> None:
        for cls, attr, wrapped, original in swaps:
            setattr(cls, attr, wrapped if enabled else original)

    return on


def setup(variant: str, tp: Any, mp: Any) -> tuple[Any, Any]:
    """(on(bool), settle()) for a variant instrumented once."""
    if variant == "none":
        return (lambda enabled: None), (lambda: None)
    if variant == "lqo":
        from lqo.instrumentation.httpx import HttpxGenAIInstrumentor

        inst = HttpxGenAIInstrumentor()
        inst.instrument(defer=True, tracer_provider=tp, meter_provider=mp)
        return overhead.switch(inst), inst.flush
    import openai  # noqa: F401  (its resource modules, loaded before they are wrapped)

    overhead.instrument(variant, tp, mp)
    return wrapper_switch(["openai"]), (lambda: None)


def worker(variant: str, url: str, seed: int, plain: int) -> None:
    """Runs rounds as the parent asks ("warmup N", "go N"), then prints its samples as JSON."""
    import openai

    exported = [0]
    tp, mp = overhead.discarding_providers(exported)
    on, settle = setup(variant, tp, mp)
    on(False)
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)

    def read(stream: Any) -> int:
        return sum(1 for _ in stream)

    calls = {
        "plain": lambda: client.chat.completions.create(**overhead.ARGS) and 1,
        "short": lambda: read(client.chat.completions.create(**overhead.STREAM_ARGS)),
        "long": lambda: read(client.chat.completions.create(**overhead.STREAM_ARGS, user=overhead.LONG_MARKER)),
    }
    rng = random.Random(seed)
    samples: dict[str, dict[str, list[float]]] = {k: {"wall": [], "cpu": [], "gc": [], "deferred": [], "on_first": []} for k in KINDS}
    chunks: dict[str, int] = {}
    on_calls = 0
    gc_s = overhead.gc_clock()  # the calling thread's collections
    stream_first = rng.random() < 0.5

    def pair(kind: str, order: tuple[bool, bool], keep: bool) -> None:
        nonlocal on_calls
        fn = calls[kind]
        got: dict[bool, tuple[float, float, float]] = {}
        d0 = overhead._telemetry_clock()
        for enabled in order:
            on(enabled)
            g0, t0, c0 = gc_s[0], time.perf_counter(), time.thread_time()
            n = fn()
            c1, t1 = time.thread_time(), time.perf_counter()
            got[enabled] = (t1 - t0, c1 - c0, gc_s[0] - g0)
            chunks[kind] = n
        on(False)
        settle()  # lqo's telemetry of the instrumented call, outside both calls' time
        on_calls += 1
        if keep:
            s = samples[kind]
            s["wall"].append(got[True][0] - got[False][0])
            s["cpu"].append(got[True][1] - got[False][1])
            s["gc"].append(got[True][2] - got[False][2])
            s["deferred"].append(overhead._telemetry_clock() - d0)
            s["on_first"].append(order[0])

    for line in sys.stdin:
        cmd, _, n = line.strip().partition(" ")
        if cmd == "done":
            break
        for _ in range(int(n)):
            # As many of each order (a shuffle of halves), the streams' alternating round by round
            firsts = [i % 2 == 0 for i in range(plain)]
            rng.shuffle(firsts)
            for first in firsts:
                pair("plain", (first, not first), cmd == "go")
            stream_first = not stream_first
            pair("short", (stream_first, not stream_first), cmd == "go")  # per chunk: long − short, same order
            pair("long", (stream_first, not stream_first), cmd == "go")
        print("ok", flush=True)
    tp.force_flush()
    if variant != "none" and exported[0] != on_calls:
        raise SystemExit(f"{variant}: {exported[0]} spans for {on_calls} instrumented calls: the switch did not take")
    print(json.dumps({"samples": samples, "chunks": chunks, "spans": exported[0], "on_calls": on_calls}), flush=True)


def run(url: str, variants: list[str], rounds: int, turn: int, warmup: int = 10, plain: int = 8) -> dict[str, Any]:
    """The variants' processes taking turns; returns each one's samples."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    procs = {v: subprocess.Popen([sys.executable, __file__, "--worker", v, "--url", url, "--seed", str(i),
                                  "--plain", str(plain)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
             for i, v in enumerate(variants)}

    def ask(v: str, line: str) -> str:
        p = procs[v]
        p.stdin.write(line + "\n")  # type: ignore[union-attr]
        p.stdin.flush()  # type: ignore[union-attr]
        reply = p.stdout.readline()  # type: ignore[union-attr]
        if not reply:
            raise SystemExit(f"variant {v} failed (exit {p.wait()})")
        return reply

    try:
        for v in variants:
            ask(v, f"warmup {warmup}")
        turns = max(1, math.ceil(rounds / turn))
        for t in range(turns):
            n = min(turn, rounds - t * turn)
            for v in variants[t % len(variants):] + variants[: t % len(variants)]:
                ask(v, f"go {n}")
            if (t + 1) % max(1, turns // 10) == 0:
                print(f"  round {min(rounds, (t + 1) * turn)}/{rounds}", file=sys.stderr, flush=True)
        return {v: json.loads(ask(v, "done")) for v in variants}
    finally:
        overhead.close_workers(procs.values())


def balanced(xs: list[float], on_first: list[bool], resamples: int = 2000) -> list[float]:
    """[estimate, 95% CI low, high, mean] of the added time in differences ``xs``.

    The first call of a pair follows the previous pair (another kind of call, then lqo's flush),
    the second follows its partner: which one goes first moves a difference by up to hundreds of
    µs on this machine, one way or the other, so the differences are two lumps. The estimate is
    the mean of the two orders' medians, which cancels that; the interval is a bootstrap's
    (resampling within each order)."""
    groups = [[x for x, f in zip(xs, on_first, strict=True) if f is first] for first in (True, False)]
    if not all(groups):
        raise SystemExit("too few rounds to have both orders: raise --rounds")
    rng = random.Random(0)
    boot = sorted((statistics.median(rng.choices(groups[0], k=len(groups[0])))
                   + statistics.median(rng.choices(groups[1], k=len(groups[1])))) / 2 for _ in range(resamples))
    estimate = (statistics.median(groups[0]) + statistics.median(groups[1])) / 2
    mean = (statistics.fmean(groups[0]) + statistics.fmean(groups[1])) / 2
    return [estimate, boot[int(0.025 * resamples)], boot[int(0.975 * resamples) - 1], mean]


def summarize(out: dict[str, Any]) -> dict[str, Any]:
    """Per variant, µs: per call and per chunk, wall and cpu, as [estimate, CI low, CI high, mean]."""
    res: dict[str, Any] = {}
    for v, got in out.items():
        s, chunks = got["samples"], got["chunks"]
        extra = chunks["long"] - chunks["short"]
        per_chunk = {m: [(lg - sh) / extra for lg, sh in zip(s["long"][m], s["short"][m], strict=True)]
                     for m in ("wall", "cpu", "deferred")}
        row = {}
        for m in ("wall", "cpu"):  # per chunk: a round's two stream pairs share the short one's order
            row[f"call_{m}"] = [x * 1e6 for x in balanced(s["plain"][m], s["plain"]["on_first"])]
            row[f"chunk_{m}"] = [x * 1e6 for x in balanced(per_chunk[m], s["short"]["on_first"])]
        row["gc_call"] = statistics.fmean(s["plain"]["gc"]) * 1e6
        row["deferred_call"] = statistics.median(s["plain"]["deferred"]) * 1e6
        row["deferred_chunk"] = statistics.median(per_chunk["deferred"]) * 1e6
        res[v] = row
    first = next(iter(out.values()))
    return {"variants": res, "rounds": len(first["samples"]["long"]["wall"]),
            "plain_pairs": len(first["samples"]["plain"]["wall"]), "chunks": first["chunks"],
            "spans": {v: got["spans"] for v, got in out.items()}}


def report(res: dict[str, Any]) -> str:
    def cell(x: list[float]) -> str:
        return f"{x[0]:7.2f} [{x[1]:7.2f}, {x[2]:7.2f}] {x[3]:7.2f}"

    rows = res["variants"]
    c = res["chunks"]
    lines = [
        f"{res['rounds']} rounds, {res['plain_pairs']} chat completion pairs; events per stream: short {c['short']}, long {c['long']}; content capture off",
        "",
        "added µs, instrumented call minus the plain call beside it: the two orders' medians averaged",
        "[95% CI] and their means averaged",
        "wall = the caller's latency; cpu = the calling thread's CPU; gc = garbage collection on the",
        "calling thread (mean); deferred = lqo's telemetry thread's CPU for the call, run after it (median)",
        "",
        f"{'':12} {'per call, wall':>34} {'per call, cpu':>34} {'per chunk, wall':>34} {'per chunk, cpu':>34}"
        f" {'gc call':>8} {'deferred call':>14} {'chunk':>7}",
    ]
    for v, r in rows.items():
        lines.append(f"{v:12} {cell(r['call_wall']):>34} {cell(r['call_cpu']):>34} {cell(r['chunk_wall']):>34} "
                     f"{cell(r['chunk_cpu']):>34} {r['gc_call']:8.2f} {r['deferred_call']:14.1f} {r['deferred_chunk']:7.2f}")
    if "lqo" in rows:
        lines.append("")
        for peer in ("openai-v2", "openllmetry"):
            if peer in rows:
                p, q = rows["lqo"], rows[peer]
                lines.append(
                    f"lqo / {peer} (medians): per call wall {p['call_wall'][0] / q['call_wall'][0]:.2f}, "
                    f"cpu {p['call_cpu'][0] / q['call_cpu'][0]:.2f}; per chunk wall "
                    f"{p['chunk_wall'][0] / q['chunk_wall'][0]:.2f}, cpu {p['chunk_cpu'][0] / q['chunk_cpu'][0]:.2f}")
    lines.append(f"spans exported: {res['spans']} (one per instrumented call: the switches took)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=600, help="rounds per variant (a pair of each kind each)")
    parser.add_argument("--plain", type=int, default=8, help="chat completion pairs per round")
    parser.add_argument("--warmup", type=int, default=10, help="rounds per variant before any is kept")
    parser.add_argument("--turn", type=int, default=10, help="rounds per variant before the next one's turn")
    parser.add_argument("--long-chunks", type=int, default=200, help="events in the long stream")
    parser.add_argument("--server-delay-ms", type=float, default=0.0, help="the server's think time per response")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", action="store_true", help="print the summary as JSON too")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.url, args.seed, args.plain)
    if args.rounds < 2 or args.plain < 2 or args.turn < 1 or args.warmup < 0:
        parser.error("--rounds and --plain need at least 2 (a pair each way), --turn at least 1")
    variants = args.variants.split(",")
    if unknown := [v for v in variants if v not in VARIANTS]:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    with overhead.replay_server(args.long_chunks, args.server_delay_ms) as url:
        print(f"server {url} (delay {args.server_delay_ms} ms); variants {', '.join(variants)}, "
              f"{args.rounds} rounds in turns of {args.turn}", file=sys.stderr)
        res = summarize(run(url, variants, args.rounds, args.turn, args.warmup, args.plain))
    print(report(res))
    if args.json:
        print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
