"""Detection quality of the safety checks on the shared labelled datasets.

PII: entity-level precision and recall per entity type on
``../shared/datasets/pii_presidio_research_small.json``, for the ``pii`` processor's analyzer
(``lqo.processors.safety.pii_engine.PiiAnalyzer``) side by side with Presidio's default
``AnalyzerEngine`` (same spaCy model) on the same texts. A prediction matches a labelled entity
of the same (mapped) type when their character ranges overlap; "leak recall" counts a labelled
value as caught when any finding of any type covers part of it (what redaction needs).

Hallucination: AUROC of ``lqo.hallucination.score`` on ``../shared/datasets/halueval_qa_one_turn.jsonl``
(knowledge and question as context, each right and hallucinated answer as output) next to the
answer-length-only baseline.

    .venv/bin/python bench/detect_quality.py [--shared ../shared] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Dataset label -> Presidio entity type (as presidio-research maps them; TITLE has no Presidio type).
TYPE_MAP = {"PERSON": "PERSON", "ADDRESS": "LOCATION", "LOCATION": "LOCATION", "PHONE_NUMBER": "PHONE_NUMBER",
            "CREDIT_CARD": "CREDIT_CARD", "ORGANIZATION": "ORGANIZATION", "DATE_TIME": "DATE_TIME",
            "DOMAIN_NAME": "URL", "US_SSN": "US_SSN", "IP_ADDRESS": "IP_ADDRESS", "EMAIL_ADDRESS": "EMAIL_ADDRESS",
            "US_DRIVER_LICENSE": "US_DRIVER_LICENSE", "TITLE": None}


def pii_scores(samples: list[dict], predictions: list[list[tuple[str, int, int]]]) -> dict:
    per: dict[str, Counter] = {}
    leak_caught = leak_total = 0
    for sample, predicted in zip(samples, predictions, strict=True):
        gold = [(TYPE_MAP.get(s["entity_type"]), s["start_position"], s["end_position"]) for s in sample["spans"]]
        for gtype, gs, ge in gold:
            if gtype is None:
                continue
            counts = per.setdefault(gtype, Counter())
            counts["support"] += 1
            if any(pt == gtype and ps < ge and gs < pe for pt, ps, pe in predicted):
                counts["tp"] += 1
            leak_total += 1
            leak_caught += any(ps < ge and gs < pe for _, ps, pe in predicted)
        for ptype, ps, pe in predicted:
            counts = per.setdefault(ptype, Counter())
            counts["predicted"] += 1
            if any(gt == ptype and ps < ge and gs < pe for gt, gs, ge in gold):
                counts["matched"] += 1
    table = {}
    for etype, c in sorted(per.items()):
        table[etype] = {
            "support": c["support"], "predicted": c["predicted"],
            "precision": round(c["matched"] / c["predicted"], 3) if c["predicted"] else None,
            "recall": round(c["tp"] / c["support"], 3) if c["support"] else None,
        }
    return {"per_type": table, "leak_recall": round(leak_caught / leak_total, 3) if leak_total else None}


def run_pii(shared: Path) -> dict:
    from lqo.processors.safety.pii import DEFAULT_ENTITIES
    from lqo.processors.safety.pii_engine import DEFAULT_MODEL, PiiAnalyzer, offline_tldextract

    offline_tldextract()
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    samples = json.loads((shared / "datasets/pii_presidio_research_small.json").read_text())
    texts = [s["full_text"] for s in samples]
    conf = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": DEFAULT_MODEL}]}
    presidio = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=conf).create_engine())
    ours = PiiAnalyzer(DEFAULT_ENTITIES, score_threshold=0.4)
    ours_all = PiiAnalyzer(presidio.get_supported_entities(), score_threshold=0.0, gate_ner=True)
    t = time.perf_counter()
    base = [[(r.entity_type, r.start, r.end) for r in presidio.analyze(x, "en")] for x in texts]
    base_s = time.perf_counter() - t
    t = time.perf_counter()
    mine = [[(f.entity_type, f.start, f.end) for f in fs] for fs in ours.analyze(texts)]
    ours_s = time.perf_counter() - t
    mine_all = [[(f.entity_type, f.start, f.end) for f in fs] for fs in ours_all.analyze(texts)]
    return {
        "texts": len(texts),
        "presidio_default": pii_scores(samples, base),
        "lqo_default_config": pii_scores(samples, mine),
        "lqo_all_entities_threshold_0": pii_scores(samples, mine_all),
        "seconds": {"presidio_default": round(base_s, 3), "lqo": round(ours_s, 3)},
        "default_entities": list(DEFAULT_ENTITIES),
    }


def auroc(scores: list[float], labels: list[int]) -> float:
    s, lab = np.asarray(scores, dtype=float), np.asarray(labels)
    pos, neg = s[lab == 1], s[lab == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(wins / (len(pos) * len(neg)))


def run_hallucination(shared: Path) -> dict:
    from lqo.processors.safety.hallucination import Grounding, signals

    rows = [json.loads(line) for line in (shared / "datasets/halueval_qa_one_turn.jsonl").read_text().splitlines()
            if line.strip()]
    scores, lengths, labels = [], [], []
    t = time.perf_counter()
    for row in rows:
        grounding = Grounding.merge([Grounding.of(row["knowledge"]), Grounding.of(row["question"])])
        for answer, label in ((row["right_answer"], 0), (row["hallucinated_answer"], 1)):
            scores.append(signals(answer, grounding).score())
            lengths.append(len(answer))
            labels.append(label)
    elapsed = time.perf_counter() - t
    return {"pairs": len(rows), "auroc": round(auroc(scores, labels), 4),
            "auroc_length_baseline": round(auroc(lengths, labels), 4),
            "us_per_answer": round(elapsed / len(scores) * 1e6, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print("PII (entity-level, overlap match)...", file=sys.stderr)
    result = {"pii": run_pii(args.shared)}
    print("hallucination (HaluEval QA)...", file=sys.stderr)
    result["hallucination"] = run_hallucination(args.shared)
    pii = result["pii"]
    print(f"\nPII on {pii['texts']} texts   (P = precision, R = recall, n = labelled)")
    print(f"{'entity':<20}{'n':>5}  {'Presidio P':>10} {'R':>6}  {'lqo P':>7} {'R':>6}  {'lqo(all) P':>10} {'R':>6}")
    types = sorted(set(pii["presidio_default"]["per_type"]) | set(pii["lqo_default_config"]["per_type"]))
    for etype in types:
        cols = [pii[k]["per_type"].get(etype, {}) for k in
                ("presidio_default", "lqo_default_config", "lqo_all_entities_threshold_0")]
        n = max(c.get("support", 0) for c in cols)
        cells = [f"{_fmt(c.get('precision')):>{w}} {_fmt(c.get('recall')):>6}" for c, w in zip(cols, (10, 7, 10),
                                                                                                strict=True)]
        print(f"{etype:<20}{n:>5}  " + "  ".join(cells))
    print(f"{'leak recall':<25}  {_fmt(pii['presidio_default']['leak_recall']):>17}  "
          f"{_fmt(pii['lqo_default_config']['leak_recall']):>14}  "
          f"{_fmt(pii['lqo_all_entities_threshold_0']['leak_recall']):>17}")
    hal = result["hallucination"]
    print(f"\nHallucination on {hal['pairs']} HaluEval QA pairs: AUROC {hal['auroc']} "
          f"(answer length alone: {hal['auroc_length_baseline']}), {hal['us_per_answer']} µs/answer")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
