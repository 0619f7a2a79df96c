"""One paths module: data, results and weights follow the environment, from any working directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from full_disk import run_on_a_full_disk

from core.paths import WEIGHTS_DIR
from core.results import git_commit
from core.weights import read_card

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


def test_training_run_folders_follow_the_environment_not_the_working_directory(tmp_path):
    code = (
        "from core.train.layout import classifier_run_dir, cold_run_dir, diffusion_run_dir\n"
        "print(classifier_run_dir('substitute'), diffusion_run_dir('tiny'), diffusion_run_dir('mnist'), cold_run_dir(), sep='\\n')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PURIFYLAB_RUNS", None)
    in_repository = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert in_repository == [str(ROOT / "runs" / name) for name in ("substitute", "ddpm", "ddpm_mnist", "cold")]
    moved = {**env, "PURIFYLAB_RUNS": str(tmp_path / "runs")}
    elsewhere = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=moved, capture_output=True, text=True, check=True).stdout.split()
    assert elsewhere == [str(tmp_path / "runs" / name) for name in ("substitute", "ddpm", "ddpm_mnist", "cold")]


def test_input_shift_refuses_to_replace_the_committed_table_with_a_smaller_run(tmp_path):
    """scripts/input_shift.py follows the tables' replace rule (check_replaceable): a --limit 4 run of one
    column is refused before any compute and leaves the committed files as they were; another --out-dir runs."""
    import shutil

    committed = tmp_path / "input-shift"
    shutil.copytree(ROOT / "results" / "input-shift", committed)
    before = {path.name: path.read_bytes() for path in committed.iterdir()}
    env = {**os.environ, "PURIFYLAB_RESULTS": str(tmp_path), "PURIFYLAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(ROOT / "scripts" / "input_shift.py"), "--limit", "4", "--columns", "blur", "--threads", "1"]
    done = subprocess.run([*args, "--store", str(tmp_path / "store.sqlite")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: {committed} holds input-shift computed with other settings (") and "--overwrite" in lines[0]
    assert {path.name: path.read_bytes() for path in committed.iterdir()} == before
    assert not (tmp_path / "store.sqlite").exists()  # refused before the store was opened
    elsewhere = [*args, "--store", str(tmp_path / "store.sqlite"), "--out-dir", str(tmp_path / "small")]
    for _ in range(2):  # a rerun of the same settings replaces its own outputs (its cells reused)
        done = subprocess.run(elsewhere, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    assert "cells computed 0, reused" in done.stderr and "(all, n = 4)" in (tmp_path / "small" / "input-shift.md").read_text()
    provenance = json.loads((tmp_path / "small" / "input-shift.config.json").read_text())["provenance"]  # as a table's config records it
    assert provenance["software"]["git_commit"] == git_commit() and len(provenance["data_hashes"]) == 1
    assert provenance["weights"]["resnet.safetensors"] == read_card(WEIGHTS_DIR / "resnet.safetensors")["sha256"]


def test_empty_values_count_as_unset_and_relative_ones_are_made_absolute(tmp_path):
    """An empty PURIFYLAB_RESULTS put the store in the working directory, an empty PURIFYLAB_CACHE
    the 86 MB decode cache; a relative value moved with every later change of directory."""
    code = "from core.paths import CACHE_DIR, RESULTS_DIR, RUNS_DIR, WEIGHTS_DIR\nprint(RESULTS_DIR, CACHE_DIR, WEIGHTS_DIR, RUNS_DIR, sep='\\n')"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PURIFYLAB_RESULTS": "", "PURIFYLAB_CACHE": "", "PURIFYLAB_WEIGHTS": "", "PURIFYLAB_RUNS": "runs_here"}
    lines = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.splitlines()
    assert list(map(Path, lines)) == [ROOT / "results", ROOT / ".data" / "cache", ROOT / "weights", tmp_path.resolve() / "runs_here"]


def test_a_weights_folder_that_does_not_exist_is_named_in_one_line(tmp_path):
    """PURIFYLAB_WEIGHTS=/nowhere listed every model as untrained, and `table` blamed the missing models."""
    env = {**os.environ, "PURIFYLAB_WEIGHTS": str(tmp_path / "nowhere")}
    done = subprocess.run([sys.executable, "-m", "core", "classifiers"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr.strip().splitlines() == [
        f"error: the weights folder {tmp_path / 'nowhere'} (PURIFYLAB_WEIGHTS, default weights/ in the repository) is not a folder: "
        "point PURIFYLAB_WEIGHTS at the shipped weights or unset it"
    ]


def test_files_are_written_whole_or_the_earlier_ones_kept(tmp_path):
    """A full disk left a truncated quick.json, which broke the app's Curves page."""
    (tmp_path / "small.json").write_text("earlier small")
    (tmp_path / "large.json").write_text("earlier large")
    small, large = str(tmp_path / "small.json"), str(tmp_path / "large.json")
    write = f"from pathlib import Path\nfrom core.paths import write_files\nwrite_files({{Path({small!r}): 'new', Path({large!r}): 'x' * 5000}})"
    done = run_on_a_full_disk(1000, write)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [f"error: cannot write {tmp_path / 'large.json'}: File too large"]
    assert {path.name: path.read_text() for path in tmp_path.iterdir()} == {"small.json": "earlier small", "large.json": "earlier large"}
    done = run_on_a_full_disk(10_000, write)
    assert done.returncode == 0, done.stderr
    assert {path.name: len(path.read_text()) for path in tmp_path.iterdir()} == {"small.json": 3, "large.json": 5000}
