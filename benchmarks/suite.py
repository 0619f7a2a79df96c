"""Run the sections a settings record names and assemble the report (`purifylab bench`, `python -m benchmarks`)."""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from benchmarks import app_step, attacks, purifiers, training
from benchmarks.context import ACCURACY_TOLERANCE_POINTS, Context
from benchmarks.environment import bf16_peak_tflops, git_commit, hardware, versions
from benchmarks.models import benchmark_images, load_models
from benchmarks.optimise import optimise, status
from benchmarks.settings import BenchSettings
from core.data import XRAY_TRAIN_DIR
from core.errors import PurifyLabError

SCHEMA = "purifylab-bench/1"
SECTION_RUNNERS: dict[str, Callable[[Context], list[dict[str, Any]]]] = {
    "purify": purifiers.run,
    "attack": attacks.run,
    "train": training.run,
    "app": app_step.run,
}
NAIVE = (
    "fp32, eager, torch.no_grad() where no gradient is needed; one image at a time; diffusion purifiers "
    "re-written as a per-timestep Python loop of the diffusers scheduler's step() (cold diffusion: of the "
    "restoration calls); attacks: torchattacks PGD (EOTPGD) / APGD with one purifier draw per forward and "
    "eot_iter draws per step; training: the same step without the GPU optimisations; same weights (a copy)"
)


def run_suite(settings: BenchSettings, data: Path | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every section in `settings.sections`; returns the report (see BENCHMARKS.md for its schema).

    `data`: the X-ray folder (default: the shared Kermany train folder; fixed random images when absent).
    `log`: called with one line per measured row.
    """
    log = log or (lambda line: None)
    settings.validate()
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise PurifyLabError("--device cuda asked for, but torch sees no CUDA device")
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    device = torch.device(settings.device)
    started = time.perf_counter()
    environment = {"git": git_commit(), "hardware": hardware(device), "versions": versions()}
    models = load_models(settings.tiny, settings.seed).to(device)
    naive = copy.deepcopy(models)  # before any in-place optimisation
    optimise(models.networks(), settings.optimisations, device)
    images = benchmark_images(settings.images_needed, models.image_size, data or XRAY_TRAIN_DIR, settings.seed)
    gpu = environment["hardware"]["gpu"]
    ctx = Context(
        settings=settings, device=device, models=models, naive=naive, images=images.pixels.to(device),
        labels=images.labels.to(device), peak_tflops=bf16_peak_tflops(gpu["name"]) if gpu else None, log=log,
    )  # fmt: skip
    sections = {}
    for name in settings.sections:
        section_started = time.perf_counter()
        sections[name] = SECTION_RUNNERS[name](ctx)
        log(f"{name}: {time.perf_counter() - section_started:.1f} s")
    environment["hardware"]["load_average_end"] = hardware(device)["load_average"]
    return {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        **environment,
        "settings": settings.to_dict(),
        "optimisations": status(settings.optimisations, device),
        "models": models.kind,
        "images": {"source": images.source, "count": len(images.labels), "size": models.image_size},
        "naive": NAIVE,
        "accuracy_tolerance_points": ACCURACY_TOLERANCE_POINTS,
        "sections": sections,
        "checks_passed": checks_passed(sections),
        "seconds": round(time.perf_counter() - started, 1),
    }


PASS_FLAGS = ("within_0_5_points", "readings_agree")  # training reports its loss difference, with no pass flag


def checks_passed(sections: dict[str, list[dict[str, Any]]]) -> dict[str, bool]:
    """Per section with a pass flag: does ours stay within the tolerance of naive on every row?"""
    passed = {}
    for name, rows in sections.items():
        flags = [row["check"][flag] for row in rows for flag in PASS_FLAGS if flag in row["check"]]
        if flags:
            passed[name] = all(flags)
    return passed


def write_report(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
