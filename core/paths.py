"""Where PurifyLab reads and writes, named once: data sets, results, weights, presets and caches.

Each location honours an environment variable and falls back to the repository layout; an explicit
command-line option (--data, --store, --out-dir, --weights) wins over both. The defaults are absolute,
so a command reads and writes the same files from any working directory.

    PURIFYLAB_DATA     the shared data sets   (default: ../shared/data beside the repository)
    PURIFYLAB_RESULTS  results store, tables  (default: results/ in the repository)
    PURIFYLAB_WEIGHTS  shipped weights        (default: weights/ in the repository)
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("PURIFYLAB_DATA", REPO_ROOT.parent / "shared" / "data"))
RESULTS_DIR = Path(os.environ.get("PURIFYLAB_RESULTS", REPO_ROOT / "results"))
WEIGHTS_DIR = Path(os.environ.get("PURIFYLAB_WEIGHTS", REPO_ROOT / "weights"))
CONFIGS_DIR = REPO_ROOT / "configs"
CACHE_DIR = REPO_ROOT / ".data" / "cache"  # decoded data sets, keyed by their sources
RESULTS_STORE = RESULTS_DIR / "results.sqlite"
