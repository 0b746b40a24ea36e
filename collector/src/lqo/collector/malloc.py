"""What glibc's malloc holds in the collector's process: for its memory metrics
(``lqo_process_memory_bytes``) and the long-run benchmark (bench/soak.py).

glibc gives threads that allocate at the same time arenas of their own, up to eight per core,
and memory freed in an arena stays with it. The collector runs many threads (the embedded
ClickHouse engine alone has over a hundred, though it allocates mostly through its own jemalloc),
so one might cap the arenas (``MALLOC_ARENA_MAX=2``). Measured on the 2-core benchmark machine,
that saved about 20 MB of arena heaps, cost about 5% of the collector's throughput with
redaction, genai_normalize and cost (bench/BENCHMARKS.md, "A long run"), and did not change how
memory grew over a run. So the collector leaves glibc's default alone: the variable is the
user's to set.
"""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


_mallinfo2: Any = None


def glibc_usage() -> tuple[int, int] | None:
    """Bytes glibc's malloc hands out (in its arenas and in chunks mapped alone) and bytes it
    holds free in its arenas (``mallinfo2``); None without glibc 2.33 or later. It walks every
    arena's free lists: for a scrape, not for a hot path."""
    global _mallinfo2
    if _mallinfo2 is None:
        try:
            _mallinfo2 = ctypes.CDLL(None).mallinfo2
            _mallinfo2.restype = _Mallinfo2
            _mallinfo2.argtypes = ()
        except (OSError, AttributeError):
            _mallinfo2 = False
    if not _mallinfo2:
        return None
    info = _mallinfo2()
    return info.uordblks + info.hblkhd, info.fordblks


_HEAP = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit


def arena_heaps(pid: int | str = "self") -> int:
    """glibc's mmapped arena heaps in process ``pid``, from ``/proc/PID/maps`` (for benchmarks
    and tests): every arena but the main one (which grows with ``brk``) has heaps of 64 MiB of
    address space, aligned to 64 MiB, mapped as a read-write start and a reserved rest. An arena
    that outgrows one heap has several."""
    rows = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        rows.append((lo, hi, parts[1], len(parts) > 5))  # (start, end, permissions, has a path)
    heaps = 0
    for i, (lo, hi, perms, named) in enumerate(rows):
        if lo % _HEAP or named or perms != "rw-p":
            continue
        end = hi
        for lo2, hi2, perms2, named2 in rows[i + 1:]:
            if lo2 != end or named2 or perms2 != "---p":
                break
            end = hi2
        heaps += end - lo == _HEAP
    return heaps
