"""Toxicity inference throughput on a checkpoint of real size (issue #5, acceptance 4).

Builds a Detoxify-format checkpoint with the architecture of Detoxify's ``original`` (BERT-base,
12 layers, hidden 768, a 30,522-entry WordPiece vocabulary learned here on the bench texts)
and random weights — throughput does not depend on weight values — then scores the same texts
with each backend, side by side, alternating run by run:

* ``torch``: float32 PyTorch (the reference; what Detoxify's ``predict`` runs);
* ``onnx`` / ``onnx-int8``: ONNX Runtime on the CPU, float32 and dynamically quantized int8;
* ``torch-fp16`` (CUDA only): half precision.

Texts: the answers of the support-assistant mix of ``bench/safety.py`` (one per span, each
distinct, ~65 tokens), plus a short (first sentence, ~20 tokens) and a long (four answers, ~250
tokens) variant. Each backend's largest score difference from float32 torch is measured on the
bench texts and on the loader's probe texts.

    .venv/bin/python bench/toxicity.py [--texts 512] [--repeat 3] [--device cpu|cuda] [--threads N]

Needs only numpy, torch and transformers (and onnxruntime/onnx for the ONNX backends), so it also
runs on a GPU machine with ``PYTHONPATH=processors/src``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "processors" / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from safety import ANSWERS, PRODUCTS  # noqa: E402


def answers(n: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(ANSWERS).format(p=rng.choice(PRODUCTS), n=rng.randint(2, 30), c=rng.randint(10000, 99999),
                                       v=f"{rng.randint(1, 9)}.{rng.randint(0, 20)}") for _ in range(n)]


def text_sets(n: int) -> dict[str, list[str]]:
    medium = answers(n)
    return {
        "short": [t.split(". ")[0] + "." for t in answers(n, seed=12)],
        "answer": medium,
        "long": [" ".join(answers(4, seed=1000 + i)) for i in range(n)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=512, help="texts per set")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--backends", default=None, help="comma-separated (default: all for the device)")
    parser.add_argument("--sets", default="short,answer,long")
    parser.add_argument("--checkpoint-dir", default=None, help="reuse/keep the built checkpoint here")
    args = parser.parse_args()

    import torch
    import transformers

    from lqo.processors.safety.toxicity_checkpoint import CHECKPOINT_NAME, write_checkpoint
    from lqo.processors.safety.toxicity_model import PROBE_TEXTS, load

    sets = {k: v for k, v in text_sets(args.texts).items() if k in args.sets.split(",")}
    work = Path(args.checkpoint_dir or tempfile.mkdtemp(prefix="lqo-toxicity-bench-"))
    checkpoint = work / CHECKPOINT_NAME
    if not checkpoint.is_file():
        started = time.perf_counter()
        corpus = [t for texts in text_sets(4000).values() for t in texts]
        write_checkpoint(work, "original", corpus)
        print(f"built a BERT-base Detoxify-format checkpoint in {time.perf_counter() - started:.0f} s: "
              f"{checkpoint} ({checkpoint.stat().st_size / 1e6:.0f} MB)", file=sys.stderr)
    on_cuda = args.device.startswith("cuda")
    names = (args.backends.split(",") if args.backends else
             ["torch", "torch-fp16"] if on_cuda else ["torch", "onnx", "onnx-int8"])
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if on_cuda else f", {torch.get_num_threads()} threads"),
          file=sys.stderr)

    scorers = {}
    for name in names:
        started = time.perf_counter()
        loaded = load(checkpoint, device=args.device, backend=name, batch_size=args.batch, threads=args.threads,
                      cache_dir=work / "converted")
        scorers[name] = loaded.scorer
        print(f"loaded {name} in {time.perf_counter() - started:.1f} s; probe difference "
              f"{loaded.probe_difference:.5f}", file=sys.stderr)

    tokens = {k: statistics.median(len(x) for x in next(iter(scorers.values())).tokenizer(v)["input_ids"])
              for k, v in sets.items()}
    reference = {k: scorers[names[0]].scores(v) for k, v in sets.items()}  # also the warm-up
    for name in names[1:]:
        for texts in sets.values():
            scorers[name].scores(texts[:args.batch])  # warm-up
    timings: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeat):
        for set_name, texts in sets.items():
            for name in names:
                if on_cuda:
                    torch.cuda.synchronize()
                started = time.perf_counter()
                scorers[name].scores(texts)
                if on_cuda:
                    torch.cuda.synchronize()
                timings.setdefault((set_name, name), []).append(len(texts) / (time.perf_counter() - started))

    probes = list(PROBE_TEXTS)
    probe_reference = scorers[names[0]].scores(probes)
    print(f"\n{args.texts} texts per set, batches of {args.batch}, {args.repeat} runs; texts/s median (all runs)\n")
    print("| texts (median tokens) | backend | texts/s | runs | vs " + names[0] + " | max score difference "
          "(bench texts / probes) |")
    print("|---|---|---|---|---|---|")
    for set_name, texts in sets.items():
        base = statistics.median(timings[(set_name, names[0])])
        for name in names:
            runs = timings[(set_name, name)]
            diff = float(np.abs(scorers[name].scores(texts) - reference[set_name]).max())
            probe = float(np.abs(scorers[name].scores(probes) - probe_reference).max())
            print(f"| {set_name} ({tokens[set_name]:.0f}) | {name} | {statistics.median(runs):,.0f} | "
                  f"{' · '.join(f'{r:,.0f}' for r in sorted(runs))} | {statistics.median(runs) / base:.2f} | "
                  f"{diff:.4f} / {probe:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
