"""Torch-free facts about the trainers that the CLI checks before importing torch: the presets' names
and the files a classifier run writes into its folder."""

from __future__ import annotations

from core.errors import PurifyLabError

CLASSIFIER_PRESETS = ("tiny", "cpu", "gpu")
DIFFUSION_PRESETS = ("tiny", "cpu", "gpu", "mnist", "cifar10")
COLD_PRESETS = ("tiny", "cpu", "gpu")


def check_preset(name: str, presets: tuple[str, ...]) -> str:
    if name not in presets:
        raise PurifyLabError(f"unknown preset '{name}'; choose one of: {', '.join(presets)}")
    return name


def classifier_run_files(model: str) -> tuple[str, ...]:
    """What `core.train.classifier.train_classifier` writes beside its checkpoint/: the resolved config,
    the per-epoch history, the selected epoch's weights and the published file with its card."""
    return ("config.json", "history.json", "best.safetensors", f"{model}.safetensors", f"{model}.json")
