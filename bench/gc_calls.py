"""Garbage collections that instrumentation makes the application's thread run.

CPython collects on whichever thread's allocation crosses the threshold. An uninstrumented
``openai`` call frees what it allocates, so the calling thread of ``bench/overhead.py`` collects
almost never; objects an instrumentation keeps past the call (spans waiting in the
``BatchSpanProcessor``, anything queued for a background thread) make it collect, mid-call.
This counts, per variant, the collections on the calling thread by generation and their mean
duration, over the same calls as ``bench/overhead.py`` (plain chat completions against the
local replay server, the same SDK setup, lqo's queued work finished every 20 calls):

    .venv/bin/python bench/gc_calls.py --calls 1000 --variants none,lqo,openai-v2

Each variant runs in its own process, one after another. Durations are wall time (a
collection holds the GIL: the caller waits for it whole). Generation-2 collections are rare
(about one per 1,000 calls here) and long (~40 ms: the whole heap), so their per-call share is
noisy; the generation-0 and -1 counts are what an instrumentation's retained objects change.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # the server, the SDK setup and the variants


def measure(variant: str, url: str, calls: int) -> dict[str, Any]:
    import openai

    tp, mp = overhead.discarding_providers()
    settle = overhead.instrument(variant, tp, mp) or (lambda: None)
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    for _ in range(100):  # warm-up: imports, caches, the first spans
        client.chat.completions.create(**overhead.ARGS)
    settle()
    calling = threading.get_ident()
    count: collections.Counter[int] = collections.Counter()
    seconds: collections.Counter[int] = collections.Counter()
    started = [0.0]

    def clock(phase: str, info: dict[str, Any]) -> None:
        if threading.get_ident() != calling:
            return
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            count[info["generation"]] += 1
            seconds[info["generation"]] += time.perf_counter() - started[0]

    gc.callbacks.append(clock)
    for i in range(calls):
        client.chat.completions.create(**overhead.ARGS)
        if i % 20 == 19:
            settle()
    gc.callbacks.remove(clock)
    return {"count": {g: count[g] for g in range(3)}, "seconds": {g: seconds[g] for g in range(3)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--variants", default="none,lqo,openai-v2")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.url, args.calls)))
        return
    with overhead.replay_server() as url:
        print(f"calls per variant: {args.calls}; collections on the calling thread per 1,000 calls: "
              "count × mean ms; total ms", flush=True)
        for variant in args.variants.split(","):
            out = subprocess.run([sys.executable, __file__, "--measure", variant, "--url", url,
                                  "--calls", str(args.calls)], capture_output=True, text=True, check=False)
            if out.returncode:
                raise SystemExit(f"variant {variant} failed:\n{out.stderr[-2000:]}")
            res = json.loads(out.stdout.splitlines()[-1])
            per_k = 1000 / args.calls
            cells, total = [], 0.0
            for g in ("0", "1", "2"):
                n, s = res["count"][g], res["seconds"][g]
                total += s * per_k * 1000
                cells.append(f"gen{g} {n * per_k:5.1f} × {s / n * 1000 if n else 0:6.2f}")
            print(f"  {variant:12s} " + "   ".join(cells) + f"   total {total:7.1f} ms", flush=True)


if __name__ == "__main__":
    main()
