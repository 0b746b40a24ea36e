"""A long run of the default collector under steady, realistic load: does its memory stay flat?

A collector runs for weeks; anything it keeps per span, per call, per user or per distinct text
and never lets go shows as memory that grows with the spans seen, until the pod is killed. This
starts `lqo collector` with the default pipeline (redaction, genai_normalize, pii, cost,
hallucination, prompt_injection; the embedded store; the prometheus exporter) and sends, every
second, what an LLM service sends:

- ``--rate`` GenAI calls per second, each a trace of an HTTP server span and its GenAI client
  span, with the support-bot texts of ``bench/safety.py`` (a dozen system prompts repeating, a
  third of the questions carrying PII from the Presidio research set, numbers that make most
  texts distinct), fresh trace, span and response ids, one of 50,000 users and a conversation of
  a few calls each, six models, four services, real timestamps;
- feedback on a tenth of the calls, as ``gen_ai.evaluation.result`` log records naming the
  call's response id, sent a second later;

while a Prometheus-like scraper reads ``/metrics`` every 15 s and a dashboard-like client asks
the query API for the last five minutes by model every 30 s. Every ``--sample`` seconds it reads
the collector's resident memory (RSS, and the proportional set size of the whole process tree)
and its own counters, its memory by part (``lqo_process_memory_bytes``: resident anonymous and
file-backed, glibc malloc in use and held free, Arrow buffers), what the embedded ClickHouse
engine says it holds (``MemoryTracking``) and what its allocator (jemalloc, inside chdb) has
allocated and keeps resident, and how many glibc malloc heaps it has mapped. The report gives
the samples, the median of each third of the run, and, after the warm-up (the first third), the
growth of memory per hour by least squares and per million spans.

    .venv/bin/python bench/soak.py --minutes 30 --rate 150
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import run_collector
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1 import trace_pb2
from safety import make_spans
from workload import _kv, http_span

from lqo.collector.config import default_config
from lqo.collector.malloc import arena_heaps

MODELS = (("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("openai", "gpt-4.1"),
          ("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-haiku-4-5"), ("ollama", "llama3.1:8b"))
SERVICES = ("support-bot", "search-assistant", "billing-agent", "docs-qa")
USERS = 50_000


def _post(url: str, body: bytes, content_type: str, timeout: float = 30.0) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


class Traffic:
    """One second's calls per ``tick``; feedback on some of them in the next second's logs."""

    def __init__(self, rate: int, seed: int = 11) -> None:
        self.rate = rate
        self.rng = random.Random(seed)
        self.second = 0
        self.pending_feedback: list[tuple[str, str]] = []  # (service, response id)
        self.conversations: list[tuple[str, str, int]] = []  # (conversation, user, calls left)

    def _identity(self) -> tuple[str, str]:
        rng = self.rng
        if self.conversations and rng.random() < 0.7:
            i = rng.randrange(len(self.conversations))
            conversation, user, left = self.conversations[i]
            if left <= 1:
                self.conversations[i] = self.conversations[-1]
                self.conversations.pop()
            else:
                self.conversations[i] = (conversation, user, left - 1)
            return user, conversation
        user, conversation = f"user-{rng.randrange(USERS)}", f"conv-{os.urandom(8).hex()}"
        if len(self.conversations) < 2000:
            self.conversations.append((conversation, user, rng.randint(1, 6)))
        return user, conversation

    def tick(self) -> tuple[bytes, bytes | None, int]:
        """The traces request (and the logs request, if any) of one second; spans in it."""
        rng, now = self.rng, time.time_ns()
        feedback, self.pending_feedback = self.pending_feedback, []
        by_service: dict[str, list[trace_pb2.Span]] = {}
        for attrs in make_spans(self.rate, seed=self.second):
            service = rng.choice(SERVICES)
            provider, model = rng.choice(MODELS)
            user, conversation = self._identity()
            trace_id = os.urandom(16)
            parent = http_span(rng, trace_id, now)
            response_id = f"resp-{os.urandom(12).hex()}"
            start = now - rng.randrange(300_000_000, 3_000_000_000)
            attrs = {**attrs, "gen_ai.provider.name": provider, "gen_ai.request.model": model,
                     "gen_ai.response.model": model, "gen_ai.response.id": response_id,
                     "gen_ai.response.finish_reasons": "stop",
                     "gen_ai.usage.input_tokens": rng.randrange(200, 3000),
                     "gen_ai.usage.output_tokens": rng.randrange(20, 600),
                     "user.id": user, "gen_ai.conversation.id": conversation}
            span = trace_pb2.Span(
                trace_id=trace_id, span_id=os.urandom(8), parent_span_id=parent.span_id,
                name=f"chat {model}", kind=trace_pb2.Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=start, end_time_unix_nano=start + rng.randrange(200_000_000, 2_500_000_000),
                attributes=[_kv(k, v) for k, v in attrs.items()])
            by_service.setdefault(service, []).extend((parent, span))
            if rng.random() < 0.1:
                self.pending_feedback.append((service, response_id))
        traces = ExportTraceServiceRequest()
        for service, spans in by_service.items():
            rs = traces.resource_spans.add()
            rs.resource.attributes.extend([_kv("service.name", service), _kv("deployment.environment.name", "prod")])
            ss = rs.scope_spans.add()
            ss.scope.name = "lqo.bench.soak"
            ss.spans.extend(spans)
        logs = None
        if feedback:
            request = ExportLogsServiceRequest()
            for service, response_id in feedback:
                rl = request.resource_logs.add()
                rl.resource.attributes.append(_kv("service.name", service))
                up = rng.random() < 0.8
                rl.scope_logs.add().log_records.append(LogRecord(
                    event_name="gen_ai.evaluation.result", time_unix_nano=now, attributes=[
                        _kv("gen_ai.evaluation.name", "user_feedback"),
                        _kv("gen_ai.evaluation.score.label", "thumbs_up" if up else "thumbs_down"),
                        _kv("gen_ai.evaluation.score.value", 1.0 if up else 0.0),
                        _kv("gen_ai.response.id", response_id)]))
            logs = request.SerializeToString()
        self.second += 1
        return traces.SerializeToString(), logs, 2 * self.rate


# The collector's own account of its memory (lqo_process_memory_bytes{part}), MB per sample.
PARTS = ("resident_anon", "resident_file", "malloc_in_use", "malloc_free", "arrow")


def _memory(pid: int) -> dict[str, float]:
    """MB: the collector's RSS, and the PSS of it and its children (worker processes)."""
    def kb(path: Path, field: str) -> float:
        try:
            for line in path.read_text().splitlines():
                if line.startswith(field + ":"):
                    return float(line.split()[1])
        except OSError:
            pass
        return 0.0

    pids = [pid]
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    except OSError:
        pass
    try:
        heaps = arena_heaps(pid)
    except OSError:
        heaps = -1
    return {"rss": kb(Path(f"/proc/{pid}/status"), "VmRSS") / 1024,
            "pss_tree": sum(kb(Path(f"/proc/{p}/smaps_rollup"), "Pss") for p in pids) / 1024,
            "processes": len(pids), "arena_heaps": heaps}


# Anonymous memory by the kind of mapping it lies in (``/proc/PID/smaps``), MB per sample.
ANON_KINDS = ("brk", "glibc_arenas", "pymalloc", "stacks", "other")
_MIB = 1 << 20


def anon_mappings(pid: int) -> dict[int, tuple[str, int, int]]:
    """The process's anonymous mappings, by start address: (kind, size, resident anonymous bytes).

    Kinds, from each mapping's shape: ``brk`` glibc's main heap; ``glibc_arenas`` the other
    arenas' heaps (read-write at a 64 MiB boundary, reserved to the next one); ``pymalloc``
    Python's object arenas (1 MiB each) that stand alone; ``stacks`` threads' stacks (8 MiB behind
    a guard page); ``other`` everything else: the embedded engine's jemalloc extents, glibc's large
    chunks mapped alone, pyarrow's mimalloc, the engine's own maps, and Python's arenas where the
    kernel merged them with a neighbour into one mapping (it merges adjacent anonymous mappings of
    the same permissions). With ``PYTHONMALLOC=malloc`` Python's objects are in glibc's malloc
    instead, and counted in ``lqo_process_memory_bytes{part="malloc_in_use"}``."""
    rows: list[list[Any]] = []  # [start, end, perms, path, anonymous bytes]
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return {}
    for line in text.splitlines():
        head = line.split(None, 5)
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            rows.append([lo, hi, head[1], head[5] if len(head) > 5 else "", 0])
        elif line.startswith("Anonymous:") and rows:
            rows[-1][4] = int(line.split()[1]) * 1024
    out: dict[int, tuple[str, int, int]] = {}
    for i, (lo, hi, perms, path, anon) in enumerate(rows):
        if path not in ("", "[heap]") or perms != "rw-p":
            continue
        size = hi - lo
        kind = "other"
        if path == "[heap]":
            kind = "brk"
        elif lo % (64 * _MIB) == 0 and size < 64 * _MIB and i + 1 < len(rows) and rows[i + 1][0] == hi \
                and rows[i + 1][2] == "---p" and rows[i + 1][1] - lo == 64 * _MIB:
            kind = "glibc_arenas"
        elif size == _MIB:
            kind = "pymalloc"
        elif size == 8 * _MIB and i and rows[i - 1][1] == lo and rows[i - 1][2] == "---p":
            kind = "stacks"
        out[lo] = (kind, size, anon)
    return out


def anon_by_kind(mappings: dict[int, tuple[str, int, int]]) -> dict[str, float]:
    """MB of resident anonymous memory per kind of mapping (``anon_<kind>``) and their counts."""
    out = {f"anon_{kind}": 0.0 for kind in ANON_KINDS}
    out["anon_mappings"] = len(mappings)
    for kind, _size, anon in mappings.values():
        out[f"anon_{kind}"] += anon / _MIB
    return out


def anon_growth(before: dict[int, tuple[str, int, int]], after: dict[int, tuple[str, int, int]],
                top: int = 10) -> dict[str, Any]:
    """Where resident anonymous memory grew between two readings: per kind, in mappings that
    were there before and in new ones (less what went with mappings gone), and the mappings that
    grew most."""
    kinds: dict[str, dict[str, float]] = {k: {"grown": 0.0, "new": 0.0, "gone": 0.0} for k in ANON_KINDS}
    movers = []
    for lo, (kind, size, anon) in after.items():
        was = before.get(lo)
        if was is None:
            kinds[kind]["new"] += anon / _MIB
            movers.append((anon / _MIB, kind, size, "new"))
        else:
            kinds[kind]["grown"] += (anon - was[2]) / _MIB
            movers.append(((anon - was[2]) / _MIB, kind, size, "was %.1f MB" % (was[2] / _MIB)))
    for lo, (kind, _size, anon) in before.items():
        if lo not in after:
            kinds[kind]["gone"] -= anon / _MIB
    movers.sort(reverse=True)
    return {"kinds": kinds, "top": [{"mb": round(mb, 2), "kind": kind, "size_mb": round(size / _MIB, 2), "note": note}
                                    for mb, kind, size, note in movers[:top]]}


def _metric(text: str, name: str, label: str = "") -> float:
    """The sum of a metric's samples (those whose labels hold ``label``)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {" and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


STORE_KEYS = ("store", "store_allocated", "store_metadata", "store_resident", "store_mapped")


def _store_memory(base: str) -> dict[str, float]:
    """MB: what the embedded ClickHouse engine says it holds (its MemoryTracking), and what its
    own allocator (jemalloc, inside chdb) has allocated, uses for its own metadata, keeps
    resident and has mapped."""
    def ask(sql: str) -> bytes:
        body = json.dumps({"sql": sql, "format": "json"}).encode()
        request = urllib.request.Request(f"{base}/api/v1/query", data=body,
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.read()

    out = dict.fromkeys(STORE_KEYS, float("nan"))
    try:
        tracked = ask("SELECT value FROM system.metrics WHERE metric = 'MemoryTracking'")
        out["store"] = float(json.loads(tracked.splitlines()[0])["value"]) / 2**20
        stats = next(iter(json.loads(ask("SELECT * FROM system.jemalloc_stats").splitlines()[0]).values()))
        if match := re.search(r"Allocated: (\d+), active: \d+, metadata: (\d+).*?resident: (\d+), mapped: (\d+)",
                              stats):
            (out["store_allocated"], out["store_metadata"], out["store_resident"],
             out["store_mapped"]) = (int(g) / 2**20 for g in match.groups())
    except (OSError, ValueError, KeyError, IndexError, StopIteration):
        pass
    return out


def _slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def soak(minutes: float, rate: int, sample_s: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="lqo-soak-"))
    processors = default_config()["service"]["pipelines"]["traces"]["processors"]
    print(f"collector in {workdir}, processors: {', '.join(processors)}", flush=True)
    proc, ports = run_collector(workdir, processors=processors, prometheus=True)
    base = f"http://127.0.0.1:{ports['http']}"
    metrics_url = f"http://127.0.0.1:{ports['metrics']}/metrics"
    stop = threading.Event()
    stats = {"sent": 0, "refused": 0, "feedback": 0, "scrapes": 0, "queries": 0, "query_failed": 0}
    traffic = Traffic(rate)

    def send() -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            traces, logs, n = traffic.tick()
            while not stop.is_set():  # an OTLP exporter retries a refusal
                status = _post(f"{base}/v1/traces", traces, "application/x-protobuf")
                if status == 200:
                    stats["sent"] += n
                    break
                stats["refused"] += 1
                time.sleep(0.5)
            if logs is not None and _post(f"{base}/v1/logs", logs, "application/x-protobuf") == 200:
                stats["feedback"] += 1
            next_at += 1.0
            stop.wait(max(0.0, next_at - time.monotonic()))

    def scrape() -> None:
        while not stop.wait(15):
            try:
                with urllib.request.urlopen(metrics_url, timeout=10) as r:
                    r.read()
                stats["scrapes"] += 1
            except OSError:
                pass

    def dashboard() -> None:
        sql = ("SELECT RequestModel, count() AS calls, sum(CostUsd) AS spend, quantile(0.95)(Duration) AS p95 "
               "FROM otel_traces_genai WHERE Timestamp > now() - INTERVAL 5 MINUTE GROUP BY RequestModel")
        while not stop.wait(30):
            body = json.dumps({"sql": sql, "format": "json"}).encode()
            ok = _post(f"{base}/api/v1/query", body, "application/json", timeout=60) == 200
            stats["queries" if ok else "query_failed"] += 1

    threads = [threading.Thread(target=f, daemon=True) for f in (send, scrape, dashboard)]
    samples: list[dict[str, float]] = []
    maps: list[dict[int, tuple[str, int, int]]] = []  # the anonymous mappings at 1/3, 2/3 and the end
    t0 = time.monotonic()
    for t in threads:
        t.start()
    try:
        while time.monotonic() - t0 < minutes * 60:
            time.sleep(sample_s)
            if proc.poll() is not None:
                raise RuntimeError(f"the collector exited {proc.returncode}: {(workdir / 'log').read_text()[-2000:]}")
            with urllib.request.urlopen(metrics_url, timeout=10) as r:
                text = r.read().decode()
            sample = {"t": time.monotonic() - t0, "sent": stats["sent"],
                      "stored": _metric(text, "lqo_exporter_sent_spans_total", 'exporter="clickhouse"'),
                      "queue": _metric(text, "lqo_queue_size"), **_memory(proc.pid),
                      **{part: _metric(text, "lqo_process_memory_bytes", f'part="{part}"') / 2**20 for part in PARTS}}
            sample.update(_store_memory(base))
            mappings = anon_mappings(proc.pid)
            sample.update(anon_by_kind(mappings))
            samples.append(sample)
            if len(maps) < 2 and sample["t"] >= minutes * 60 * (len(maps) + 1) / 3:
                maps.append(mappings)
            last_maps = mappings
            print(f"  {sample['t'] / 60:5.1f} min  sent {sample['sent']:>8,}  stored {sample['stored']:>10,.0f}  "
                  f"queue {sample['queue']:>7,.0f}  RSS {sample['rss']:7.1f} MB  PSS (tree) {sample['pss_tree']:7.1f} MB  "
                  f"store {sample['store']:6.1f} MB (jemalloc {sample['store_allocated']:.0f} allocated, "
                  f"{sample['store_resident']:.0f} resident)  malloc heaps {sample['arena_heaps']}  "
                  + "  ".join(f"{part} {sample[part]:.0f}" for part in PARTS)
                  + f"  (jemalloc mapped {sample['store_mapped']:.0f})  anon: "
                  + "  ".join(f"{kind} {sample['anon_' + kind]:.0f}" for kind in ANON_KINDS),
                  flush=True)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        proc.terminate()
        proc.wait(60)
    after = [s for s in samples if s["t"] >= minutes * 60 / 3]
    hours = [s["t"] / 3600 for s in after]
    spans_m = [s["sent"] / 1e6 for s in after]
    out = {"minutes": minutes, "rate_calls_per_s": rate, "processors": processors, "stats": stats, "samples": samples}
    for key in ("rss", "pss_tree", *STORE_KEYS, *PARTS, *(f"anon_{kind}" for kind in ANON_KINDS)):
        ys = [s[key] for s in after]
        # merges and collections make single samples jump by 100 MB: the medians of the run's
        # thirds say more than its ends
        thirds = [statistics.median(s[key] for s in samples[i * len(samples) // 3:(i + 1) * len(samples) // 3])
                  for i in range(3)]
        out[key] = {"warm": ys[0], "end": ys[-1], "min": min(ys), "max": max(ys), "thirds": thirds,
                    "mb_per_hour": _slope(hours, ys), "mb_per_million_spans": _slope(spans_m, ys)}
    if len(maps) == 2:  # single readings: a merge moves them by 100 MB; a lead, not a measure
        out["anon_growth"] = {"first_to_second_third": anon_growth(maps[0], maps[1]),
                              "second_third_to_end": anon_growth(maps[1], last_maps)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=int, default=150, help="GenAI calls per second (each with an HTTP parent span)")
    ap.add_argument("--sample", type=float, default=30.0, help="seconds between memory samples")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    res = soak(args.minutes, args.rate, args.sample)
    print(f"\n{res['minutes']:.0f} min at {res['rate_calls_per_s']} calls/s ({2 * res['rate_calls_per_s']} spans/s): "
          f"{res['stats']}")
    print("medians of each third; range and least-squares slope after the warm-up (the first third):")
    for key, label in (("rss", "RSS (collector)"), ("pss_tree", "PSS (collector and its workers)"),
                       ("store", "ClickHouse engine (MemoryTracking)"),
                       ("store_allocated", "its jemalloc, allocated"), ("store_metadata", "its jemalloc, metadata"),
                       ("store_resident", "its jemalloc, resident"), ("store_mapped", "its jemalloc, mapped"),
                       *((part, f"lqo_process_memory_bytes {part}") for part in PARTS),
                       *((f"anon_{kind}", f"anonymous, {kind} mappings") for kind in ANON_KINDS)):
        r = res[key]
        print(f"  {label:34} medians of the thirds {' · '.join(f'{m:.1f}' for m in r['thirds'])} MB  "
              f"range {r['min']:.1f}–{r['max']:.1f}  slope {r['mb_per_hour']:+7.1f} MB/hour  "
              f"{r['mb_per_million_spans']:+7.1f} MB per million spans")
    for span, growth in res.get("anon_growth", {}).items():
        print(f"anonymous memory, {span.replace('_', ' ')} (two single readings), MB: " + "  ".join(
            f"{kind} {g['grown']:+.1f} grown {g['new']:+.1f} new {g['gone']:+.1f} gone"
            for kind, g in growth["kinds"].items()))
        for m in growth["top"][:5]:
            print(f"    {m['mb']:+7.2f} MB in a {m['size_mb']:.2f} MB {m['kind']} mapping ({m['note']})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
