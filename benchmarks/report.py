"""A report as the Markdown tables of BENCHMARKS.md: every speed figure beside its naive reference and settings.

.venv/bin/python -m benchmarks.report results/benchmarks/bench_cpu.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.options import BenchmarkParser, refuse


def _number(value: float | None) -> str:
    """About three significant figures, never in exponent notation above 1."""
    if value is None:
        return "–"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(row) + " |" for row in rows)]


def _accuracy(check: dict[str, Any]) -> str:
    return f"{check['accuracy_ours']:.1f} / {check['accuracy_naive']:.1f} ({check['images']})"


def _speed(row: dict[str, Any]) -> list[str]:
    return [_number(row["ours"]["images_per_s"]), _number(row["naive"]["images_per_s"]), f"{row['speedup']:.2f}x"]


def header(report: dict[str, Any]) -> list[str]:
    hardware, versions, s = report["hardware"], report["versions"], report["settings"]
    gpu = hardware["gpu"]
    machine = gpu["name"] if gpu else f"{hardware['cpu']}, {hardware['torch_threads']} torch threads"
    commit = report["git"]["commit"] or "unknown"
    dirty = " (dirty tree)" if report["git"]["dirty"] else ""
    optimisations = ", ".join(f"{name} {state}" for name, state in report["optimisations"].items())
    naive_images = "every image" if s["naive_attack_images"] is None else f"at most {s['naive_attack_images']} images"
    load = [values[0] for values in (hardware["load_average"], hardware.get("load_average_end")) if values]
    return [
        f"Device `{s['device']}`: {machine}; 1-min load average at start / end: {' / '.join(f'{x:.2f}' for x in load) or 'n/a'}.",
        (
            f"torch {versions['torch']}, diffusers {versions['diffusers']}, timm {versions['timm']}, "
            f"torchattacks {versions['torchattacks']}; commit `{commit[:12]}`{dirty}; {report['created']}; {report['seconds']} s"
        ),
        f"Models: {report['models']}. Images: {report['images']['source']}, {report['images']['size']} px.",
        f"Optimisations: {optimisations}.",
        (
            f"Timing: {s['warmup']} warm-up + median of {s['repeats']} runs (attacks: {s['attack_warmup']} + {s['attack_repeats']}); "
            f"naive attacks timed on {naive_images} of a batch. "
            f"Accuracy checks within {report['accuracy_tolerance_points']} point: {report['checks_passed']}."
        ),
    ]


def markdown(report: dict[str, Any]) -> str:
    lines = header(report)
    sections = report["sections"]
    if "purify" in sections:
        rows = [
            [row["name"], str(row["nfe"]), str(row["batch"]), *_speed(row), _number(row["ours"]["latency_s"]),
             _number(row["gflops_per_s"]), _number(row["mfu"]),
             "–" if row["check"]["max_abs_diff"] is None else f"{row['check']['max_abs_diff']:.1e}", _accuracy(row["check"])]
            for row in sections["purify"]
        ]  # fmt: skip
        lines += ["", "Purification (default settings)", "", *_table(
            ["purifier", "NFE", "batch", "ours img/s", "naive img/s", "speedup", "ours s/batch", "GFLOP/s", "MFU",
             "max abs diff", "acc. ours / naive % (n)"], rows)]  # fmt: skip
    if "attack" in sections:
        rows = [[row["name"], str(row["batch"]), f"{row['steps']} x {row['eot']}", *_speed(row), _accuracy(row["check"])] for row in sections["attack"]]
        lines += ["", f"Attacks (L-inf eps {report['settings']['eps']}; steps x EOT draws per image)", "", *_table(
            ["attack", "batch", "steps x EOT", "ours img/s", "naive img/s", "speedup", "acc. under attack ours / naive % (n)"],
            rows)]  # fmt: skip
    if "train" in sections:
        rows = [
            [row["name"], str(row["batch"]), *_speed(row), _number(row["gflops_per_s"]), _number(row["mfu"]), f"{row['check']['loss_abs_diff']:.1e}"]
            for row in sections["train"]
        ]
        lines += ["", "Training (one AdamW step, 128 px unless tiny)", "", *_table(
            ["model", "batch", "ours img/s", "naive img/s", "speedup", "GFLOP/s", "MFU", "loss diff"], rows)]  # fmt: skip
    if "app" in sections:
        rows = [
            [
                f"{row['name']}: {row['what']}",
                str(row["threads"]),
                _number(row["ours"]["latency_s"]),
                _number(row["naive"]["latency_s"]),
                f"{row['speedup']:.2f}x",
                str(row["check"]["readings_agree"]),
            ]
            for row in sections["app"]
        ]
        lines += ["", "App CPU path (one X-ray)", "", *_table(
            ["interaction", "threads", "ours s", "naive s", "speedup", "readings agree"], rows)]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = BenchmarkParser(prog="python -m benchmarks.report", description="The tables of a saved `purifylab bench` report, as Markdown.")
    parser.add_argument("report", type=Path, help="a report written by purifylab bench (e.g. results/benchmarks/bench_cpu.json)")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
        text = markdown(report)
    except (OSError, ValueError) as error:
        refuse(f"{args.report} is not a readable bench report ({error})")
    except (KeyError, TypeError):
        refuse(f"{args.report} is not a purifylab bench report (schema purifylab-bench/1)")
    print(text)


if __name__ == "__main__":
    main()
