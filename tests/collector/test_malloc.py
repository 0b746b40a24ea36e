"""The collector's memory by part (``lqo_process_memory_bytes``) and the glibc readings behind it
(lqo/collector/malloc.py), which bench/soak.py reports too."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from lqo.collector.malloc import glibc_usage


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


pytestmark = pytest.mark.skipif(not _glibc(), reason="glibc's malloc, read from Linux's /proc")

# Eight threads that allocate at once (20 kB buffers go to malloc, not Python's small-object
# allocator): each gets an arena of its own, up to the limit.
THREADS = textwrap.dedent("""
    import threading
    from lqo.collector.malloc import arena_heaps
    start = threading.Barrier(8)
    def work():
        start.wait()
        kept = [bytearray(20000) for _ in range(200)]
        start.wait()
    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(arena_heaps())
""")


@pytest.mark.parametrize(("limit", "heaps"), [(None, (7, 8)), ("3", (2, 2)), ("1", (0, 0))])
def test_arena_heaps_counts_glibcs_arenas(limit: str | None, heaps: tuple[int, int]) -> None:
    """glibc's default (eight arenas per core, the main one included, which has no heap) and a
    limit set by ``MALLOC_ARENA_MAX``."""
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    if limit is not None:
        env["MALLOC_ARENA_MAX"] = limit
    out = subprocess.run([sys.executable, "-c", THREADS], env=env, capture_output=True, text=True, check=True,
                         timeout=60).stdout
    assert heaps[0] <= int(out) <= heaps[1], out


def _parts(text: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.labels["part"]: s.value for family in text_string_to_metric_families(text)
            if family.name == "lqo_process_memory_bytes" for s in family.samples}


def test_memory_by_part_follows_what_is_allocated() -> None:
    """``lqo_process_memory_bytes{part}`` moves with an Arrow buffer and a malloc'd one."""
    import pyarrow as pa
    from prometheus_client import CollectorRegistry, generate_latest

    from lqo.collector.telemetry import MemoryCollector

    assert glibc_usage() is not None
    registry = CollectorRegistry()
    registry.register(MemoryCollector())
    before = _parts(generate_latest(registry).decode())
    arrow_buffer = pa.allocate_buffer(64 << 20)
    native = bytearray(64 << 20)  # Python's large objects come from malloc
    after = _parts(generate_latest(registry).decode())
    assert after["arrow"] - before["arrow"] >= 64 << 20
    assert after["malloc_in_use"] - before["malloc_in_use"] >= 64 << 20
    assert after["resident_anon"] - before["resident_anon"] >= 60 << 20  # the bytearray is written (zeroed)
    assert {"resident_file", "malloc_free"} <= set(after)
    del arrow_buffer, native
    gone = _parts(generate_latest(registry).decode())
    assert gone["arrow"] <= before["arrow"] + (1 << 20)
    assert gone["malloc_in_use"] <= before["malloc_in_use"] + (8 << 20)


def test_the_collector_tells_its_memory_by_part(collector: Any) -> None:
    """A real collector's ``/metrics``: the resident parts add up to its resident memory, the
    embedded engine's code is file-backed, and malloc holds the Python side's large objects."""
    metrics = collector.metrics()
    parts = _parts(metrics)
    [rss] = [float(line.split()[1]) for line in metrics.splitlines()
             if line.startswith("process_resident_memory_bytes ")]
    assert abs(parts["resident_anon"] + parts["resident_file"] - rss) < 0.1 * rss, (parts, rss)
    assert parts["resident_file"] > 100 << 20  # the embedded engine's code, mostly
    assert parts["malloc_in_use"] > 10 << 20 and "arrow" in parts and "malloc_free" in parts
