"""Throughput of the safety processors on a realistic mix of GenAI spans (issue #5, acceptance 4).

The mix: a support assistant. Each span has one of 12 system prompts (~700 characters; they
repeat, as they do in production), a user message (30% carry PII from the labelled Presidio
dataset, the rest are product questions with varying details) and an answer of ~300 characters.
Text is unique per span except the system prompts.

Side by side on the same spans, in one process on this machine:
* ``presidio``: plain per-text ``AnalyzerEngine.analyze`` on every text of every span (the
  baseline the issue names), on the first ``--baseline-spans`` spans;
* ``pii``: the pii processor (batches of ``--batch`` spans; cold cache at the start);
* ``pii+hallucination+injection``: the three processors in pipeline order;
* ``pii(workers=N)``: the pii processor with N worker processes, alone and with the other two;
* ``…, pipelined``: the three through the collector's ``Pipeline``, whose stage after
  ``pii(workers=N)`` (which offloads its work) runs in a thread of its own, overlapping the
  next batch's analysis.

    .venv/bin/python bench/safety.py [--spans 4000] [--batch 512] [--baseline-spans 300] [--workers 2]
    .venv/bin/python bench/safety.py --cpu [--spans 2000]    # CPU per span of each check
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRODUCTS = ["Aurora X2 router", "Nimbus backup plan", "Helios solar kit", "Orbit smart lock", "Vega phone case",
            "Pulse fitness band", "Atlas standing desk", "Echo noise-cancelling headphones"]
ISSUES = ["won't turn on after the last update", "keeps disconnecting every {n} minutes",
          "shows error code E{n}", "was charged twice on invoice {n}", "arrived with a cracked panel",
          "needs a firmware reset", "is not syncing with the mobile app", "lost its configuration"]
ASKS = ["How do I fix it?", "Can I get a refund?", "What are my options?", "Is this covered by warranty?",
        "Can you walk me through the steps?", "Should I send it back?"]
RULES = ["Be concise.", "Never promise dates.", "Cite the policy section.", "Escalate billing disputes over $500.",
         "Do not share internal tooling names.", "Answer in the language of the customer."]
ANSWERS = ["I'm sorry about the trouble with your {p}. Please hold the reset button for {n} seconds, wait for "
           "the status light to blink green, then pair it again from the app under Settings > Devices.",
           "Thanks for reaching out. Your {p} is covered by our {n}-month warranty, so we can replace it at no "
           "cost. I've opened case #{c}; you will receive a prepaid return label by email within 24 hours.",
           "That error usually means the {p} lost its network settings. Update the app to version {v}, sign "
           "in again, and re-run the setup wizard. If it persists after {n} attempts, contact us again.",
           "I can see the duplicate charge on invoice {c}. A refund of the second payment will be issued to "
           "the original card within {n} business days; no action is needed on your side."]


def system_prompts(rng: random.Random) -> list[str]:
    prompts = []
    for i in range(12):
        rules = " ".join(f"Rule {j + 1}: {rng.choice(RULES)}" for j in range(8))
        prompts.append(f"You are the support assistant of Acme Devices (brand {i}). Help customers with "
                       f"orders, devices and billing. {rules} Policy: returns are accepted within 30 days; "
                       f"warranty is 24 months for devices and 12 months for accessories. {rules}")
    return prompts


def make_spans(n: int, seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    prompts = system_prompts(rng)
    pii_texts = [s["full_text"] for s in json.loads(
        (ROOT.parent / "shared/datasets/pii_presidio_research_small.json").read_text())]
    spans = []
    for _ in range(n):
        p, k = rng.choice(PRODUCTS), rng.randint(2, 9999)
        if rng.random() < 0.3:
            user = f"{rng.choice(pii_texts)} Also, my {p} {rng.choice(ISSUES).format(n=k)}."
        else:
            user = f"Hi, my {p} {rng.choice(ISSUES).format(n=k)}. {rng.choice(ASKS)}"
        answer = rng.choice(ANSWERS).format(p=p, n=rng.randint(2, 30), c=rng.randint(10000, 99999),
                                            v=f"{rng.randint(1, 9)}.{rng.randint(0, 20)}")
        spans.append({
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": rng.choice(prompts)}]),
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [{"type": "text", "content": user}]}]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [{"type": "text", "content":
                                                   answer}], "finish_reason": "stop"}]),
        })
    return spans


def texts_of(span: dict[str, str]) -> list[str]:
    out = [json.loads(span["gen_ai.system_instructions"])[0]["content"]]
    out += [m["parts"][0]["content"] for k in ("gen_ai.input.messages", "gen_ai.output.messages")
            for m in json.loads(span[k])]
    return out


def batches(spans: list[dict[str, str]], size: int) -> list:
    from tests.processors.spans import batch_of

    return [batch_of(spans[i:i + size]) for i in range(0, len(spans), size)]


def run_processors(processors: list, spans: list[dict[str, str]], size: int) -> float:
    prepared = batches(spans, size)
    t = time.perf_counter()
    for batch in prepared:
        for proc in processors:
            batch = proc.process(batch)
    return time.perf_counter() - t


def run_pipeline(processors: list, spans: list[dict[str, str]], size: int) -> float:
    """The same batches through the collector's Pipeline (stages overlap where a processor
    offloads its work), timed until the last span leaves the last processor."""
    import threading

    from lqo.collector import pipeline
    from lqo.collector.telemetry import SelfTelemetry

    prepared = batches(spans, size)
    done, seen = threading.Event(), [0]

    class Keep:  # the processors are started already: the pipeline must not start them again
        def __init__(self, proc) -> None:
            self.proc, self.offloads = proc, getattr(proc, "offloads", False)
        def start(self) -> None: ...
        def shutdown(self) -> None: ...
        def process(self, batch):
            return self.proc.process(batch)

    class Count(Keep):
        def process(self, batch):
            seen[0] += len(batch)
            if seen[0] >= len(spans):
                done.set()
            return batch

    chain = [pipeline.NamedProcessor(f"p{i}", Keep(p)) for i, p in enumerate(processors)]
    pipe = pipeline.Pipeline("bench", [*chain, pipeline.NamedProcessor("count", Count(None))], [], SelfTelemetry(),
                             10**9, 2**40, min_batch_spans=size, batch_timeout=0.0)
    limit, pipeline.MAX_BATCH_SPANS = pipeline.MAX_BATCH_SPANS, size  # batches of --batch, as in the other rows
    try:
        pipe.start()
        t = time.perf_counter()
        for batch in prepared:
            assert pipe.offer(batch)
        done.wait()
        return time.perf_counter() - t
    finally:
        pipeline.MAX_BATCH_SPANS = limit
        pipe.shutdown(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spans", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--baseline-spans", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cpu", action="store_true", help="only print each check's CPU per span (collector "
                        "process and PII workers apart), twice")
    args = parser.parse_args()

    from lqo.processors.safety.hallucination import HallucinationConfig, HallucinationProcessor
    from lqo.processors.safety.injection import InjectionConfig, InjectionProcessor
    from lqo.processors.safety.pii import PiiConfig, PiiProcessor
    from lqo.processors.safety.pii_engine import DEFAULT_MODEL, offline_tldextract

    offline_tldextract()
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    spans = make_spans(args.spans)
    if args.cpu:
        return cpu_per_span(spans, args.batch, args.workers)
    chars = statistics.mean(sum(len(t) for t in texts_of(s)) for s in spans)
    print(f"{len(spans)} spans, {chars:.0f} characters of text per span, batches of {args.batch}", file=sys.stderr)
    conf = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": DEFAULT_MODEL}]}
    presidio = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=conf).create_engine())
    presidio.analyze("warm up", "en")
    base = spans[:args.baseline_spans]

    def plain() -> float:
        t = time.perf_counter()
        for span in base:
            for text in texts_of(span):
                presidio.analyze(text, "en")
        return time.perf_counter() - t

    def fresh_pii(workers: int = 0) -> PiiProcessor:
        proc = PiiProcessor(PiiConfig(workers=workers))
        proc.start()
        return proc

    def cold(proc: PiiProcessor) -> PiiProcessor:
        """The processor with nothing remembered, as at the start of a run: its text cache and
        its analyzer's NER-chunk cache cleared (a pool's workers: a fresh pool)."""
        if proc._pool is not None:
            proc.shutdown()
            return fresh_pii(proc.config.workers)
        proc._cache.clear()
        assert proc._analyzer is not None
        getattr(proc._analyzer, "clear_caches", lambda: None)()  # (older checkouts in an A/B have none)
        return proc

    results: dict[str, list[float]] = {}
    pii_proc = fresh_pii()
    pool_proc = fresh_pii(args.workers) if args.workers else None
    for r in range(args.repeat):
        print(f"round {r + 1}/{args.repeat}", file=sys.stderr)
        results.setdefault("presidio (per text), baseline spans", []).append(len(base) / plain())
        pii_proc = cold(pii_proc)
        results.setdefault("pii, baseline spans", []).append(len(base) / run_processors([pii_proc], base,
                                                                                         args.batch))
        pii_proc = cold(pii_proc)
        results.setdefault("pii", []).append(len(spans) / run_processors([pii_proc], spans, args.batch))
        pii_proc = cold(pii_proc)
        three = [pii_proc, HallucinationProcessor(HallucinationConfig()), InjectionProcessor(InjectionConfig())]
        results.setdefault("pii+hallucination+injection", []).append(
            len(spans) / run_processors(three, spans, args.batch))
        results.setdefault("hallucination+injection", []).append(
            len(spans) / run_processors(three[1:], spans, args.batch))
        if pool_proc is not None:
            pool_proc = cold(pool_proc)
            results.setdefault(f"pii(workers={args.workers})", []).append(
                len(spans) / run_processors([pool_proc], spans, args.batch))
            pool_proc = cold(pool_proc)
            three[0] = pool_proc
            results.setdefault(f"pii(workers={args.workers})+hallucination+injection", []).append(
                len(spans) / run_processors(three, spans, args.batch))
            three[0] = pool_proc = cold(pool_proc)
            results.setdefault(f"pii(workers={args.workers})+hallucination+injection, pipelined", []).append(
                len(spans) / run_pipeline(three, spans, args.batch))
    if pool_proc is not None:
        pool_proc.shutdown()
    print(f"\n{'variant':<52}{'spans/s (median)':>18}   runs")
    for name, values in results.items():
        print(f"{name:<52}{statistics.median(values):>18.1f}   {', '.join(f'{v:.0f}' for v in values)}")
    ratio = [p / b for p, b in zip(results["pii, baseline spans"], results["presidio (per text), baseline spans"],
                                   strict=True)]
    print(f"\npii / plain Presidio on the same {len(base)} spans: median {statistics.median(ratio):.1f}x")
    ner_budget(pii_proc, spans[:1000])
    return 0


def cpu_per_span(spans: list[dict[str, str]], size: int, workers: int) -> int:
    """CPU seconds per span of each check: this process's, and its PII workers' (from /proc)."""
    import os

    from lqo.processors.safety.hallucination import HallucinationConfig, HallucinationProcessor
    from lqo.processors.safety.injection import InjectionConfig, InjectionProcessor
    from lqo.processors.safety.pii import PiiConfig, PiiProcessor

    def cpu_of(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    prepared = batches(spans, size)
    for _ in range(2):
        pool = PiiProcessor(PiiConfig(workers=workers))  # fresh: nothing cached in it or its workers
        pool.start()
        assert pool._pool is not None
        pids = list(pool._pool._processes)
        checks = [(f"pii(workers={workers})", pool), ("hallucination", HallucinationProcessor(HallucinationConfig())),
                  ("prompt_injection", InjectionProcessor(InjectionConfig()))]
        for name, proc in checks:
            own, theirs = time.process_time(), sum(cpu_of(p) for p in pids)
            for batch in prepared:
                proc.process(batch)
            own, theirs = time.process_time() - own, sum(cpu_of(p) for p in pids) - theirs
            print(f"{name:<20} collector process {own / len(spans) * 1e3:.3f} ms/span, "
                  f"workers {theirs / len(spans) * 1e3:.3f} ms/span")
        pool.shutdown()
    return 0


def ner_budget(proc, spans: list[dict[str, str]]) -> None:
    """What spaCy's NER alone costs per span on this mix (user message and answer; the system
    prompts are cached): the floor under the pii check's time."""
    from lqo.processors.safety.pii_engine import ner_chunks

    analyzer = proc._analyzer
    texts = [t for s in spans for t in texts_of(s)[1:]]
    gated = [t[a:b] for t in texts for a, b in ner_chunks(t)]
    words, gated_words = sum(len(t.split()) for t in texts), sum(len(t.split()) for t in gated)
    with analyzer._blas.limit(limits=1, user_api="blas"):
        started = time.process_time()
        for _ in analyzer.nlp.pipe(gated):
            pass
        seconds = time.process_time() - started
    print(f"spaCy NER (one thread) on the gated sentences of {len(spans)} spans: "
          f"{gated_words / seconds:,.0f} words/s; {gated_words / len(spans):.0f} of {words / len(spans):.0f} words "
          f"per span pass the gate -> {seconds / len(spans) * 1e3:.2f} ms of NER per span")


if __name__ == "__main__":
    np.seterr(all="ignore")
    pa.set_cpu_count(2)
    sys.exit(main())
