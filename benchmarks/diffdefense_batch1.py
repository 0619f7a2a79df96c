"""DiffDefense as published, one MNIST digit at a time: the paper's 0.28 s per digit (TitanXP) on 2 CPU cores.

The table's Table 3 times purification at batch 1 on whatever thread the table run had (one, often
beside another job); the papers' issue states its target on 2 CPU cores. This times the same
purifiers, built from the preset's Table 3 columns (one place for their settings), on an otherwise
idle machine at a chosen thread count, and records the load average beside each time.

    python -m benchmarks.diffdefense_batch1 --threads 1,2
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path

import torch

from benchmarks.environment import write_cpu_report
from benchmarks.timing import time_runs
from core.data.loading import load_split
from core.purifiers import create_purifier
from core.tables import load_preset

OUT = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "diffdefense_batch1_cpu.json"
PAPER_SECONDS = 0.28


def seconds_per_digit(purifier: torch.nn.Module, digits: torch.Tensor) -> float:
    """Median over digits of one purification, each run the next digit, after one untimed warm-up."""
    next_digit = itertools.cycle(digits.split(1)).__next__
    timing, _ = time_runs(lambda: purifier.purify(next_digit()), 1, warmup=1, repeats=len(digits), device=torch.device("cpu"))
    return timing.median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts to time")
    parser.add_argument("--digits", type=int, default=32)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    thread_counts = [int(count) for count in args.threads.split(",")]
    preset = load_preset("mnist-diffdefense")
    table3 = next(table for table in preset.tables if table.name == "table3")
    purifiers = [create_purifier(column.purifier, **column.params).eval() for column in table3.columns]
    digits = load_split(preset.data, preset.split, purifiers[0].image_size, limit=args.digits).floats()
    rows = []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        for column, purifier in zip(table3.columns, purifiers, strict=True):
            seconds = seconds_per_digit(purifier, digits)
            rows.append({
                "column": column.label, "threads": threads, "purifier": column.purifier, "params": column.params, "digits": len(digits),
                "median_seconds_per_digit": round(seconds, 3), "paper_seconds": PAPER_SECONDS,
                "load_average_1min": round(os.getloadavg()[0], 2),
            })  # fmt: skip
            print(f"{threads} thread(s) {column.label:<10} {seconds:6.3f} s/digit at batch 1 (paper {PAPER_SECONDS} s, TitanXP)")
    write_cpu_report(args.out, rows, max(thread_counts))


if __name__ == "__main__":
    main()
