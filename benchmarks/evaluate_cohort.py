"""How long `purifylab evaluate` takes on the whole test cohort, per shipped X-ray classifier.

Target (generalisation issue): the shipped `vit` on the 301 public test X-rays in < 60 s on 2 CPU
cores, first run included. Each classifier is timed twice in one process: `cold` decodes the JPEGs
(the decoded-pixel cache is pointed at an empty folder), `warm` reads that cache, as every later run
does. The JSON goes to results/benchmarks/evaluate_test_cpu.json.

    python -m benchmarks.evaluate_cohort --threads 2
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from benchmarks.environment import write_cpu_report
from benchmarks.options import REPORTS_DIR, BenchmarkParser, add_report_options, add_threads_option, check_report_out, refuse
from core.data.locations import XRAY_TEST_DIR, dataset_of, portable_path
from core.evaluate import EvaluationConfig, evaluate
from core.models import list_classifiers
from core.weights import shipped_cards

OUT = REPORTS_DIR / "evaluate_test_cpu.json"


def time_evaluate(classifier: str, data: Path, cache_dir: Path) -> tuple[float, dict]:
    """Wall seconds of one evaluate call (model build, data load, inference, bootstrap) and its result."""
    with mock.patch("core.data.loading.CACHE_DIR", cache_dir):
        started = time.perf_counter()
        result = evaluate(EvaluationConfig(data=str(data), classifier=classifier))
        return time.perf_counter() - started, result


def main() -> None:
    parser = BenchmarkParser(description=__doc__.splitlines()[0])
    add_report_options(parser, OUT)
    parser.add_argument("--data", type=Path, default=XRAY_TEST_DIR)
    add_threads_option(parser, 2)
    args = parser.parse_args()
    check_report_out(args)
    if not args.data.is_dir():
        refuse(f"--data {args.data} is not a folder")
    torch.set_num_threads(args.threads)
    cards = shipped_cards()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for classifier in (name for name in list_classifiers() if name in cards and dataset_of(name) == "xray"):
            cache = Path(scratch) / classifier
            cold, result = time_evaluate(classifier, args.data, cache)
            warm, _ = time_evaluate(classifier, args.data, cache)
            rows.append({
                "classifier": classifier, "n": result["n"], "cold_s": round(cold, 2), "warm_s": round(warm, 2),
                "balanced_accuracy": result["balanced_accuracy"], "under_60_s": cold < 60,
            })  # fmt: skip
            print(f"{classifier:<12} n {result['n']}  cold {cold:6.1f} s  warm {warm:6.1f} s  balanced acc. {result['balanced_accuracy']:.4f}")
    write_cpu_report(args, rows, args.threads, data=portable_path(args.data))


if __name__ == "__main__":
    main()
