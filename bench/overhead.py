"""Added client latency of GenAI instrumentation, side by side with its peers.

One local server replays a recorded OpenAI chat completion (JSON) and a recorded stream (SSE).
Each variant runs in its own process with the same OpenTelemetry SDK setup (BatchSpanProcessor
into a discarding exporter, a MeterProvider with an in-memory reader) and times N calls made by
the real ``openai`` SDK:

  none         no instrumentation (the baseline)
  lqo          lqo-instrumentation-httpx
  openai-v2    opentelemetry-instrumentation-openai-v2 (the OTel contrib instrumentation)
  openllmetry  opentelemetry-instrumentation-openai (Traceloop's OpenLLMetry)

Variants alternate over ``--rounds``; the result is the median over rounds of each variant's
median latency minus the baseline's from the same round. Content capture is off everywhere.

    .venv/bin/python bench/overhead.py --calls 2000 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VARIANTS = ("none", "lqo", "openai-v2", "openllmetry")
CHAT = ROOT.parent / "shared/fixtures/recordings/openai/openai__test_chat_completion_no_content.yaml"
STREAM = ROOT.parent / "shared/fixtures/recordings/openai/openai__test_chat_completion_streaming.yaml"
ARGS = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say this is a test"}]}


def serve() -> None:
    from tests.instrumentation.replay import ReplayServer, load_cassette

    chat = load_cassette(CHAT)[0]
    stream = load_cassette(STREAM)[0]

    class Fixed(ReplayServer):
        def next_for(self, method: str, path: str, body: bytes) -> object:
            return stream if b'"stream": true' in body or b'"stream":true' in body else chat

    with Fixed([chat]) as srv:
        print(srv.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


def worker(variant: str, url: str, calls: int) -> None:
    import openai
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    exported = [0]

    class Discard(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            exported[0] += len(spans)  # type: ignore[arg-type]
            return SpanExportResult.SUCCESS

    tp = TracerProvider()
    tp.add_span_processor(BatchSpanProcessor(Discard()))
    mp = MeterProvider(metric_readers=[InMemoryMetricReader()])
    if variant == "lqo":
        from lqo.instrumentation.httpx import HttpxGenAIInstrumentor

        HttpxGenAIInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
    elif variant == "openai-v2":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
    elif variant == "openllmetry":
        os.environ["TRACELOOP_TRACE_CONTENT"] = "false"
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor as Traceloop

        Traceloop().instrument(tracer_provider=tp, meter_provider=mp)
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    plain, streamed, chunks = [], [], 0
    for i in range(calls + calls // 10):
        t0 = time.perf_counter()
        client.chat.completions.create(**ARGS)
        t1 = time.perf_counter()
        n = sum(1 for _ in client.chat.completions.create(**ARGS, stream=True, stream_options={"include_usage": True}))
        t2 = time.perf_counter()
        if i >= calls // 10:  # warm-up excluded
            plain.append(t1 - t0)
            streamed.append(t2 - t1)
            chunks = n
    tp.force_flush()
    print(json.dumps({"variant": variant, "plain_us": statistics.median(plain) * 1e6,
                      "stream_us": statistics.median(streamed) * 1e6, "chunks": chunks, "spans": exported[0]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()
    if args.worker:
        return worker(args.worker, args.url, args.calls)
    variants = args.variants.split(",")
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    url = server.stdout.readline().strip()  # type: ignore[union-attr]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    try:
        for r in range(args.rounds):
            for v in variants:
                out = subprocess.run([sys.executable, __file__, "--worker", v, "--url", url, "--calls", str(args.calls)],
                                     capture_output=True, text=True, env=env, check=True)
                res = json.loads(out.stdout.strip().splitlines()[-1])
                results[v].append(res)
                print(f"round {r + 1}/{args.rounds} {v:12s} plain {res['plain_us']:8.1f} us  "
                      f"stream {res['stream_us']:8.1f} us ({res['chunks']} chunks)  spans {res['spans']}", file=sys.stderr)
    finally:
        server.stdin.close()  # type: ignore[union-attr]
        server.wait(10)
    base = results.get("none")
    print(f"\n{'variant':12s} {'added/call us':>14s} {'added/chunk us':>15s} {'spans/round':>12s}")
    for v in variants:
        if v == "none" or not base:
            continue
        added = [a["plain_us"] - b["plain_us"] for a, b in zip(results[v], base, strict=True)]
        per_chunk = [(a["stream_us"] - b["stream_us"]) / max(1, a["chunks"]) for a, b in zip(results[v], base, strict=True)]
        print(f"{v:12s} {statistics.median(added):14.1f} {statistics.median(per_chunk):15.2f} "
              f"{statistics.median(r['spans'] for r in results[v]):12.0f}")


if __name__ == "__main__":
    main()
