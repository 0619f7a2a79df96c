"""Torch-free facts about the trainers that the CLI checks before importing torch: the presets' names,
the ranges of the noise settings, the default run folders, the files a classifier run writes into its folder and the data a run must
never learn from."""

from __future__ import annotations

from pathlib import Path

from core.data.locations import dataset_of, default_data_for, report_data_for
from core.errors import PurifyLabError
from core.paths import RUNS_DIR

CLASSIFIER_PRESETS = ("tiny", "cpu", "gpu")
DIFFUSION_PRESETS = ("tiny", "cpu", "gpu", "mnist", "cifar10")
COLD_PRESETS = ("tiny", "cpu", "gpu")
# Upper ends of two noise stds in [0, 1] pixels (lower ends open: 0 would train nothing new), shared by
# the CLI's flags and TrainConfig.validate: beyond half the range, noise-augmented copies hold no X-ray.
MAX_NOISE_AUGMENT = 0.5
MAX_SMOOTHING_SIGMA = 1.0


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


# The epoch a classifier run publishes, by its `select_epoch`: the best one on validation or the last
# (every X-ray preset's), so the file is named for neither.
SELECTED_WEIGHTS = "selected.safetensors"


def classifier_run_files(model: str) -> tuple[str, ...]:
    """What `core.train.classifier.train_classifier` writes beside its checkpoint/: the resolved config,
    the per-epoch history, the selected epoch's weights and the published file with its card."""
    return ("config.json", "history.json", SELECTED_WEIGHTS, f"{model}.safetensors", f"{model}.json")


def check_not_reporting_cohort(name: str, data_dir: str | Path) -> None:
    """Training or calibrating `name` (a classifier, or a denoiser's preset) on images of the cohort
    where figures are reported would report them on images the model learnt from: refused when any
    image of `data_dir` is an image there (see `reporting_cohort_images`)."""
    report, shared, listed = reporting_cohort_images(name, data_dir)
    if shared:
        raise PurifyLabError(
            f"--data {data_dir} is the reporting cohort {report} in {len(shared)} of its {listed} images (by file name, e.g. {shared[0]}), "
            f"where the test figures are measured; train and calibrate on the training folder ({default_data_for(name)})"
        )


def check_split_not_carved_from_cohort(name: str, data_dir: str | Path, split: str | None) -> None:
    """Choices are made on the training folder's val, never on the cohort where figures are reported:
    a --split val or train of the cohort would carve a "val" out of test images and print it as one.
    The papers' sets (MNIST, CIFAR-10), whose val and test are carved from one file, have no such cohort."""
    if split in (None, "all"):
        return
    report, shared, _ = reporting_cohort_images(name, data_dir)
    if shared:
        raise PurifyLabError(
            f"--split {split} would carve a '{split}' out of the reporting cohort {report} (--data {data_dir}); its figures are read whole "
            f"(--split all), and choices are made on the val of the training folder ({default_data_for(name)})"
        )


def reporting_cohort_images(name: str, data_dir: str | Path) -> tuple[Path | None, list[str], int]:
    """(the cohort where `name`'s figures are reported, the images of `data_dir` that are images there,
    how many `data_dir` lists), as `core.data.sources.images_also_in` knows them."""
    report = report_data_for(name)
    if report is None:
        return None, [], 0
    from core.data.sources import images_also_in

    shared = images_also_in(data_dir, report)
    return report, shared.sources, shared.listed
