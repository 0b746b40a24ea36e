"""End-to-end ingest throughput of `lqo collector` into the embedded store.

Starts a real collector subprocess, sends a realistic mix (bench/workload.py: half GenAI
chat spans with ~1 KB of messages, half HTTP server spans) from concurrent OTLP/gRPC and
OTLP/HTTP clients, waits until every span is stored, and reports spans stored vs sent,
wall time and the collector's CPU seconds (from /proc, all its threads, chdb included).
Refused requests (backpressure) are retried after a pause, as an OTLP exporter would.

    .venv/bin/python bench/ingest.py --spans 200000
    .venv/bin/python bench/ingest.py --variants spine,enriched   # processors on vs off, side by side
    .venv/bin/python bench/ingest.py --breakdown   # where the CPU goes, stage by stage
    .venv/bin/python bench/ingest.py --security plain,tls,tls+token   # what TLS and auth cost

Variants: ``spine`` (no processors), ``enriched`` (genai_normalize + cost), ``enriched+prom``
(and the prometheus exporter), ``enriched-unmarked`` (genai_normalize without
``mark_nested_calls``: against ``enriched``, what counting nested records once costs),
``redacted+enriched`` (redaction first, as the default pipeline),
``genai-only`` (the ``filter`` processor with ``keep: genai``: the workload's HTTP server spans are
dropped, half of them), ``genai-traces`` (``keep: genai_traces``; every span of the workload has a
trace of its own, so it keeps the same spans and remembers a trace per GenAI span: the worst case
of its bookkeeping), ``no-genai-tables`` (the spine without the GenAI tables and their views:
what filling them costs), ``persistent-queue`` (the spine with the exporter's sending queue on
disk, ``sending_queue.storage: file_storage`` with its defaults: what writing every batch to a
file costs), ``persistent-queue-lz4`` (the same, the files lz4-compressed), ``two-arenas`` and
``redacted+enriched/two-arenas`` (``MALLOC_ARENA_MAX=2``: glibc's malloc arenas capped at two,
where its default is eight per core: what the cap costs in throughput). Runs of the variants
alternate, on the same payloads. Where the GenAI tables are kept, every run checks that they hold
one row per GenAI span sent.

Security (``--security``, alternating like the variants): ``plain``; ``tls`` (both receivers
with a certificate from a throwaway CA, the clients verifying it); ``tls+token`` (and the
``bearertokenauth`` extension on both, the clients sending the token); ``token`` (plain text
with the token). Clients keep their connections, as OTLP exporters do.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import make_request

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
LQO = str(Path(sys.executable).with_name("lqo"))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_counters(pid: int) -> tuple[float, float, int]:
    """(user CPU-s, system CPU-s, minor page faults) of the whole process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick, int(fields[7])


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread name (threads of one name summed: the receivers' pools)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = name.rstrip("_0123456789") or name
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


SECURITY = ("plain", "tls", "token", "tls+token")
TOKEN = "bench-token-0123456789abcdef"


class Security:
    """One run's receiver security: the collector's settings and what its clients use."""

    def __init__(self, mode: str, workdir: Path) -> None:
        self.mode = mode
        self.tls = "tls" in mode
        self.token = "token" in mode
        self.ca_pem = b""
        if self.tls:
            import trustme

            ca = trustme.CA()
            server = ca.issue_cert("127.0.0.1")
            self.ca_pem = ca.cert_pem.bytes()
            server.cert_chain_pems[0].write_to_path(str(workdir / "tls.crt"))
            server.private_key_pem.write_to_path(str(workdir / "tls.key"))

    def protocol(self) -> dict:
        out: dict = {}
        if self.tls:
            out["tls"] = {"cert_file": "tls.crt", "key_file": "tls.key"}
        if self.token:
            out["auth"] = {"authenticator": "bearertokenauth"}
        return out

    def apply(self, config: dict) -> None:
        for protocol in config["receivers"]["otlp"]["protocols"].values():
            protocol.update(self.protocol())
        if self.token:
            config.setdefault("extensions", {})["bearertokenauth"] = {"token": TOKEN}
            config["service"].setdefault("extensions", []).append("bearertokenauth")

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"} if self.token else {}

    def ssl_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cadata=self.ca_pem.decode()) if self.tls else None

    def channel(self, port: int) -> grpc.Channel:
        target = f"127.0.0.1:{port}"
        if self.tls:
            return grpc.secure_channel(target, grpc.ssl_channel_credentials(self.ca_pem))
        return grpc.insecure_channel(target)


def _query(http_port: int, sql: str, security: Security | None = None) -> list[dict]:
    scheme = security.scheme if security else "http"
    req = urllib.request.Request(
        f"{scheme}://127.0.0.1:{http_port}/api/v1/query",
        data=json.dumps({"sql": sql, "format": "json"}).encode(),
        headers={"Content-Type": "application/json", **(security.headers() if security else {})},
    )
    context = security.ssl_context() if security else None
    with urllib.request.urlopen(req, timeout=60, context=context) as r:
        return [json.loads(line) for line in r.read().decode().splitlines() if line]


VARIANTS = {
    "spine": ([], False),
    "enriched": (["genai_normalize", "cost"], False),
    "enriched+prom": (["genai_normalize", "cost"], True),
    "enriched-unmarked": (["genai_normalize", "cost"], False),
    "redacted+enriched": (["redaction", "genai_normalize", "cost"], False),
    "genai-only": (["filter"], False),
    "genai-traces": (["filter"], False),
    "no-genai-tables": ([], False),
    "persistent-queue": ([], False),
    "persistent-queue-lz4": ([], False),
    "two-arenas": ([], False),
    "redacted+enriched/two-arenas": (["redaction", "genai_normalize", "cost"], False),
}
# The clickhouse exporter's settings of a variant: ``no-genai-tables`` is the spine without the
# GenAI tables' materialized views (what they cost at ingest: spine against it).
VARIANT_EXPORTER = {"no-genai-tables": {"genai_tables": False},
                    "persistent-queue": {"sending_queue": {"storage": "file_storage"}},
                    "persistent-queue-lz4": {"sending_queue": {"storage": "file_storage"}}}
# The collector's environment of a variant: glibc's malloc arenas capped at two, where its
# default is eight per core (lqo/collector/malloc.py).
VARIANT_ENV = {"two-arenas": {"MALLOC_ARENA_MAX": "2"},
               "redacted+enriched/two-arenas": {"MALLOC_ARENA_MAX": "2"}}
# The file_storage extension's settings of a variant whose exporter names one.
VARIANT_STORAGE = {"persistent-queue-lz4": {"compression": "lz4"}}
# Processors' settings where the default would not do what the variant is about.
VARIANT_SETTINGS = {"genai-only": {"filter": {"keep": "genai"}},
                    "genai-traces": {"filter": {"keep": "genai_traces"}},
                    # enriched without marking nested records of one call (what the marking costs)
                    "enriched-unmarked": {"genai_normalize": {"mark_nested_calls": False}}}


def run_collector(
    workdir: Path, processors: list[str] | None = None, exporter: dict | None = None,
    decoder: str = "native", prometheus: bool = False, attempt: int = 1,
    security: Security | None = None, settings: dict | None = None, storage_settings: dict | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen, dict]:
    ports = {"grpc": _free_port(), "http": _free_port(), "metrics": _free_port()}
    config = {
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": f"127.0.0.1:{ports['grpc']}"},
            "http": {"endpoint": f"127.0.0.1:{ports['http']}"}}}},
        "processors": {p: (settings or {}).get(p, {}) for p in processors or []},
        "exporters": {"clickhouse": {"endpoint": "embedded://./store", **(exporter or {})},
                      **({"prometheus": {}} if prometheus else {})},
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": processors or [],
                                     "exporters": ["clickhouse", *(["prometheus"] if prometheus else [])]}},
            "telemetry": {"metrics": {"address": f"127.0.0.1:{ports['metrics']}"},
                          "logs": {"level": "warning"}},
        },
    }
    storage = ((exporter or {}).get("sending_queue") or {}).get("storage")
    if storage:  # the queue's files in the run's directory, with the extension's defaults
        config["extensions"] = {storage: {"directory": "./queue", **(storage_settings or {})}}
        config["service"]["extensions"] = [storage]
    if security is not None:
        security.apply(config)
    (workdir / "lqo.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.Popen([LQO, "collector", "--config", "lqo.yaml"], cwd=workdir,
                            env={**os.environ, "LQO_PURE_PYTHON_DECODER": "1" if decoder == "python" else "0",
                                 **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=open(workdir / "log", "wb"))  # noqa: SIM115
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/readyz", timeout=1):
                return proc, ports
        except OSError:
            time.sleep(0.1)
    proc.kill()
    proc.wait()
    log = (workdir / "log").read_text()
    if "Address already in use" in log and attempt < 3:  # a free port taken meanwhile: new ports
        return run_collector(workdir, processors, exporter, decoder, prometheus, attempt + 1, security, settings,
                             storage_settings, env)
    raise RuntimeError(log)


def _grpc_client(port: int, bodies: list[bytes], counts: list[int], stats: dict,
                 security: Security) -> None:
    metadata = tuple((k.lower(), v) for k, v in security.headers().items())
    with security.channel(port) as channel:
        call = channel.unary_unary(EXPORT)
        for body, n in zip(bodies, counts, strict=True):
            while True:
                try:
                    call(body, timeout=60, metadata=metadata)
                    break
                except grpc.RpcError as exc:
                    if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                        raise
                    stats["refused"] += 1
                    time.sleep(0.05)
            stats["sent"] += n


def _http_client(port: int, bodies: list[bytes], counts: list[int], stats: dict,
                 security: Security) -> None:
    """One keep-alive connection, as the OTLP/HTTP exporters' sessions hold."""
    import http.client

    def connect() -> http.client.HTTPConnection:
        if security.tls:
            return http.client.HTTPSConnection("127.0.0.1", port, timeout=60, context=security.ssl_context())
        return http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    conn = connect()
    headers = {"Content-Type": "application/x-protobuf", **security.headers()}
    try:
        for body, n in zip(bodies, counts, strict=True):
            while True:
                try:
                    conn.request("POST", "/v1/traces", body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                except (ConnectionError, http.client.HTTPException):
                    conn.close()
                    conn = connect()
                    continue
                if response.status == 200:
                    break
                if response.status not in (429, 503):
                    raise RuntimeError(f"OTLP/HTTP export answered {response.status}")
                stats["refused"] += 1
                time.sleep(0.05)
            stats["sent"] += n
    finally:
        conn.close()


def _genai_spans(bodies: list[bytes]) -> int:
    """How many of the spans in ``bodies`` are GenAI spans (what ``filter`` with keep: genai keeps)."""
    from lqo.collector.model.otlp import decode_protobuf

    counts: dict[int, int] = {}
    for body in bodies:
        if id(body) not in counts:  # the bodies repeat a few distinct payloads
            counts[id(body)] = int(decode_protobuf(body).batch.genai_mask().sum())
    return sum(counts[id(body)] for body in bodies)


def payloads(total_spans: int, batch: int) -> tuple[list[bytes], int]:
    """The request bodies of one run, and how many distinct spans they hold."""
    n_requests = max(1, total_spans // batch)
    distinct = [make_request(batch, seed=i).SerializeToString() for i in range(min(n_requests, 64))]
    return [distinct[i % len(distinct)] for i in range(n_requests)], len(distinct) * batch


def measure(
    total_spans: int, batch: int, clients: int, processors: list[str] | None = None,
    exporter: dict | None = None, transport: str = "both", decoder: str = "native",
    prometheus: bool = False, security: str = "plain", settings: dict | None = None,
    storage_settings: dict | None = None, env: dict[str, str] | None = None,
) -> dict:
    bodies, n_distinct = payloads(total_spans, batch)
    workdir = Path(tempfile.mkdtemp(prefix="lqo-bench-"))
    sec = Security(security, workdir)
    proc, ports = run_collector(workdir, processors, exporter, decoder, prometheus, security=sec,
                                settings=settings, storage_settings=storage_settings, env=env)
    try:
        counters0 = _proc_counters(proc.pid)
        threads0 = _thread_cpu(proc.pid)
        t0 = time.perf_counter()
        threads, all_stats = [], []
        for c in range(clients):
            mine = bodies[c::clients]
            stats = {"sent": 0, "refused": 0}
            all_stats.append(stats)
            use_grpc = transport == "grpc" or (transport == "both" and c % 2 == 0)
            target = _grpc_client if use_grpc else _http_client
            port = ports["grpc"] if use_grpc else ports["http"]
            threads.append(threading.Thread(target=target, args=(port, mine, [batch] * len(mine), stats, sec)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sent = sum(s["sent"] for s in all_stats)
        expected = _genai_spans(bodies) if "filter" in (processors or []) else sent
        stored = 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            stored = int(_query(ports["http"], "SELECT count() AS c FROM otel_traces", sec)[0]["c"])
            if stored >= expected:
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        user, system, faults = (b - a for a, b in zip(counters0, _proc_counters(proc.pid), strict=True))
        cpu = user + system
        per_thread = {k: round((v - threads0.get(k, 0.0)) / sent * 1e6, 2) for k, v in _thread_cpu(proc.pid).items()}
        per_thread = {k: v for k, v in sorted(per_thread.items(), key=lambda kv: -kv[1]) if v >= 0.05}
        distinct_ids = int(_query(ports["http"], "SELECT uniqExact(SpanId) AS c FROM otel_traces", sec)[0]["c"])
        genai_rows = None
        if (exporter or {}).get("genai_tables", True):
            genai_rows = int(_query(ports["http"], "SELECT count() AS c FROM otel_traces_genai", sec)[0]["c"])
            rolled = int(_query(ports["http"], "SELECT sum(Calls) AS c FROM otel_traces_genai_1m", sec)[0]["c"])
            assert genai_rows == rolled == _genai_spans(bodies), (genai_rows, rolled, _genai_spans(bodies))
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=10) as r:
            exposition = r.read().decode()
        processor_us = {
            line.split('"')[1]: round(float(line.rsplit(" ", 1)[1]) / sent * 1e6, 2)
            for line in exposition.splitlines() if line.startswith("lqo_processor_cpu_seconds_total{")
        }
        batches = [float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines()
                   if line.startswith("lqo_processor_batches_total{")]
        if batches:
            processor_us["mean_batch_spans"] = round(sent / batches[0])
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "spans_sent": sent, "spans_expected": expected, "spans_stored": stored,
        "distinct_span_ids_stored": distinct_ids, "distinct_span_ids_sent": n_distinct,
        "genai_rows_stored": genai_rows,
        "refusals_retried": sum(s["refused"] for s in all_stats),
        "wall_s": round(wall, 2), "collector_cpu_s": round(cpu, 2),
        "spans_per_s_wall": round(sent / wall), "spans_per_cpu_s": round(sent / cpu) if cpu else None,
        "system_cpu_share": round(system / (user + system), 3) if user + system else None,
        "minor_faults_per_1k_spans": round(faults / sent * 1000, 1),
        "cpu_us_per_span_by_thread": per_thread,
        "processor_cpu_us_per_span": processor_us,
    }


def breakdown(batch: int, rounds: int) -> dict:
    """CPU per span of each stage, measured in this process on the same payloads,
    both decoders side by side."""
    import chdb

    from lqo.collector.exporters.clickhouse.schema import SchemaSpec
    from lqo.collector.model import otlp
    from lqo.collector.model.spanbatch import SpanBatch

    bodies = [make_request(batch, seed=i).SerializeToString() for i in range(rounds)]
    n = batch * rounds
    us = lambda s: round(s / n * 1e6, 2)  # noqa: E731
    out: dict[str, object] = {"spans": n, "native_decoder_built": otlp.NATIVE_AVAILABLE}
    t = time.process_time()
    requests = [otlp.parse_protobuf(b) for b in bodies]
    out["python_decoder.protobuf_parse_us_per_span"] = us(time.process_time() - t)
    t = time.process_time()
    batches = [otlp.decode_request(r).batch for r in requests]
    out["python_decoder.objects_to_arrow_us_per_span"] = us(time.process_time() - t)
    if otlp.NATIVE_AVAILABLE:
        t = time.process_time()
        batches = [otlp.decode_protobuf_native(b).batch for b in bodies]
        out["native_decoder.bytes_to_arrow_us_per_span"] = us(time.process_time() - t)
    store = tempfile.mkdtemp(prefix="lqo-bench-chdb-")
    conn = chdb.connect(store)
    for sql in SchemaSpec().statements():
        conn.query(sql)
    data = SpanBatch.concat(batches).table
    cols = ", ".join(f"`{c}`" for c in data.column_names)
    # The same table with ClickHouse's default min_bytes_for_wide_part (10 MiB): inserts as Wide parts.
    conn.query("CREATE TABLE default.wide AS default.otel_traces")
    conn.query("ALTER TABLE default.wide MODIFY SETTING min_bytes_for_wide_part = 10485760")
    conn.query("SYSTEM STOP MERGES")  # insert cost only; merges run later, in the background
    variants = (("indexes_at_insert", "otel_traces", 1), ("indexes_at_merge", "otel_traces", 0),
                ("wide_parts_indexes_at_merge", "wide", 0))
    times: dict[str, list[float]] = {label: [] for label, _, _ in variants}
    for r in range(10):  # alternating, order reversed every other round
        for label, table, setting in variants[::1 if r % 2 else -1]:
            t = time.process_time()
            conn.query(f"INSERT INTO default.{table} ({cols}) SETTINGS "
                       f"materialize_skip_indexes_on_insert = {setting} SELECT * FROM Python(data)")
            times[label].append(time.process_time() - t)
    for label, values in times.items():
        out[f"chdb_insert.{label}_us_per_span"] = us(sorted(values)[len(values) // 2])
    parts = conn.query("SELECT table, part_type FROM system.parts WHERE active AND table IN ('otel_traces', 'wide')",
                       "CSV").bytes().decode().split()
    out["part_types"] = sorted(set(parts))
    conn.close()
    shutil.rmtree(store, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=512, help="spans per export request")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients")
    ap.add_argument("--transport", choices=("both", "grpc", "http"), default="both",
                    help="both: half the clients gRPC, half HTTP")
    ap.add_argument("--repeat", type=int, default=3, help="runs; the median is reported")
    ap.add_argument("--decoders", default="native",
                    help="comma-separated: native,python; runs alternate, side by side")
    ap.add_argument("--variants", default="spine",
                    help=f"comma-separated pipelines to compare: {', '.join(VARIANTS)}")
    ap.add_argument("--security", default="plain",
                    help=f"comma-separated receiver security to compare: {', '.join(SECURITY)}")
    ap.add_argument("--breakdown", action="store_true")
    args = ap.parse_args()
    if args.breakdown:
        print(json.dumps(breakdown(args.batch, 40), indent=2))
        return
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    unknown = [v for v in args.security.split(",") if v not in SECURITY]
    if unknown:
        ap.error(f"unknown security {unknown[0]!r}; choose from {', '.join(SECURITY)}")
    runs: dict[str, list[dict]] = {}
    for i in range(args.repeat):
        for decoder in args.decoders.split(","):
            for variant, security in ((v, s) for v in args.variants.split(",")
                                      for s in args.security.split(",")):
                processors, prometheus = VARIANTS[variant]
                label = variant if decoder == "native" else f"{variant}/{decoder}"
                label = label if security == "plain" else f"{label}/{security}"
                result = measure(args.spans, args.batch, args.clients, processors, transport=args.transport,
                                 decoder=decoder, prometheus=prometheus, security=security,
                                 settings=VARIANT_SETTINGS.get(variant), exporter=VARIANT_EXPORTER.get(variant),
                                 storage_settings=VARIANT_STORAGE.get(variant), env=VARIANT_ENV.get(variant))
                print(f"run {i + 1} {label}: {json.dumps(result)}", file=sys.stderr)
                assert result["spans_stored"] == result["spans_expected"], "spans lost or duplicated"
                runs.setdefault(label, []).append(result)
    summary = {}
    order = {label: list(results) for label, results in runs.items()}  # run order, before sorting
    for label, results in runs.items():
        results.sort(key=lambda r: r["spans_per_cpu_s"])
        summary[label] = {
            "median_spans_per_cpu_s": results[len(results) // 2]["spans_per_cpu_s"],
            "all_runs_spans_per_cpu_s": [r["spans_per_cpu_s"] for r in results],
            "median_spans_per_s_wall": sorted(r["spans_per_s_wall"] for r in results)[len(results) // 2],
        }
    if "spine" in summary:
        base = summary["spine"]
        for label, s in summary.items():
            s["cpu_throughput_vs_spine"] = round(s["median_spans_per_cpu_s"] / base["median_spans_per_cpu_s"], 3)
            s["wall_throughput_vs_spine"] = round(s["median_spans_per_s_wall"] / base["median_spans_per_s_wall"], 3)
            # Each run against the spine run just before it (same machine weather): the median of
            # these ratios is steadier than the ratio of medians when the VM drifts during a session.
            paired = sorted(r["spans_per_cpu_s"] / b["spans_per_cpu_s"] for r, b in zip(order[label], order["spine"],
                                                                                         strict=True))
            s["cpu_vs_spine_paired_median"] = round(paired[len(paired) // 2], 3)
    for label, s in summary.items():
        base_label, _, security = label.rpartition("/")
        if security in SECURITY and security != "plain" and base_label in summary:
            # against the plain run just before it, as above
            paired = sorted(r["spans_per_cpu_s"] / b["spans_per_cpu_s"]
                            for r, b in zip(order[label], order[base_label], strict=True))
            s["cpu_vs_plain_paired_median"] = round(paired[len(paired) // 2], 3)
    print(json.dumps({"cores": os.cpu_count(), "spans_per_run": args.spans, **summary}, indent=2))


if __name__ == "__main__":
    main()
