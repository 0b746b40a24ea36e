"""What keeping an exporter's sending queue on disk costs, per span, against keeping it in memory.

Each batch goes the whole way through a queue as the exporter's sender uses it: ``put`` (the
persistent queue writes an Arrow IPC file), ``take`` (reads it back, memory-mapped) and
``commit`` (deletes it). Batches are the workload's (bench/workload.py: half GenAI chat spans
with ~1 KB of messages, half HTTP server spans) decoded as the receivers decode them. Variants
alternate round by round on the same batches; the figures are medians over rounds of the
process's CPU time and wall time per span, and the bytes on disk per span against the decoded
bytes the queue's ``max_bytes`` counts.

    .venv/bin/python bench/persistent_queue.py --batch 8192 --batches 24 --rounds 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from workload import make_request  # bench/, the script's directory

from lqo.collector.model.otlp import decode_protobuf
from lqo.collector.persistentqueue import PersistentBatchQueue
from lqo.collector.queue import BoundedBatchQueue
from lqo.collector.telemetry import SelfTelemetry

VARIANTS = {
    "memory": None,
    "disk-lz4": {"compression": "lz4"},
    "disk-zstd": {"compression": "zstd"},
    "disk-none": {"compression": "none"},
    "disk-lz4-fsync": {"compression": "lz4", "fsync": True},
}


def one_round(variant: str, batches: list, workdir: Path) -> dict:
    settings = VARIANTS[variant]
    telemetry = SelfTelemetry()
    if settings is None:
        queue: BoundedBatchQueue = BoundedBatchQueue("exporter/bench", 1 << 40, 1 << 50, telemetry)
    else:
        queue = PersistentBatchQueue("exporter/bench", 1 << 40, 1 << 50, telemetry,
                                     workdir / variant, "bench", **settings)
    queue.open()
    spans = sum(len(b) for b in batches)
    disk = 0
    cpu = wall = 0.0
    for batch in batches:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        queue.put(batch)
        cpu, wall = cpu + time.process_time() - cpu0, wall + time.perf_counter() - wall0
        if settings is not None:  # not timed
            disk += sum(f.stat().st_size for f in (workdir / variant).glob("*.arrow"))
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for got in queue.take(max_spans=1 << 40, max_bytes=1 << 50, wait=0):
            # the exporter reads every column when it inserts: touch every buffer as it would
            sum(buf.size for column in got.table.columns for chunk in column.chunks
                for buf in chunk.buffers() if buf is not None)
        queue.commit()
        cpu, wall = cpu + time.process_time() - cpu0, wall + time.perf_counter() - wall0
    queue.close()
    queue.abandon()
    return {"cpu_us": cpu / spans * 1e6, "wall_us": wall / spans * 1e6, "disk_bytes": disk / spans}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8192, help="spans per batch (the pipeline's default)")
    ap.add_argument("--batches", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--dir", help="where the queue files go (default: a temporary directory)")
    args = ap.parse_args()
    variants = args.variants.split(",")
    batches = [decode_protobuf(make_request(args.batch, seed=i).SerializeToString()).batch
               for i in range(args.batches)]
    decoded = sum(b.approx_bytes for b in batches) / sum(len(b) for b in batches)
    results: dict[str, list[dict]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for _ in range(args.rounds):
            for variant in variants:
                results[variant].append(one_round(variant, batches, Path(tmp)))
    base = statistics.median(r["cpu_us"] for r in results["memory"]) if "memory" in results else None
    rows = []
    for variant in variants:
        cpu = statistics.median(r["cpu_us"] for r in results[variant])
        wall = statistics.median(r["wall_us"] for r in results[variant])
        disk = statistics.median(r["disk_bytes"] for r in results[variant])
        rows.append({"variant": variant, "cpu_us_per_span": round(cpu, 3), "wall_us_per_span": round(wall, 3),
                     "added_cpu_us_per_span": round(cpu - base, 3) if base is not None else None,
                     "disk_bytes_per_span": round(disk, 1),
                     "disk_vs_decoded": round(disk / decoded, 3) if disk else None})
    print(json.dumps({"batch": args.batch, "batches": args.batches, "rounds": args.rounds,
                      "decoded_bytes_per_span": round(decoded, 1), "cpus": os.cpu_count(),
                      "results": rows}, indent=1))


if __name__ == "__main__":
    main()
