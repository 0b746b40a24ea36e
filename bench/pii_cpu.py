"""CPU seconds of the PII analyzer on a fixed corpus, for A/B runs of two versions of the code.

The corpus: the distinct texts of 1,500 spans of the bench mix (bench/safety.py), the 100
labelled PII texts, and knowledge, question and right answer of 300 HaluEval rows (3,376 texts;
the pii check analyzes each distinct text once, so repeats would only measure its caches). Run it
alternately against two checkouts (a ``git worktree`` of the older commit), same interpreter:

    git worktree add /tmp/old <commit>
    for i in 1 2 3; do for root in /tmp/old .; do
      PYTHONPATH=$root/processors/src:$root/collector/src .venv/bin/python bench/pii_cpu.py --root $root
    done; done

``--findings FILE`` also pickles the findings, to check two versions find the same.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default=".", help="checkout whose bench/safety.py builds the mix")
    parser.add_argument("--shared", default=None, help="the shared folder (default: ROOT/../shared)")
    parser.add_argument("--findings", default=None, help="pickle the findings to this file")
    args = parser.parse_args()
    root = Path(args.root).resolve()
    shared = Path(args.shared) if args.shared else root.parent / "shared"
    sys.path[:0] = [str(root), str(root / "bench")]
    import safety

    from lqo.processors.safety.pii import DEFAULT_ENTITIES
    from lqo.processors.safety.pii_engine import PiiAnalyzer

    analyzer = PiiAnalyzer(DEFAULT_ENTITIES, 0.4)
    texts = [t for span in safety.make_spans(1500) for t in safety.texts_of(span)]
    texts += [s["full_text"] for s in json.loads((shared / "datasets/pii_presidio_research_small.json").read_text())]
    rows = [json.loads(line) for line in
            (shared / "datasets/halueval_qa_one_turn.jsonl").read_text().splitlines()[:300]]
    texts += [r[k] for r in rows for k in ("knowledge", "question", "right_answer")]
    texts = list(dict.fromkeys(texts))
    started = time.process_time()
    found = analyzer.analyze(texts)
    print(f"{root}: {time.process_time() - started:.2f} CPU-s for {len(texts)} texts, "
          f"{sum(len(f) for f in found)} findings")
    if args.findings:
        Path(args.findings).write_bytes(pickle.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
