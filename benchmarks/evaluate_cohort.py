"""How long `purifylab evaluate` takes on the whole test cohort, per shipped X-ray classifier.

Target (generalisation issue): the shipped `vit` on the 301 public test X-rays in < 60 s on 2 CPU
cores, first run included. Each classifier is timed twice in one process: `cold` decodes the JPEGs
(the decoded-pixel cache is pointed at an empty folder), `warm` reads that cache, as every later run
does. Each is read as `purifylab evaluate` reads it by default, with no purifier: a classifier whose
card reads through one (resnet_smooth, through Gaussian noise) is recorded and printed with evaluate's
note that its figure is not its card's. The JSON goes to results/benchmarks/evaluate_test_cpu.json.

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


def cohort_row(classifier: str, data: Path, cache_dir: Path) -> dict:
    """One classifier timed cold then warm, with the purifier it was read through and evaluate's note:
    without them, resnet_smooth's figure read without its noise passed for its card's."""
    cold, result = time_evaluate(classifier, data, cache_dir)
    warm, _ = time_evaluate(classifier, data, cache_dir)
    row = {
        "classifier": classifier, "n": result["n"], "cold_s": round(cold, 2), "warm_s": round(warm, 2),
        "balanced_accuracy": result["balanced_accuracy"], "under_60_s": cold < 60, "purifier": result["purifier"],
    }  # fmt: skip
    if "reads_through_note" in result:
        row["reads_through_note"] = result["reads_through_note"]
    return row


def row_text(row: dict) -> str:
    """A row as the run prints it, evaluate's note on a line of its own as `purifylab evaluate` prints it."""
    line = f"{row['classifier']:<14} n {row['n']}  cold {row['cold_s']:6.1f} s  warm {row['warm_s']:6.1f} s  balanced acc. {row['balanced_accuracy']:.4f}"
    return line + (f"\nnote: {row['reads_through_note']}" if "reads_through_note" in row else "")


def main() -> None:
    parser = BenchmarkParser(description=__doc__.splitlines()[0])
    add_report_options(parser, OUT)
    parser.add_argument("--data", type=Path, default=XRAY_TEST_DIR)
    add_threads_option(parser, 2)
    args = parser.parse_args()
    check_report_out(args, parser)
    if not args.data.is_dir():
        refuse(f"--data {args.data} is not a folder")
    torch.set_num_threads(args.threads)
    cards = shipped_cards()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for classifier in (name for name in list_classifiers() if name in cards and dataset_of(name) == "xray"):
            rows.append(cohort_row(classifier, args.data, Path(scratch) / classifier))
            print(row_text(rows[-1]))
    write_cpu_report(args, rows, args.threads, data=portable_path(args.data))


if __name__ == "__main__":
    main()
