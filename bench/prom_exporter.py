"""CPU per span of the ``prometheus`` exporter's aggregation, for A/B runs of two versions of the code.

Decodes 8 workload requests of 8,192 spans (bench/workload.py: half GenAI) once, then times
``PrometheusExporter.export`` over them three times (process CPU, after one warm-up batch).
Run it alternately against two checkouts, same interpreter:

    git worktree add /tmp/old <commit>
    for i in 1 2 3; do for root in /tmp/old .; do
      PYTHONPATH=$root/collector/src .venv/bin/python bench/prom_exporter.py --label $root
    done; done

``--evaluations``: as after a producer sent its first evaluation result (each batch's calls are
then remembered, so that results get their call's labels).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import make_request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", default=".", help="what to call this run in the output")
    parser.add_argument("--evaluations", action="store_true",
                        help="as after a producer sent evaluation results: each batch's calls are remembered "
                             "for them (span and response ids)")
    args = parser.parse_args()
    from lqo.collector import exporters
    from lqo.collector.components import ComponentContext
    from lqo.collector.exporters.prometheus import PrometheusExporter, PrometheusExporterConfig
    from lqo.collector.model.otlp import decode_protobuf
    from lqo.collector.telemetry import SelfTelemetry

    batches = [decode_protobuf(make_request(8192, seed=i).SerializeToString()).batch for i in range(8)]
    for batch in batches:
        batch.genai_mask()  # computed by the processors before an exporter sees a batch
    exporter = PrometheusExporter(PrometheusExporterConfig(), ComponentContext("prometheus", SelfTelemetry()))
    exporter.start()
    if args.evaluations:
        exporter.metrics._evaluations_seen = True
    exporter.export(batches[0])
    started = time.process_time()
    for _ in range(3):
        for batch in batches:
            exporter.export(batch)
    spans = 3 * sum(len(b) for b in batches)
    code = Path(exporters.__file__).resolve().parents[3]
    remembered = " (calls remembered for evaluation results)" if args.evaluations else ""
    print(f"{args.label} ({code}){remembered}: {(time.process_time() - started) / spans * 1e6:.2f} µs per span given")


if __name__ == "__main__":
    main()
