"""Shared fixtures: the real data in ../shared/data (skip cleanly when absent) and fixed seeds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from core.paths import DATA_DIR as SHARED_DATA

# Tiny models: one thread avoids oversubscribing the 2-core CI machine (10-50x slower with 2 per process).
torch.set_num_threads(1)


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set PURIFYLAB_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def xray_train_dir() -> Path:
    """The Kermany train split: train/NORMAL|PNEUMONIA/*.jpeg, 224 px."""
    return _require(SHARED_DATA / "chest_xray_pneumonia" / "train")


@pytest.fixture(scope="session")
def xray_test_dir() -> Path:
    """The public half of the official test cohort (other patients): where figures are reported."""
    return _require(SHARED_DATA / "chest_xray_pneumonia" / "test")


@pytest.fixture(scope="session")
def xray_paths(xray_train_dir: Path) -> dict[str, list[Path]]:
    """A few real X-ray files per class, in a fixed order."""
    return {cls: sorted((xray_train_dir / cls).glob("*.jpeg"))[:8] for cls in ("NORMAL", "PNEUMONIA")}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_sessionfinish(session, exitstatus) -> None:
    """Wait for the app's warm-up thread (pages.startup), which a short selection of app tests can leave
    importing the diffusion stack: Python ending the process under it aborts (exit 134)."""
    thread = getattr(sys.modules.get("pages.startup"), "_thread", None)
    if thread is not None:
        thread.join(timeout=600)
