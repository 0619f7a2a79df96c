"""--ship publishes a finished run into weights/: under the name its loader reads, both files or neither,
and never from a --preset tiny run (refused before the training modules load)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

import core.train
import core.weights
from core.cli import main
from core.errors import PurifyLabError
from core.weights import card_path, load_weights, read_card, save_weights, sha256_of, ship


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 2)


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A weights/ folder holding one shipped model, 'm', as ship sees it: the real weights/ is never touched."""
    folder = tmp_path / "weights"
    monkeypatch.setattr(core.weights, "WEIGHTS_DIR", folder)
    save_weights(_model(seed=0), folder / "m.safetensors", {"name": "m", "version": "old"})
    return folder


def test_ship_publishes_under_the_loaders_name_whatever_the_run_called_the_file(shipped, tmp_path):
    """`train cold --weights DIR/resnet.safetensors --ship` replaced the shipped resnet with cold_unet."""
    run_file = tmp_path / "run" / "m.safetensors"  # a run of another model that --weights named like 'm'
    save_weights(_model(seed=1), run_file, {"name": "other", "version": "new"})
    kept = {path.name: path.read_bytes() for path in shipped.iterdir()}

    assert ship(run_file, "other") == f"shipped {run_file} as {shipped / 'other.safetensors'}"  # no model of that name was replaced

    assert {path.name: path.read_bytes() for path in shipped.iterdir() if path.stem == "m"} == kept
    card = read_card(shipped / "other.safetensors")
    assert card["file"] == "other.safetensors" and card["version"] == "new" and card["sha256"] == sha256_of(run_file)
    torch.testing.assert_close(load_weights(_model(seed=2), shipped / "other.safetensors").weight, _model(seed=1).weight.half().float())
    assert sorted(path.name for path in shipped.iterdir()) == ["m.json", "m.safetensors", "other.json", "other.safetensors"]
    # a model of that name was there: it was replaced without a word
    assert ship(run_file, "m") == f"shipped {run_file} as {shipped / 'm.safetensors'}, replacing the model shipped there before"


@pytest.mark.parametrize("interrupted_write", [1, 2], ids=["weights", "card"])
def test_an_interrupted_ship_leaves_the_old_pair_loadable(shipped, tmp_path, monkeypatch, interrupted_write):
    """Ctrl-C between the two copies left the new weights beside the old card: a model that refused to load."""
    run_file = tmp_path / "run" / "m.safetensors"
    save_weights(_model(seed=1), run_file, {"name": "m", "version": "new"})
    real_fsync, writes = os.fsync, []

    def interrupt_on_the_chosen_write(descriptor: int) -> None:  # only injects the Ctrl-C; the write itself is real
        writes.append(descriptor)
        if len(writes) == interrupted_write:
            raise KeyboardInterrupt
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", interrupt_on_the_chosen_write)
    with pytest.raises(KeyboardInterrupt):
        ship(run_file, "m")

    assert read_card(shipped / "m.safetensors")["version"] == "old"
    torch.testing.assert_close(load_weights(_model(seed=2), shipped / "m.safetensors").weight, _model(seed=0).weight.half().float())
    assert sorted(path.name for path in shipped.iterdir()) == ["m.json", "m.safetensors"]  # no staged file left behind


def test_ship_of_a_run_without_its_card_is_one_line_and_changes_nothing(shipped, tmp_path):
    run_file = tmp_path / "run" / "m.safetensors"
    save_weights(_model(seed=1), run_file, {"name": "m"})
    card_path(run_file).unlink()
    kept = {path.name: path.read_bytes() for path in shipped.iterdir()}
    with pytest.raises(PurifyLabError, match="no model card m.json beside m.safetensors"):
        ship(run_file, "m")
    assert {path.name: path.read_bytes() for path in shipped.iterdir()} == kept


@pytest.mark.parametrize("command", ["diffusion", "cold"])
def test_a_tiny_denoiser_run_is_refused_ship_before_its_training_module_loads(tmp_path, monkeypatch, capsys, command):
    """The refusal came only after `core.train.<command>` (and torch) had loaded: 3.4 s instead of 0.5 s."""
    module = f"core.train.{command}"
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.delattr(core.train, command, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", command, "--preset", "tiny", "--ship", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and module not in sys.modules
    assert "a --preset tiny test run must never replace a shipped model" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_train_cold_ships_under_cold_unet_whatever_weights_names_the_file(xray_paths, tmp_path):
    """The audit's repro: `--weights DIR/resnet.safetensors --ship` overwrote the shipped resnet pair."""
    from core.purifiers.cold import COLD_WEIGHTS_STEM
    from core.purifiers.unet import load_shipped_unet

    data = tmp_path / "xrays"
    for cls, paths in xray_paths.items():
        (data / cls).mkdir(parents=True)
        for path in paths:
            shutil.copy(path, data / cls / path.name)
    weights = tmp_path / "weights"  # the shipped folder as the command sees it
    save_weights(_model(seed=0), weights / "resnet.safetensors", {"name": "resnet"})
    kept = {path.name: path.read_bytes() for path in weights.iterdir()}
    run_file = tmp_path / "elsewhere" / "resnet.safetensors"
    args = ["train", "cold", "--preset", "cpu", "--epochs", "1", "--max-minutes", "0.001", "--data", str(data), "--device", "cpu"]
    env = {**os.environ, "PURIFYLAB_WEIGHTS": str(weights), "PURIFYLAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    more = ["--out", str(tmp_path / "run"), "--weights", str(run_file), "--ship"]
    done = subprocess.run([sys.executable, "-m", "core", *args, *more], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr

    assert {path.name: path.read_bytes() for path in weights.iterdir() if path.stem == "resnet"} == kept
    assert sorted(path.stem for path in weights.iterdir()) == [COLD_WEIGHTS_STEM, COLD_WEIGHTS_STEM, "resnet", "resnet"]
    assert (weights / f"{COLD_WEIGHTS_STEM}.safetensors").read_bytes() == run_file.read_bytes()
    unet, card = load_shipped_unet(COLD_WEIGHTS_STEM, weights_dir=weights)  # the purifiers load what --ship put there
    assert card["file"] == f"{COLD_WEIGHTS_STEM}.safetensors" and card["training_config"]["preset"] == "cpu"
