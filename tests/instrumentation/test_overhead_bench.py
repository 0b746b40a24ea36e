"""bench/overhead_paired.py (``bench/overhead.py --paired``): its estimator, and a short run of
the real thing (each variant's switch must take: one span per instrumented call, none for the
plain call beside it)."""

from __future__ import annotations

import json
import math
import random
import statistics
import subprocess
import sys
from pathlib import Path

import overhead_paired  # bench/ is on sys.path (conftest)

BENCH = Path(__file__).resolve().parents[2] / "bench" / "overhead.py"  # --paired: overhead_paired.py


def test_the_estimate_cancels_which_call_of_a_pair_went_first() -> None:
    """Differences in two lumps (the call that goes first costs 500 more): the plain median lands
    in one lump; the mean of the orders' medians finds the added 10, inside its interval."""
    rng = random.Random(1)
    on_first = [rng.random() < 0.3 for _ in range(600)]  # unbalanced on purpose
    xs = [10 + (500 if f else -500) + rng.gauss(0, 20) for f in on_first]
    estimate, lo, hi, mean = overhead_paired.balanced(xs, on_first)
    assert abs(estimate - 10) < 6 and lo < 10 < hi and hi - lo < 20
    assert abs(mean - 10) < 6
    assert abs(statistics.median(xs) - 10) > 400  # what a plain median would have said


def test_one_order_only_is_refused() -> None:
    try:
        overhead_paired.balanced([1.0, 2.0], [True, True])
    except SystemExit as exc:
        assert "both orders" in str(exc)
    else:
        raise AssertionError("accepted differences from one order only")


def test_a_short_run_switches_every_variant_on_and_off() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--paired", "--rounds", "6", "--turn", "3", "--warmup", "1", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout[out.stdout.index("\n{") + 1:])
    assert res["rounds"] == 6
    # 7 rounds of 8 + 2 pairs; the worker fails the run if the spans are not one per instrumented call
    assert res["spans"] == {"none": 0, "lqo": 70, "openai-v2": 70, "openllmetry": 70}
    assert res["chunks"]["long"] > res["chunks"]["short"] > 1
    rows = res["variants"]
    assert rows["lqo"]["deferred_call"] > 0 and rows["lqo"]["deferred_chunk"] > 0  # its thread did the work
    assert rows["none"]["deferred_call"] == rows["openai-v2"]["deferred_call"] == 0
    for row in rows.values():
        for key in ("call_wall", "call_cpu", "chunk_wall", "chunk_cpu"):
            assert len(row[key]) == 4 and all(math.isfinite(x) for x in row[key])
        assert math.isfinite(row["gc_call"])
    assert "lqo / openai-v2" in out.stdout and "the switches took" in out.stdout
