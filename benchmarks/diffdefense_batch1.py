"""DiffDefense as published, one MNIST digit at a time: the paper's 0.28 s per digit (TitanXP) on 2 CPU cores.

The table's Table 3 times purification at batch 1 on whatever thread the table run had (one, often
beside another job); the papers' issue states its target on 2 CPU cores. This times the same
purifiers, built from the preset's Table 3 columns (one place for their settings), on an otherwise
idle machine at a chosen thread count, and records the load average beside each time.

`--compile` times each purifier a second time with its denoiser under torch.compile (inductor, CPU
C++ kernels: the graph of small convolutions, GroupNorms and SiLUs becomes a few fused kernels,
which is where a batch-1 digit spends its time), with the one-off compile warm-up and the largest
pixel difference from the eager reconstruction of the same digits and seed beside it.

    python -m benchmarks.diffdefense_batch1 --threads 1,2 --compile
"""

from __future__ import annotations

import itertools
import os
import time

import torch

from benchmarks.environment import write_cpu_report
from benchmarks.options import REPORTS_DIR, BenchmarkParser, add_report_options, check_report_out, positive_int, positive_ints
from benchmarks.timing import time_runs
from core.data.loading import load_split
from core.purifiers import create_purifier
from core.tables import load_preset
from core.tables.preset import PurifierColumn

OUT = REPORTS_DIR / "diffdefense_batch1_cpu.json"
PAPER_SECONDS = 0.28


def seconds_per_digit(purifier: torch.nn.Module, digits: torch.Tensor) -> float:
    """Median over digits of one purification, each run the next digit, after one untimed warm-up."""
    next_digit = itertools.cycle(digits.split(1)).__next__
    timing, _ = time_runs(lambda: purifier.purify(next_digit()), 1, warmup=1, repeats=len(digits), device=torch.device("cpu"))
    return timing.median


def compiled(column: PurifierColumn, digit: torch.Tensor) -> tuple[torch.nn.Module, float]:
    """The column's purifier with a compiled wrapper of its denoiser, and the seconds of its first digit (the compile).

    A wrapper, not `unet.compile()`: the shipped denoiser is one module shared by every purifier of the process.
    """
    purifier = create_purifier(column.purifier, **column.params).eval()
    purifier.unet = torch.compile(purifier.unet, dynamic=False)
    started = time.perf_counter()
    purifier.purify(digit)
    return purifier, time.perf_counter() - started


def largest_difference(eager: torch.nn.Module, compiled: torch.nn.Module, digits: torch.Tensor) -> float:
    """Max |eager - compiled| over the digits' reconstructions at the same seed, in [0, 1] pixels."""
    return max(float((eager.purify(digit) - compiled.purify(digit)).abs().max()) for digit in digits.split(1))


def main() -> None:
    parser = BenchmarkParser(description=__doc__.splitlines()[0])
    add_report_options(parser, OUT)
    parser.add_argument("--threads", type=positive_ints, default="1,2", help="comma-separated torch thread counts to time (default 1,2)")
    parser.add_argument("--digits", type=positive_int, default=32)
    parser.add_argument("--compile", action="store_true", help="also time each purifier with its denoiser under torch.compile")
    args = parser.parse_args()
    check_report_out(args, parser)
    preset = load_preset("mnist-diffdefense")
    table3 = next(table for table in preset.tables if table.name == "table3")
    purifiers = [create_purifier(column.purifier, **column.params).eval() for column in table3.columns]
    digits = load_split(preset.data, preset.split, purifiers[0].image_size, limit=args.digits).floats()
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for column, purifier in zip(table3.columns, purifiers, strict=True):
            row = {
                "column": column.label, "threads": threads, "purifier": column.purifier, "params": column.params, "digits": len(digits),
                "median_seconds_per_digit": round(seconds_per_digit(purifier, digits), 3), "paper_seconds": PAPER_SECONDS,
                "load_average_1min": round(os.getloadavg()[0], 2),
            }  # fmt: skip
            if args.compile:
                fast, compile_seconds = compiled(column, digits[:1])
                row.update(
                    compiled_median_seconds_per_digit=round(seconds_per_digit(fast, digits), 3),
                    compile_seconds=round(compile_seconds, 1),
                    compiled_max_pixel_difference=largest_difference(purifier, fast, digits[: min(4, len(digits))]),
                )
            rows.append(row)
            compiled_note = f", compiled {row['compiled_median_seconds_per_digit']:.3f}" if args.compile else ""
            print(f"{threads} thread(s) {column.label:<10} {row['median_seconds_per_digit']:6.3f}{compiled_note} s/digit at batch 1 (paper {PAPER_SECONDS} s)")
    write_cpu_report(args, rows, args.threads)


if __name__ == "__main__":
    main()
