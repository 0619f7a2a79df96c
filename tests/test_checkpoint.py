"""A run folder whose checkpoint could not be written, or was damaged, says in one line how to go on."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import PurifyLabError
from core.train.classifier import preset, train_classifier

ROOT = Path(__file__).resolve().parents[1]


def _cli(args: list[str], capsys) -> tuple[int, str]:
    from core.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0), capsys.readouterr().err


def _one_line(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and all(f in lines[0] for f in fragments), err


TRAIN = ["train", "classifier", "--model", "substitute", "--preset", "tiny", "--epochs", "1", "--threads", "1", "--no-progress", "--device", "cpu"]


def _files_of_at_most(size: int) -> None:
    """In the child, before it runs: a write past `size` bytes of any file fails (EFBIG), as on a full
    disk; the signal that would kill the process there is ignored, so the write returns the error."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


def test_a_checkpoint_that_cannot_be_written_stops_the_run_in_one_line_and_overwrite_starts_it_over(xray_train_dir, tmp_path, capsys):
    """Files of at most 16 KiB: config.json (about 1 KiB) is written, the tiny model's checkpoint
    (about 40 KiB) is not. That was a SafetensorError traceback, and the folder it left was refused
    by a rerun ("pass --resume") and by --resume ("drop --resume") alike."""
    run = tmp_path / "run"
    args = [*TRAIN, "--data", str(xray_train_dir), "--out", str(run)]
    code = f"import sys; from core.cli import main; main({args!r})"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, preexec_fn=lambda: _files_of_at_most(16 * 1024)
    )
    # on a fresh clone the decode cache is not written either (same limit): it warns, and the run goes on
    err = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("warning: decode cache not written"))
    _one_line(done.returncode, err, f"error: cannot save the run in {run}: ", "File too large")
    assert done.stderr.rstrip().endswith("; it has no complete checkpoint yet: make room and rerun with --overwrite to start over"), done.stderr
    assert json.loads((run / "config.json").read_text())["model"] == "substitute" and not list((run / "checkpoint").iterdir())

    for resume in ([], ["--resume"]):
        _one_line(*_cli([*args, *resume], capsys), f"--out {run} holds a training run without a complete checkpoint", "pass --overwrite to start over")
    assert _cli([*args, "--overwrite"], capsys)[0] == 0
    assert json.loads((run / "checkpoint" / "state.json").read_text())["epoch"] == 0 and (run / "substitute.safetensors").is_file()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, xray_train_dir) -> Path:
    """One epoch of the tiny substitute (64 train / 64 val images), checkpointed."""
    run = tmp_path_factory.mktemp("finished") / "run"
    train_classifier(preset("tiny", "substitute", epochs=1, threads=1), xray_train_dir, run, progress=False)
    return run


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_cut_state_file_is_refused_in_one_line_naming_overwrite(finished_run, xray_train_dir, tmp_path, capsys):
    """A state.json cut in half was a JSONDecodeError traceback on --resume."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    _truncate(run / "checkpoint" / "state.json")
    args = [*TRAIN, "--epochs", "2", "--data", str(xray_train_dir), "--out", str(run)]
    for resume in ([], ["--resume"]):
        _one_line(*_cli([*args, *resume], capsys), "without a complete checkpoint (no readable checkpoint/state.json)", "pass --overwrite to start over")
    with pytest.raises(PurifyLabError, match=r"^--resume: the checkpoint in .* cannot be read \(state\.json: .*\); pass --overwrite to start over$"):
        train_classifier(preset("tiny", "substitute", epochs=2, threads=1), xray_train_dir, run, progress=False, resume=True)


@pytest.mark.parametrize("damage", ["removed", "cut"])
def test_a_damaged_tensor_file_of_the_checkpoint_is_refused_in_one_line_naming_overwrite(finished_run, xray_train_dir, tmp_path, capsys, damage):
    """A checkpoint's optimizer file gone, or cut in half, was a FileNotFoundError or SafetensorError traceback on --resume."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (optimizer_file,) = (run / "checkpoint").rglob("optimizer.safetensors")
    if damage == "removed":
        optimizer_file.unlink()
    else:
        _truncate(optimizer_file)
    args = [*TRAIN, "--epochs", "2", "--resume", "--data", str(xray_train_dir), "--out", str(run)]
    where = f"error: --resume: the checkpoint in {run / 'checkpoint'} cannot be read (optimizer.safetensors: "
    _one_line(*_cli(args, capsys), where, "pass --overwrite to start over")


def test_checkpoint_folder_and_files_follow_the_umask(tmp_path):
    """tempfile.mkdtemp made the tensor folder 0700 and safetensors' save_file the files 0600 whatever
    the umask, so a group sharing the run folder could not --resume it."""
    import torch

    from core.train.checkpoint import read_state, write_checkpoint

    previous = os.umask(0o002)
    try:
        write_checkpoint(tmp_path, {"model": {"weight": torch.ones(2, 3)}}, {"epoch": 0})
    finally:
        os.umask(previous)
    folder = tmp_path / read_state(tmp_path)["tensors"]
    modes = {path.name: path.stat().st_mode & 0o777 for path in [folder, *folder.iterdir(), tmp_path / "state.json"]}
    assert modes == {folder.name: 0o775, "model.safetensors": 0o664, "state.json": 0o664}


def test_resuming_a_run_cut_by_its_budget_names_every_spent_limit_in_one_refusal(xray_train_dir, tmp_path, capsys):
    """One epoch cut after its first batch by a 1e-6-minute budget: --resume said "is finished (1 of 1
    epochs); raise --epochs" of a run whose card counts 0 completed epochs, then, with --epochs 2,
    "raise --max-minutes": one limit per refusal, and a cut epoch called finished."""
    run = tmp_path / "run"
    card = train_classifier(preset("tiny", "substitute", epochs=1, max_minutes=1e-6, threads=1), xray_train_dir, run, progress=False)
    assert (card["epochs_completed"], card["stopped_by_time_budget"]) == (0, True)
    args = [*TRAIN, "--max-minutes", "1e-6", "--resume", "--data", str(xray_train_dir), "--out", str(run)]
    code, err = _cli(args, capsys)
    _one_line(code, err, "has run 1 of 1 epochs, the last stopped by the time budget", "and has spent its 1e-06-minute budget")
    assert "finished" not in err and err.rstrip().endswith("; raise --epochs and --max-minutes to train on, or pass --overwrite to start over"), err
