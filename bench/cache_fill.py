"""How the processors' bounded caches fill under the soak's traffic, and the memory they take.

The default pipeline's processors (redaction, genai_normalize, pii, cost, hallucination,
prompt_injection) run in this one process, with no receiver, store or exporter, over the
traffic ``bench/soak.py`` sends (``--rate`` calls per second, each with its HTTP parent span; the
texts of ``bench/safety.py``, most of them distinct), as fast as they go. Every ``--every``
seconds of traffic it prints the fill of each cache as the collector reports it
(``lqo_cache_entries`` / ``lqo_cache_capacity``), the resident anonymous memory, and Python's
small-object allocator (pymalloc: its arenas, 1 MiB each, mapped outside glibc's malloc, and the
bytes in the blocks it handed out), after a full garbage collection.

    .venv/bin/python bench/cache_fill.py --rate 150 --seconds 2400 --every 120
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from soak import Traffic

from lqo.collector.components import ComponentContext, component_type, factories
from lqo.collector.config import default_config
from lqo.collector.model.otlp import decode_protobuf_native
from lqo.collector.telemetry import SelfTelemetry


def pymalloc() -> tuple[float, float]:
    """(MB in pymalloc's arenas, MB in the blocks it handed out), from ``sys._debugmallocstats``
    (the only reading CPython 3.11 has; it writes to the C stderr, caught here for the moment)."""
    with tempfile.TemporaryFile() as f:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(f.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        f.seek(0)
        text = f.read().decode()

    def number(label: str) -> int:
        found = re.search(re.escape(label) + r"\s*=\s*([\d,]+)", text)
        return int(found.group(1).replace(",", "")) if found else 0

    arena = 1 << 20 if sys.maxsize > 2**32 else 1 << 18
    return number("# arenas allocated current") * arena / 2**20, number("# bytes in allocated blocks") / 2**20


def scrape(telemetry: SelfTelemetry) -> tuple[float, dict[str, tuple[float, float]]]:
    """From one scrape of the collector's registry: resident anonymous memory (MB, the
    ``resident_anon`` part of ``lqo_process_memory_bytes``) and each cache's (entries, capacity)."""
    text = generate_latest(telemetry.registry).decode()
    anon = 0.0
    got: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if family.name == "lqo_process_memory_bytes" and s.labels["part"] == "resident_anon":
                anon = s.value / 2**20
            elif family.name in ("lqo_cache_entries", "lqo_cache_capacity"):
                got.setdefault(s.labels["cache"], {})[family.name] = s.value
    return anon, {k: (v.get("lqo_cache_entries", 0.0), v.get("lqo_cache_capacity", 0.0)) for k, v in sorted(got.items())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=150, help="GenAI calls per second of traffic")
    ap.add_argument("--seconds", type=int, default=2400, help="seconds of traffic to run through")
    ap.add_argument("--every", type=int, default=120, help="report every this many seconds of traffic")
    args = ap.parse_args()
    config = default_config()
    telemetry = SelfTelemetry()
    processors = []
    for cid in config["service"]["pipelines"]["traces"]["processors"]:
        factory = factories("processors")[component_type(cid)]
        proc = factory.create(factory.config_model.model_validate(config["processors"][cid] or {}),
                              ComponentContext(cid, telemetry))
        proc.start()
        processors.append(proc)
    print(f"processors: {', '.join(config['service']['pipelines']['traces']['processors'])}; "
          f"{args.rate} calls/s of traffic", flush=True)
    traffic = Traffic(args.rate)
    t0, spans = time.monotonic(), 0
    for second in range(1, args.seconds + 1):
        body, _, _ = traffic.tick()
        batch = decode_protobuf_native(body).batch
        for proc in processors:
            batch = proc.process(batch)
        spans += len(batch)
        if second % args.every == 0:
            gc.collect()
            arenas, blocks = pymalloc()
            anon, caches = scrape(telemetry)
            fill = "  ".join(f"{name} {entries:,.0f}/{capacity:,.0f}" for name, (entries, capacity) in caches.items())
            print(f"{second / 60:5.0f} min of traffic ({spans:>9,} spans, {time.monotonic() - t0:5.0f} s)  "
                  f"RssAnon {anon:6.1f} MB  pymalloc {arenas:6.1f} MB in arenas, {blocks:6.1f} MB in blocks  "
                  f"caches: {fill}", flush=True)
    for proc in processors:
        proc.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
