"""A real `purifylab table` process killed with SIGKILL half way: the store stays sound, the rerun
redoes no finished cell, and the final table is bit-identical to an uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core.results import ResultStore

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _preset(data: Path) -> dict:
    return {
        "title": "kill test: shipped vit on 16 real X-rays",
        "data": str(data), "split": "val", "limit": 16, "seed": 0, "batch_size": 8, "bootstrap": 100, "redraws": 1,
        "tables": [{
            "name": "grey", "caption": "Grey-box.", "classifiers": [{"name": "vit", "label": "ViT"}],
            "rows": [{"label": "Clean"}, {"label": "FGSM", "name": "fgsm", "steps": 1},
                     {"label": "PGD", "name": "pgd", "steps": 3}, {"label": "APGD", "name": "apgd", "steps": 3}],
            "columns": [{"label": "Original"}, {"label": "Blur", "purifier": "blur", "params": {"sigma": 2.0}},
                        {"label": "Blurred", "purifier": "cold_blur"}],
        }],
        "sanity": {"collapse_eps": [0.3], "collapse_steps": 3},
    }  # fmt: skip


def _table(config: Path, store: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "core", "table", str(config), "--store", str(store), "--out-dir", str(out), "--threads", "1", "--no-progress"]


def _stored_cells(store: Path) -> int:
    if not store.exists():
        return 0
    with sqlite3.connect(store, timeout=30) as probe:
        try:
            return probe.execute("SELECT COUNT(*) FROM cells").fetchone()[0]
        except sqlite3.OperationalError:  # the table is not created yet
            return 0


def test_sigkilled_table_run_resumes_and_matches_an_uninterrupted_run(xray_train_dir, tmp_path):
    config = tmp_path / "kill.yaml"
    config.write_text(yaml.safe_dump(_preset(xray_train_dir)))
    store, out = tmp_path / "killed.sqlite", tmp_path / "killed"
    process = subprocess.Popen(_table(config, store, out), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while _stored_cells(store) < 4 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill: {process.stderr.read().decode()[-500:]}"

    with ResultStore(store) as opened:
        assert opened.integrity_ok()
        finished = {cell.key for cell in opened.cells()}
    assert 4 <= len(finished)

    resumed = subprocess.run(_table(config, store, out), cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-1000:]
    summary = next(line for line in resumed.stderr.splitlines() if line.startswith("cells computed"))
    computed, reused = (int(part.split()[-1]) for part in summary.split(";")[0].split(","))
    assert reused == len(finished), summary
    with ResultStore(store) as opened:
        assert opened.integrity_ok() and len(opened.cells()) == computed + reused

    print(f"killed after {len(finished)} of {computed + reused} cells; the rerun reused {reused}, computed {computed}")
    fresh_store, fresh_out = tmp_path / "fresh.sqlite", tmp_path / "fresh"
    uninterrupted = subprocess.run(_table(config, fresh_store, fresh_out), cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-1000:]
    killed_table, fresh_table = (json.loads((folder / "kill.json").read_text()) for folder in (out, fresh_out))
    assert killed_table["results"] == fresh_table["results"]
    assert resumed.stdout == uninterrupted.stdout  # the printed Markdown table, digit for digit


def test_ctrl_c_says_how_to_resume_and_leaves_a_sound_store(xray_train_dir, tmp_path):
    config = tmp_path / "interrupt.yaml"
    config.write_text(yaml.safe_dump(_preset(xray_train_dir)))
    store, out = tmp_path / "interrupted.sqlite", tmp_path / "interrupted"
    # SIGINT back to its default in the child: a shell's background job (`pytest ... &`) inherits it
    # ignored, and Python then never raises KeyboardInterrupt.
    process = subprocess.Popen(
        _table(config, store, out), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while _stored_cells(store) < 1 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr[-500:]
    assert stderr.strip().splitlines()[-1] == f"interrupted: finished cells are kept in {store}; rerun the same command to resume"
    with ResultStore(store) as opened:
        assert opened.integrity_ok() and len(opened.cells()) >= 1
