"""Where PurifyLab reads and writes, named once: data sets, results, weights, presets and caches.

Data, results, weights, training runs and the decode cache honour an environment variable and fall
back to the repository layout; an explicit command-line option (--data, --store, --out-dir, --out,
--weights) wins over both. Presets and the gallery always live in the repository. The defaults are
absolute, so a command reads and writes the same files from any working directory.

    PURIFYLAB_DATA     the shared data sets   (default: ../shared/data beside the repository)
    PURIFYLAB_RESULTS  results store, tables  (default: results/ in the repository)
    PURIFYLAB_WEIGHTS  shipped weights        (default: weights/ in the repository)
    PURIFYLAB_RUNS     training run folders   (default: runs/ in the repository)
    PURIFYLAB_CACHE    decoded data sets      (default: .data/cache in the repository)

The decode cache holds one .npz per data folder, image size and channel count (the X-ray train
folder takes about 86 MB at 128 px) and is never pruned: delete the folder, or any file in it, to
free the space; whatever is missing is decoded again on the next run.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("PURIFYLAB_DATA", REPO_ROOT.parent / "shared" / "data"))
RESULTS_DIR = Path(os.environ.get("PURIFYLAB_RESULTS", REPO_ROOT / "results"))
WEIGHTS_DIR = Path(os.environ.get("PURIFYLAB_WEIGHTS", REPO_ROOT / "weights"))
RUNS_DIR = Path(os.environ.get("PURIFYLAB_RUNS", REPO_ROOT / "runs"))  # checkpoints, logs, unshipped results of `train`
CONFIGS_DIR = REPO_ROOT / "configs"
GALLERY_DIR = REPO_ROOT / "assets" / "gallery"
CACHE_DIR = Path(os.environ.get("PURIFYLAB_CACHE", REPO_ROOT / ".data" / "cache"))  # decoded data sets, keyed by their sources
RESULTS_STORE = RESULTS_DIR / "results.sqlite"


def check_checkout() -> None:
    """PurifyLab runs from a clone of its repository: a wheel installs core/ alone, where every model
    would read as untrained, every preset as missing and the results store would land in site-packages."""
    if not CONFIGS_DIR.is_dir():
        from core.errors import PurifyLabError

        raise PurifyLabError(
            f"PurifyLab runs from a clone of its repository (configs/, weights/ and assets/ beside core/; none beside {REPO_ROOT / 'core'}): "
            "install it with `pip install -e .` from the clone"
        )
