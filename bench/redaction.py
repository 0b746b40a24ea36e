"""CPU per span of the ``redaction`` processor, and what it adds to a pipeline, on the same batches.

In this process, on batches as the pipeline hands them to processors: export requests of the
ingest workload (bench/workload.py: half GenAI chat spans with ~1 KB of messages, half HTTP
server spans) decoded by the collector's decoder and concatenated (``--requests`` per batch; the
pipeline gathers at least 8,192 spans):

  workload       the workload as it is (its HTTP spans carry url.path, no URL to scan)
  client urls    each HTTP span also has a url.full with a query string, one in ten with an API
                 key in it, and each error's status message quotes its URL (so a tenth of the
                 URLs and the error messages are rewritten)

Chains: ``redaction`` alone, ``genai_normalize`` alone, and both, as the default pipeline runs them
(redaction first). A batch indexes its attribute keys once, for whichever processor asks first,
so the cost redaction adds to a pipeline is the last column minus the second. Rounds alternate
the chains; medians of ``--rounds``, in µs per span.

    .venv/bin/python bench/redaction.py [--batch 512] [--requests 16] [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import _kv, make_request

KEY = "AIzaSyD-EXAMPLE-0123456789abcdefghijkl"


def with_client_urls(request: object) -> object:
    for rs in request.resource_spans:  # type: ignore[attr-defined]
        for ss in rs.scope_spans:
            for i, span in enumerate(ss.spans):
                if span.kind != span.SPAN_KIND_SERVER:
                    continue
                secret = f"&key={KEY}" if i % 20 == 1 else ""
                url = f"https://api.example.com/v1/search?q=red+shoes&page={i % 7}{secret}"
                span.attributes.append(_kv("url.full", url))
                if span.status.message:
                    span.status.message = f"HTTPStatusError: Server error '500' for url '{url}'"
    return request


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=512, help="spans per export request")
    ap.add_argument("--requests", type=int, default=16, help="export requests per processed batch")
    ap.add_argument("--rounds", type=int, default=30)
    args = ap.parse_args()

    from lqo.collector.model import otlp
    from lqo.collector.model.spanbatch import SpanBatch
    from lqo.processors.normalize import NormalizeConfig, NormalizeProcessor
    from lqo.processors.redaction import RedactionConfig, RedactionProcessor

    decode = otlp.decode_protobuf_native if otlp.NATIVE_AVAILABLE else (
        lambda body: otlp.decode_request(otlp.parse_protobuf(body)))
    mixes = {
        "workload": [make_request(args.batch, seed=i).SerializeToString() for i in range(args.requests)],
        "client urls": [with_client_urls(make_request(args.batch, seed=i)).SerializeToString()
                        for i in range(args.requests)],
    }
    redaction, normalize = RedactionProcessor(RedactionConfig()), NormalizeProcessor(NormalizeConfig())
    chains = {"redaction": [redaction], "genai_normalize": [normalize], "both": [redaction, normalize]}
    print(f"{'µs per span, median of ' + str(args.rounds) + ' rounds':40s}" + "".join(f"{p:>18s}" for p in chains)
          + f"{'added by redaction':>20s}")
    for mix, bodies in mixes.items():
        times: dict[str, list[float]] = {c: [] for c in chains}
        changed = 0
        for r in range(args.rounds):
            for name in (list(chains) if r % 2 else list(chains)[::-1]):
                # A fresh batch each time: a batch caches its key codes, which the pipeline's first
                # processor computes for the others.
                fresh = SpanBatch.concat([decode(b).batch for b in bodies])
                t = time.process_time()
                out = fresh
                for processor in chains[name]:
                    out = processor.process(out)
                times[name].append((time.process_time() - t) / len(fresh))
                if name == "redaction" and r == 0:
                    changed = sum(a != b for a, b in zip(out.table.column("SpanAttributes").to_pylist(),
                                                         fresh.table.column("SpanAttributes").to_pylist(), strict=True))
        medians = {c: statistics.median(v) * 1e6 for c, v in times.items()}
        row = "".join(f"{m:18.2f}" for m in medians.values())
        print(f"{mix + f' ({changed} spans rewritten)':40s}" + row + f"{medians['both'] - medians['genai_normalize']:20.2f}")


if __name__ == "__main__":
    main()
