"""Torch-free facts about the trainers that the CLI checks before importing torch: the presets' names,
the default run folders and the files a classifier run writes into its folder."""

from __future__ import annotations

from pathlib import Path

from core.data.locations import dataset_of
from core.errors import PurifyLabError
from core.paths import RUNS_DIR

CLASSIFIER_PRESETS = ("tiny", "cpu", "gpu")
DIFFUSION_PRESETS = ("tiny", "cpu", "gpu", "mnist", "cifar10")
COLD_PRESETS = ("tiny", "cpu", "gpu")


def check_preset(name: str, presets: tuple[str, ...]) -> str:
    if name not in presets:
        raise PurifyLabError(f"unknown preset '{name}'; choose one of: {', '.join(presets)}")
    return name


def classifier_run_dir(model: str) -> Path:
    """Where a classifier run goes without --out: RUNS_DIR/<model>, the same folder from any working directory."""
    return RUNS_DIR / model


def diffusion_run_dir(preset: str) -> Path:
    """Where a denoiser run goes without --out: RUNS_DIR/ddpm for the X-ray presets, RUNS_DIR/ddpm_<preset>
    for the papers' data sets, so an MNIST run never resumes an X-ray one."""
    return RUNS_DIR / ("ddpm" if dataset_of(preset) == "xray" else f"ddpm_{preset}")


def cold_run_dir() -> Path:
    """Where a cold-diffusion run goes without --out."""
    return RUNS_DIR / "cold"


def classifier_run_files(model: str) -> tuple[str, ...]:
    """What `core.train.classifier.train_classifier` writes beside its checkpoint/: the resolved config,
    the per-epoch history, the selected epoch's weights and the published file with its card."""
    return ("config.json", "history.json", "best.safetensors", f"{model}.safetensors", f"{model}.json")
