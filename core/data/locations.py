"""The development data sets inside the data folder (`core.paths.DATA_DIR`), named once.

The X-ray set is the product's; MNIST and CIFAR-10 are the DiffDefense and Blau et al. papers' own
settings, used only by models and presets whose names start with `mnist` / `cifar10`.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.paths import DATA_DIR, REPO_ROOT

XRAY_TRAIN_DIR = DATA_DIR / "chest_xray_pneumonia" / "train"
# The official test cohort (other patients): where X-ray figures are reported, never where choices are made.
XRAY_TEST_DIR = DATA_DIR / "chest_xray_pneumonia" / "test"
MNIST_FILE = DATA_DIR / "mnist" / "t10k-images-idx3-ubyte.gz"
CIFAR10_FILE = DATA_DIR / "cifar10_test_jpeg_q75" / "cifar10_test_jpegs.tar.gz"


DATASET_FILES = {"xray": XRAY_TRAIN_DIR, "mnist": MNIST_FILE, "cifar10": CIFAR10_FILE}
DATASET_LABELS = {"xray": "chest X-rays", "mnist": "MNIST digits (paper re-run)", "cifar10": "CIFAR-10 (paper re-run)"}


def dataset_of(name: str) -> str:
    """Which data set a model, weights file or training preset belongs to, from its name."""
    return "mnist" if "mnist" in name else "cifar10" if "cifar10" in name else "xray"


def default_data_for(name: str) -> Path:
    """The data set a model or training preset is trained on by default."""
    return DATASET_FILES[dataset_of(name)]


def report_data_for(name: str) -> Path | None:
    """Where a model's figures are reported: the X-ray test cohort when it is here; None for the
    papers' sets, whose reporting split is carved from the one file (split "val")."""
    return XRAY_TEST_DIR if dataset_of(name) == "xray" and XRAY_TEST_DIR.is_dir() else None


def portable_path(path: str | Path) -> str:
    """A path as committed outputs record it: relative to the repository when it sits in or beside it
    (../shared/data/..., results/...), so a result file reads the same on every checkout; absolute otherwise."""
    resolved = Path(path).resolve()
    if resolved.is_relative_to(REPO_ROOT.parent):
        return os.path.relpath(resolved, REPO_ROOT)
    return str(resolved)
