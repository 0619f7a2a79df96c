"""One paths module: data, results and weights follow the environment, from any working directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_locations_follow_the_environment_from_any_working_directory(tmp_path):
    code = (
        "from core.paths import RESULTS_STORE, WEIGHTS_DIR\n"
        "from core.data.locations import XRAY_TEST_DIR\n"
        "from core.tables import load_preset\n"
        "from core.tables.preset import DEFAULT_DATA\n"
        "print(RESULTS_STORE, WEIGHTS_DIR, XRAY_TEST_DIR, DEFAULT_DATA, load_preset('mnist-diffdefense').data, sep='\\n')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PURIFYLAB_DATA": str(tmp_path / "data"), "PURIFYLAB_RESULTS": str(tmp_path / "out")}
    env.pop("PURIFYLAB_WEIGHTS", None)
    lines = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    store, weights, xray_test, default_data, preset_data = map(Path, lines)
    assert store == tmp_path / "out" / "results.sqlite"
    assert weights == ROOT / "weights"  # the repository's, whatever the working directory
    assert xray_test == Path(default_data) == tmp_path / "data" / "chest_xray_pneumonia" / "test"
    assert preset_data == (tmp_path / "data" / "mnist" / "t10k-images-idx3-ubyte.gz").resolve()
