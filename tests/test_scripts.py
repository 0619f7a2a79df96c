"""The maintenance scripts (scripts/) on bad input: one `error:` line, exit 2, nothing lost. Each runs as
a subprocess, the way the docs run it, on tiny real files in tmp_path (never the tracked assets/)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`python scripts/<script> args`, with results and runs moved into tmp_path."""
    env = os.environ | {"PURIFYLAB_RESULTS": str(tmp_path / "results"), "PURIFYLAB_RUNS": str(tmp_path / "runs")}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def assert_refused(done: subprocess.CompletedProcess, *words: str) -> None:
    """Exit 2 and one `error:` line naming `words`: no traceback, no usage block."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert all(word in lines[0] for word in words), lines[0]


def write_jpeg(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)
    return path


def kermany_folder(root: Path, normal_patients: int = 2, pneumonia_patients: int = 2) -> Path:
    """A test-cohort folder with Kermany file names: two images of NORMAL patient 1, so "one per patient" matters."""
    for patient in range(1, normal_patients + 1):
        write_jpeg(root / "NORMAL" / f"IM-{patient:04d}-0001.jpeg", seed=patient)
    write_jpeg(root / "NORMAL" / "IM-0001-0002.jpeg", seed=99)
    for patient in range(1, pneumonia_patients + 1):
        write_jpeg(root / "PNEUMONIA" / f"person{patient}_bacteria_{patient}.jpeg", seed=100 + patient)
    return root


def shipped_looking_gallery(folder: Path) -> dict[str, bytes]:
    """A gallery as the app reads it (PNGs and the gallery.json naming them), returned as its bytes."""
    folder.mkdir(parents=True)
    Image.fromarray(np.full((16, 16), 128, dtype=np.uint8)).save(folder / "normal_1.png")
    (folder / "gallery.json").write_text(json.dumps({"images": [{"file": "normal_1.png", "label": 0}]}))
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def gallery_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


@pytest.mark.parametrize("case", ["missing folder", "too few patients", "undecodable image"])
def test_make_real_gallery_refuses_bad_data_and_keeps_the_old_gallery(tmp_path, case):
    """It deleted the gallery's PNGs before looking at --data, then crashed with gallery.json naming them."""
    gallery = tmp_path / "assets" / "real"
    before = shipped_looking_gallery(gallery)
    data = tmp_path / "test"
    if case == "too few patients":
        kermany_folder(data, pneumonia_patients=1)
    elif case == "undecodable image":
        kermany_folder(data)
        (data / "PNEUMONIA" / "person2_bacteria_2.jpeg").write_bytes(b"not a jpeg")
    done = run_script("make_real_gallery.py", "--data", str(data), "--count", "2", "--size", "16", "--out-dir", str(gallery), tmp_path=tmp_path)
    assert_refused(done, str(data))
    assert gallery_bytes(gallery) == before
    assert sorted(path.name for path in gallery.parent.iterdir()) == ["real"]  # no half-built folder left beside it


def test_make_real_gallery_replaces_the_gallery_whole(tmp_path):
    gallery = tmp_path / "assets" / "real"
    shipped_looking_gallery(gallery)
    (gallery / "normal_9.png").write_bytes((gallery / "normal_1.png").read_bytes())  # from an earlier, larger --count
    data = kermany_folder(tmp_path / "test")
    done = run_script("make_real_gallery.py", "--data", str(data), "--count", "2", "--size", "16", "--out-dir", str(gallery), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    record = json.loads((gallery / "gallery.json").read_text())
    names = [entry["file"] for entry in record["images"]]
    assert names == ["normal_1.png", "normal_2.png", "pneumonia_1.png", "pneumonia_2.png"]
    assert [entry["source"] for entry in record["images"][:2]] == ["NORMAL/IM-0001-0001.jpeg", "NORMAL/IM-0002-0001.jpeg"]
    assert sorted(path.name for path in gallery.iterdir()) == sorted([*names, "gallery.json"])
    assert all(Image.open(gallery / name).size == (16, 16) for name in names)
    assert sorted(path.name for path in gallery.parent.iterdir()) == ["real"]


@pytest.mark.parametrize("case", ["target is source", "target inside source", "missing source", "no images"])
def test_pack_gpu_data_refuses_before_writing(tmp_path, case):
    """Target == source re-encoded the originals in place (lossy); a missing source exited 0, writing nothing."""
    source = tmp_path / "train"
    original = write_jpeg(source / "NORMAL" / "IM-0001-0001.jpeg", seed=1).read_bytes()
    target = {"target is source": source, "target inside source": source / "packed"}.get(case, tmp_path / "packed")
    if case == "missing source":
        source = tmp_path / "nowhere"
    elif case == "no images":
        source = tmp_path / "notes"
        (source / "sub").mkdir(parents=True)
        (source / "sub" / "README.txt").write_text("no images here")
    done = run_script("pack_gpu_data.py", str(source), str(target), tmp_path=tmp_path)
    assert_refused(done, str(source))
    assert (tmp_path / "train" / "NORMAL" / "IM-0001-0001.jpeg").read_bytes() == original
    assert not (tmp_path / "packed").exists() and not (tmp_path / "train" / "packed").exists()


def test_pack_gpu_data_packs_every_image_as_grey_at_the_size(tmp_path):
    source = tmp_path / "train"
    write_jpeg(source / "NORMAL" / "IM-0001-0001.jpeg", seed=1)
    (source / "groups.csv").write_text("file,group\n")
    done = run_script("pack_gpu_data.py", str(source), str(tmp_path / "packed"), "--size", "16", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "packed" / "NORMAL" / "IM-0001-0001.jpeg") as packed:
        assert (packed.mode, packed.size) == ("L", (16, 16))
    assert (tmp_path / "packed" / "groups.csv").read_text() == "file,group\n"


@pytest.mark.parametrize("option", ["--threads", "--limit", "--batch-size"])
def test_input_shift_refuses_a_count_below_one(tmp_path, option):
    """--threads 0 ran and recorded threads 0; --limit 0 and --batch-size 0 gave tracebacks after the data load."""
    args = ["--limit", "4", "--columns", "none", "--threads", "1", "--store", str(tmp_path / "s.sqlite"), "--out-dir", str(tmp_path / "out")]
    done = run_script("input_shift.py", *args, option, "0", tmp_path=tmp_path)  # the last value given wins
    assert_refused(done, option)
    assert not (tmp_path / "out").exists() and not (tmp_path / "s.sqlite").exists()


def test_denoiser_overlap_refuses_threads_zero(tmp_path):
    """torch.set_num_threads(0) raised a RuntimeError traceback."""
    out = tmp_path / "overlap.json"
    assert_refused(run_script("denoiser_overlap.py", "--threads", "0", "--out", str(out), tmp_path=tmp_path), "--threads")
    assert not out.exists()


@pytest.mark.parametrize("case", ["missing", "not JSON", "not a card"])
def test_card_table_refuses_a_bad_runs_file_before_printing(tmp_path, case):
    """A missing or non-JSON --runs file gave a traceback after half the table was printed."""
    path = tmp_path / "run" / "card.json"
    if case != "missing":
        path.parent.mkdir()
        path.write_text("# a README\n" if case == "not JSON" else json.dumps({"test_metrics": {}}))
    done = run_script("card_table.py", "--runs", str(path), tmp_path=tmp_path)
    assert_refused(done, "--runs", str(path))
    assert done.stdout == ""


@pytest.mark.parametrize("case", ["missing", "not JSON"])
def test_audit_deps_refuses_a_bad_advisories_file(tmp_path, case):
    path = tmp_path / "advisories.json"
    if case == "not JSON":
        path.write_text("advisories: none\n")
    done = run_script("audit_deps.py", "--offline", "--advisories", str(path), tmp_path=tmp_path)
    assert_refused(done, "--advisories", str(path))
