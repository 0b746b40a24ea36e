"""The collector's own metrics (names fixed by DESIGN.md), one registry per collector.

Counters are incremented once per batch, never per span, so they cost nothing on the
hot path. Label values are component ids and fixed reason words: never user content.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily

from lqo.collector.malloc import glibc_usage

# `_created` series double every counter for no use here.
disable_created_metrics()


class SelfTelemetry:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self._extra: dict[str, Counter] = {}
        r = self.registry
        # process_cpu_seconds_total, process_resident_memory_bytes, process_open_fds, … (from /proc)
        ProcessCollector(registry=r)
        r.register(MemoryCollector())
        r.register(CacheCollector())
        self.receiver_accepted = Counter(
            "lqo_receiver_accepted_spans", "Spans accepted by a receiver and queued.",
            ["receiver", "transport"], registry=r,
        )
        self.receiver_refused = Counter(
            "lqo_receiver_refused_spans",
            "Spans a receiver refused; the client was told (retryable or not, by reason).",
            ["receiver", "transport", "reason"], registry=r,
        )
        self.receiver_refused_requests = Counter(
            "lqo_receiver_refused_requests",
            "Requests a receiver refused before reading them (reason: unauthenticated).",
            ["receiver", "transport", "reason"], registry=r,
        )
        self.receiver_log_records = Counter(
            "lqo_receiver_log_records",
            "OTLP log records a receiver took: GenAI events of a span (kept for it), evaluation results "
            "(stored), evaluation results that name no evaluation or call (invalid), or other (dropped).",
            ["receiver", "transport", "kind"], registry=r,
        )
        self.genai_events = Counter(
            "lqo_genai_events",
            "GenAI events from log records: attached to their span, or expired / dropped waiting for it.",
            ["outcome"], registry=r,
        )
        self.held_spans = Counter(
            "lqo_pipeline_held_spans",
            "GenAI spans held a moment for the events their producer sends as log records: their events "
            "came (attached), the time was up (timed_out), or too many were held already (full: not held).",
            ["outcome"], registry=r,
        )
        self.genai_evaluations = Counter(
            "lqo_genai_evaluations",
            "GenAI evaluation results from log records: stored, or dropped (the store refused them for good, "
            "or kept failing until the collector stopped).",
            ["outcome"], registry=r,
        )
        self.exporter_sent = Counter(
            "lqo_exporter_sent_spans", "Spans an exporter wrote successfully.",
            ["exporter"], registry=r,
        )
        self.exporter_send_failed = Counter(
            "lqo_exporter_send_failed_spans",
            "Spans an exporter gave up on (permanent error, retries exhausted, or shutdown).",
            ["exporter", "reason"], registry=r,
        )
        self.queue_size = Gauge(
            "lqo_queue_size", "Spans waiting in a queue.", ["queue"], registry=r,
        )
        self.queue_capacity = Gauge(
            "lqo_queue_capacity", "Capacity of a queue in spans.", ["queue"], registry=r,
        )
        self.processor_cpu = Counter(
            "lqo_processor_cpu_seconds", "CPU time the pipeline thread spent in a processor.",
            ["processor"], registry=r,
        )
        self.processor_spans = Counter(
            "lqo_processor_spans", "Spans a processor was given.", ["processor"], registry=r,
        )
        self.processor_batches = Counter(
            "lqo_processor_batches", "Batches a processor was given.", ["processor"], registry=r,
        )
        self.processor_failed = Counter(
            "lqo_processor_failed_batches",
            "Batches a processor raised on; they were passed on unprocessed (see the log).",
            ["processor"], registry=r,
        )
        self.processor_dropped = Counter(
            "lqo_processor_dropped_spans", "Spans a processor dropped (by design or failure).",
            ["processor", "reason"], registry=r,
        )

    def counter(self, name: str, documentation: str, labels: list[str]) -> Counter:
        """A component's own counter, created once per collector (components of one type share it
        and tell themselves apart by label)."""
        if name not in self._extra:
            self._extra[name] = Counter(name, documentation, labels, registry=self.registry)
        return self._extra[name]


class MemoryCollector:
    """``lqo_process_memory_bytes{part}``: where the collector's memory is, read at each scrape.

    - ``resident_anon``, ``resident_file``: the resident memory (``process_resident_memory_bytes``)
      split into what the process allocated and what files map (the code of the embedded
      ClickHouse engine, about 200 MB of it);
    - ``malloc_in_use``, ``malloc_free``: what glibc's malloc hands out (Python's large objects
      and the native libraries' allocations: spaCy's model, gRPC, …) and what it holds free in its
      arenas, not given back to the system (``mallinfo2``; absent without glibc 2.33);
    - ``arrow``: Arrow buffers (batches of spans on their way to the store).

    The embedded engine's own count is ClickHouse's ``MemoryTracking`` (``system.metrics``). Each
    part is a gauge: one that keeps rising over days, where the others stay, names the leak."""

    NAME = "lqo_process_memory_bytes"
    HELP = "The collector's memory by part (resident_anon, resident_file, malloc_in_use, malloc_free, arrow)."

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["part"])]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["part"])
        try:
            status = Path("/proc/self/status").read_text()
        except OSError:  # not Linux
            status = ""
        for line in status.splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                family.add_metric([f"resident_{key[3:].lower()}"], float(value.split()[0]) * 1024)
        usage = glibc_usage()
        if usage is not None:
            family.add_metric(["malloc_in_use"], float(usage[0]))
            family.add_metric(["malloc_free"], float(usage[1]))
        family.add_metric(["arrow"], float(pa.total_allocated_bytes()))
        yield family


# The bounded memories the processors keep (results per distinct text, memos): the owner, weakly
# held, → (name, how to read its (entries, capacity)). Filled by watch_cache.
_CACHES: weakref.WeakKeyDictionary[Any, tuple[str, Callable[[Any], tuple[int, int]]]] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def watch_cache(owner: Any, name: str, usage: Callable[[Any], tuple[int, int]]) -> None:
    """Reports a bounded cache in ``lqo_cache_entries`` / ``lqo_cache_capacity{cache=name}`` for as
    long as ``owner`` lives (held weakly). ``usage(owner)`` gives (entries, capacity); it must not
    hold ``owner`` itself. Instances with the same name (the processors' copies for
    ``/v1/evaluate``, two pipelines) are summed."""
    with _CACHES_LOCK:
        _CACHES[owner] = (name, usage)


class CacheCollector:
    """``lqo_cache_entries{cache}`` and ``lqo_cache_capacity{cache}``: how full the processors'
    bounded caches are. Under steady load the collector's memory rises while they fill (Python's
    small objects, outside ``malloc_in_use``: docs/configuration.md, "Memory") and stops rising
    when they are full; these say which are still filling."""

    ENTRIES = "lqo_cache_entries"
    CAPACITY = "lqo_cache_capacity"
    ENTRIES_HELP = "Entries in the processors' bounded caches, by cache (summed over instances)."
    CAPACITY_HELP = "The most entries each cache keeps, by cache (summed over instances)."

    def describe(self) -> list[GaugeMetricFamily]:
        return list(self._families())

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (GaugeMetricFamily(self.ENTRIES, self.ENTRIES_HELP, labels=["cache"]),
                GaugeMetricFamily(self.CAPACITY, self.CAPACITY_HELP, labels=["cache"]))

    def collect(self) -> Iterator[GaugeMetricFamily]:
        totals: dict[str, list[int]] = {}
        with _CACHES_LOCK:
            watched = list(_CACHES.items())
        for owner, (name, usage) in watched:
            try:
                entries, capacity = usage(owner)
            except Exception:  # (a cache being torn down): left out of this scrape
                continue
            total = totals.setdefault(name, [0, 0])
            total[0] += entries
            total[1] += capacity
        entries_family, capacity_family = self._families()
        for name in sorted(totals):
            entries_family.add_metric([name], float(totals[name][0]))
            capacity_family.add_metric([name], float(totals[name][1]))
        yield entries_family
        yield capacity_family


class LogEvery:
    """For a log line about something that may fail on every request: ``tally()`` counts one
    occurrence and returns how many to report now — all since the last report, the first at
    once, then at most once per ``interval`` seconds — or 0 (say nothing yet)."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._unreported = 0
        self._reported_at = -interval

    def tally(self) -> int:
        now = time.monotonic()
        with self._lock:
            self._unreported += 1
            if now - self._reported_at < self.interval:
                return 0
            count, self._unreported, self._reported_at = self._unreported, 0, now
            return count
