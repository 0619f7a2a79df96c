"""Diffusion training on real X-rays (tiny UNet, 32 px), its checkpoint/resume, card and metrics."""

from __future__ import annotations

import json

import pytest
import torch
from interrupts import interrupt_writing

from core.errors import PurifyLabError
from core.purifiers.ddpm import DDPMPurifier
from core.purifiers.unet import load_shipped_unet
from core.train.diffusion import DiffusionTrainConfig, psnr, ssim, train_diffusion
from core.weights import read_card


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny UNets are dominated by per-op overhead; a second thread only adds sync cost on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, xray_train_dir):
    """Two epochs of the tiny preset on 64 real training X-rays, then a resumed third epoch."""
    out = tmp_path_factory.mktemp("ddpm_run")
    config = DiffusionTrainConfig.from_preset("tiny", epochs=2, max_steps=1000, limit=64)
    first = train_diffusion(config, xray_train_dir, out, progress=False, weights_path=out / "ddpm_unet.safetensors")
    resumed_config = DiffusionTrainConfig.from_preset("tiny", epochs=3, max_steps=1000, limit=64, resume=True)
    card = train_diffusion(resumed_config, xray_train_dir, out, progress=False, weights_path=out / "ddpm_unet.safetensors")
    return out, first, card


@pytest.mark.slow
def test_training_lowers_the_noise_prediction_loss(trained):
    _, first, card = trained
    losses = [record["train_loss"] for record in card["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert first["history"] == card["history"][:2]  # resume continued the same run


@pytest.mark.slow
def test_resume_continues_at_the_next_epoch_and_step(trained):
    out, first, card = trained
    assert card["epochs_completed"] == 3 and first["epochs_completed"] == 2
    assert card["steps"] == card["history"][-1]["step"] == 3 * first["steps"] // 2
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["epoch_001.png", "epoch_002.png", "epoch_003.png"]
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.bin"))  # safetensors only


@pytest.mark.slow
def test_card_describes_the_model_and_its_quality_and_loads_back(trained):
    out, _, card = trained
    assert read_card(out / "ddpm_unet.safetensors") == card
    assert card["unet_size"] == "tiny" and card["storage_dtype"] == "float16"
    assert card["scheduler"]["num_train_timesteps"] == 1000 and len(card["data"]["data_hash"]) == 64
    quality = card["quality"]
    assert quality["split"] == "val" and quality["t_star"] == 0.04 and quality["images"] == 4
    assert 0 < quality["ssim"] <= 1 and quality["psnr"] > 5
    unet, loaded_card = load_shipped_unet("ddpm_unet", out)
    purifier = DDPMPurifier(unet=unet, schedule=loaded_card["scheduler"])
    assert purifier.purify(torch.rand(1, 1, 32, 32), seed=0).shape == (1, 1, 32, 32)
    assert json.loads((out / "config.json").read_text())["preset"] == "tiny"


def test_psnr_and_ssim_on_real_xrays(xray_paths):
    from core.io import load_image, to_model_input

    x = torch.cat([to_model_input(load_image(p), 64) for p in xray_paths["NORMAL"][:2]])
    noisy = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    noisier = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    assert (ssim(x, noisier) < ssim(x, noisy)).all() and (ssim(x, noisy) < 1).all()
    assert (psnr(x, noisier) < psnr(x, noisy)).all()
    assert abs(float(psnr(x, noisy).mean()) - 26.0) < 1.0  # sigma 0.05 -> 10 log10(1 / 0.0025) = 26 dB


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"unet_size": "huge"}, "unknown UNet size 'huge'"),
        ({"max_t_fraction": 0.0}, "max_t_fraction=0.0"),
        ({"crop_size": 300}, "crop_size=300"),
        ({"ema_decay": 1.0}, "ema_decay=1.0"),
        ({"lr": -1.0}, "lr=-1.0"),
    ],
)
def test_bad_training_config_is_refused(overrides, message):
    with pytest.raises(PurifyLabError, match="^[^\n]*$") as error:
        DiffusionTrainConfig.from_preset("cpu", **overrides)
    assert message in str(error.value)
    with pytest.raises(PurifyLabError, match="unknown preset"):
        DiffusionTrainConfig.from_preset("huge")


@pytest.mark.slow
def test_cli_train_diffusion_tiny_preset(tmp_path, xray_train_dir, capsys):
    from core.cli import main

    weights = tmp_path / "ddpm_unet.safetensors"
    args = ["train", "diffusion", "--preset", "tiny", "--epochs", "2", "--data", str(xray_train_dir)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--out", str(tmp_path / "run"), "--weights", str(weights)])
    assert exit_info.value.code == 0
    card = read_card(weights)
    assert card["unet_size"] == "tiny" and card["training"]["preset"] == "tiny" and card["training"]["epochs"] == 2
    assert f'"psnr": {card["quality"]["psnr"]}' in capsys.readouterr().out


def test_cifar10_preset_trains_an_rgb_denoiser_that_ships_under_its_own_name(shared_data, tmp_path):
    """Two steps of the shipped `cifar10` preset: a 3-channel UNet, its card, loadable as `denoiser=`."""
    config = DiffusionTrainConfig.from_preset("cifar10", epochs=1, max_steps=2, limit=32, eval_images=4, batch_size=8)
    assert config.weights_stem == "ddpm_unet_cifar10"
    data = shared_data / "cifar10_test_jpeg_q75" / "cifar10_test_jpegs.tar.gz"
    card = train_diffusion(config, data, tmp_path, progress=False, weights_path=tmp_path / "ddpm_unet_cifar10.safetensors")
    assert card["unet_size"] == "cifar10" and card["steps"] == 2 and card["quality"]["psnr"] > 0
    unet, _ = load_shipped_unet("ddpm_unet_cifar10", tmp_path)
    assert unet.config.in_channels == 3 and unet.config.sample_size == 32
    purified = DDPMPurifier(unet=unet, schedule=card["scheduler"]).purify(torch.rand(2, 3, 32, 32), seed=0)
    assert purified.shape == (2, 3, 32, 32)


def test_budget_cut_epochs_are_not_counted_and_the_budget_spans_resumes(xray_train_dir, tmp_path):
    """Tiny preset: 32 train images, 4 steps an epoch. A budget that ends after the first step leaves no
    completed epoch; a resume granted a hair more than the time already spent stops after one step
    (its clock counts the first run's seconds); a resume with room completes an epoch."""
    from dataclasses import replace

    out, weights = tmp_path / "run", tmp_path / "ddpm_unet.safetensors"

    def run(max_minutes: float, resume: bool = False) -> dict:
        config = replace(DiffusionTrainConfig.from_preset("tiny", epochs=3, max_minutes=max_minutes, resume=resume), max_steps=None)
        return train_diffusion(config, xray_train_dir, out, progress=False, weights_path=weights)

    cut = run(1e-6)
    assert (cut["steps"], cut["steps_per_epoch"], cut["epochs_completed"], cut["stopped_by_time_budget"]) == (1, 4, 0, True)
    assert cut["data"]["folder"] == "chest_xray_pneumonia/train" and cut["data"]["split"].startswith("deduplicated; by patient")
    with pytest.raises(PurifyLabError, match="has spent its 1e-06-minute budget"):
        run(1e-6, resume=True)
    spent = json.loads((out / "checkpoint" / "state.json").read_text())["seconds"]
    again = run((spent + 1e-3) / 60, resume=True)
    assert [record["step"] for record in again["history"]] == [1, 2] and again["epochs_completed"] == 0 and again["stopped_by_time_budget"]
    full = run(10.0, resume=True)
    assert [record["step"] for record in full["history"]] == [1, 2, 6] and full["epochs_completed"] == 1
    assert full["stopped_by_time_budget"]  # the two cut epochs stay cut: a resume goes on at the next epoch


@pytest.fixture
def small_xray_folder(xray_paths, tmp_path):
    """16 real X-rays in the class-per-folder layout."""
    import shutil

    for cls, paths in xray_paths.items():
        (tmp_path / "xrays" / cls).mkdir(parents=True)
        for path in paths:
            shutil.copy(path, tmp_path / "xrays" / cls / path.name)
    return tmp_path / "xrays"


def test_a_tiny_cold_run_keeps_off_the_shipped_model_and_states_its_split_and_epochs(small_xray_folder, tmp_path):
    import os
    import subprocess
    import sys

    from core.data.loading import load_split
    from core.train.cold import ColdTrainConfig, train_cold

    shipped = tmp_path / "weights"  # the shipped folder as the command sees it: a tiny run must leave it empty
    shipped.mkdir()
    args = ["train", "cold", "--preset", "tiny", "--epochs", "1", "--data", str(small_xray_folder), "--out", str(tmp_path / "run"), "--device", "cpu"]
    env = {**os.environ, "PURIFYLAB_WEIGHTS": str(shipped), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    assert not list(shipped.iterdir())
    card = read_card(tmp_path / "run" / "cold_unet.safetensors")
    assert card["data"]["split"] == load_split(small_xray_folder, "train", 32).cut
    assert (card["training"]["epochs_completed"], card["training"]["steps"], card["training"]["steps_per_epoch"]) == (1, 4, 4)
    config = ColdTrainConfig.from_preset("tiny", max_minutes=1e-6)
    cut = train_cold(config, small_xray_folder, tmp_path / "cut", progress=False, weights_path=tmp_path / "cut" / "cold_unet.safetensors")
    assert (cut["training"]["epochs_completed"], cut["training"]["steps"], cut["training"]["stopped_by_time_budget"]) == (0, 1, True)


def test_a_diverged_denoiser_stops_in_one_line_and_publishes_nothing(xray_train_dir, tmp_path):
    config = DiffusionTrainConfig.from_preset("tiny", lr=1e9, epochs=2)
    with pytest.raises(PurifyLabError, match="^the training loss became (nan|inf) at step [0-9]+: the run diverged and nothing was published"):
        train_diffusion(config, xray_train_dir, tmp_path, progress=False, weights_path=tmp_path / "ddpm_unet.safetensors")
    assert not (tmp_path / "ddpm_unet.safetensors").exists() and not (tmp_path / "ddpm_unet.json").exists()


def test_a_run_without_out_dir_lands_in_the_runs_folder_from_any_working_directory(small_xray_folder, tmp_path):
    """The default run folder is RUNS_DIR/ddpm (PURIFYLAB_RUNS here), not runs/ under the working directory."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "from core.train.diffusion import DiffusionTrainConfig, train_diffusion\n"
        "config = DiffusionTrainConfig.from_preset('tiny', epochs=1, max_steps=1, eval_images=4)\n"
        f"train_diffusion(config, {str(small_xray_folder)!r}, progress=False)"
    )
    working_directory = tmp_path / "elsewhere"
    working_directory.mkdir()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "PURIFYLAB_RUNS": str(tmp_path / "runs"), "PURIFYLAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=working_directory, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert read_card(tmp_path / "runs" / "ddpm" / "ddpm_unet.safetensors")["training"]["preset"] == "tiny"
    assert not list(working_directory.iterdir())


def _mixed_with_the_test_cohort(xray_paths, xray_test_dir, root):
    """Real training X-rays and one test-cohort X-ray per class, in a folder of another name."""
    import os

    test_files = [sorted((xray_test_dir / cls).glob("*.jpeg"))[0] for cls in ("NORMAL", "PNEUMONIA")]
    for file in xray_paths["NORMAL"] + xray_paths["PNEUMONIA"] + test_files:
        (root / file.parent.name).mkdir(parents=True, exist_ok=True)
        os.link(file, root / file.parent.name / file.name)
    return root


def test_a_denoiser_never_trains_on_the_test_cohort(xray_paths, xray_test_dir, tmp_path):
    mixed = _mixed_with_the_test_cohort(xray_paths, xray_test_dir, tmp_path / "mixed")
    with pytest.raises(PurifyLabError, match=f"^--data {mixed} is the reporting cohort {xray_test_dir} in 2 of its 18 images"):
        train_diffusion(DiffusionTrainConfig.from_preset("tiny"), mixed, tmp_path / "run", progress=False, weights_path=tmp_path / "run" / "d.safetensors")
    assert not (tmp_path / "run").exists()


def test_a_new_run_removes_the_old_checkpoint_and_a_resume_keeps_the_runs_data(xray_train_dir, small_xray_folder, tmp_path):
    """A run (4 steps an epoch on 32 images); a resume on other data is refused; a new run in its folder,
    stopped before its first checkpoint (it diverges), leaves no checkpoint for --resume to continue."""
    out, weights = tmp_path / "run", tmp_path / "run" / "ddpm_unet.safetensors"
    train_diffusion(DiffusionTrainConfig.from_preset("tiny", epochs=1, max_steps=4), xray_train_dir, out, progress=False, weights_path=weights)
    resume = DiffusionTrainConfig.from_preset("tiny", epochs=2, max_steps=8, resume=True)
    with pytest.raises(PurifyLabError, match="^--resume: the run in .* was trained on data with hash [0-9a-f]{12}, but --data .* has hash"):
        train_diffusion(resume, small_xray_folder, out, progress=False, weights_path=weights)
    with pytest.raises(PurifyLabError, match="the run diverged"):
        train_diffusion(DiffusionTrainConfig.from_preset("tiny", lr=1e9, epochs=2), xray_train_dir, out, progress=False, weights_path=weights)
    assert not (out / "checkpoint").exists()
    with pytest.raises(PurifyLabError, match="holds no checkpoint to continue"):
        train_diffusion(DiffusionTrainConfig.from_preset("tiny", lr=1e9, epochs=2, resume=True), xray_train_dir, out, progress=False, weights_path=weights)


def test_a_denoiser_run_killed_inside_a_checkpoint_resumes_as_if_never_stopped(xray_train_dir, tmp_path, monkeypatch):
    """A kill in epoch 2's save, after its model file and before its EMA file, left epoch 2's weights
    beside epoch 1's counters, and --resume trained epoch 2 again on them. Resumed, the run's history
    and published weights are those of the same run never stopped."""
    from dataclasses import replace

    config = DiffusionTrainConfig.from_preset("tiny", epochs=2)
    whole = train_diffusion(config, xray_train_dir, tmp_path / "whole", progress=False, weights_path=tmp_path / "whole" / "ddpm_unet.safetensors")
    interrupt_writing(monkeypatch, "ema.safetensors", 2)  # killed in the second checkpoint's EMA write
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_diffusion(config, xray_train_dir, run, progress=False, weights_path=run / "ddpm_unet.safetensors")
    monkeypatch.undo()
    resumed = train_diffusion(replace(config, resume=True), xray_train_dir, run, progress=False, weights_path=run / "ddpm_unet.safetensors")

    def timeless(history: list[dict]) -> list[dict]:
        return [{key: value for key, value in record.items() if key != "seconds"} for record in history]

    assert timeless(resumed["history"]) == timeless(whole["history"]) and [record["epoch"] for record in resumed["history"]] == [1, 2]
    assert resumed["sha256"] == whole["sha256"]


def test_a_denoiser_run_of_any_preset_stays_in_its_run_folder_and_only_ship_copies_it_into_weights(small_xray_folder, tmp_path):
    """`train diffusion --preset cpu` (cut after its first step) wrote straight into weights/, where the
    shipped denoiser is: now it writes into --out, and only --ship copies the file and its card there."""
    import os
    import subprocess
    import sys

    from core.weights import sha256_of

    shipped = tmp_path / "weights"  # the shipped folder as the command sees it
    shipped.mkdir()
    env = {**os.environ, "PURIFYLAB_WEIGHTS": str(shipped), "PURIFYLAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    args = ["train", "diffusion", "--preset", "cpu", "--epochs", "1", "--max-minutes", "0.001", "--data", str(small_xray_folder), "--device", "cpu"]

    def purifylab(*more: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "core", *args, *more], capture_output=True, text=True, timeout=600, env=env)

    kept = purifylab("--out", str(tmp_path / "kept"))
    assert kept.returncode == 0, kept.stderr
    assert not list(shipped.iterdir())
    assert read_card(tmp_path / "kept" / "ddpm_unet.safetensors")["training"]["preset"] == "cpu"
    into_weights = purifylab("--out", str(tmp_path / "refused"), "--weights", str(shipped / "ddpm_unet.safetensors"))
    refusal = f"error: --weights {shipped} is the shipped weights folder; write into another folder (--ship copies the result into weights/)"
    assert into_weights.returncode == 2 and into_weights.stderr.strip().splitlines() == [refusal]
    assert not list(shipped.iterdir()) and not (tmp_path / "refused").exists()
    done = purifylab("--out", str(tmp_path / "shipped_run"), "--ship")
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in shipped.iterdir()) == ["ddpm_unet.json", "ddpm_unet.safetensors"]
    run_file = tmp_path / "shipped_run" / "ddpm_unet.safetensors"
    assert (shipped / "ddpm_unet.safetensors").read_bytes() == run_file.read_bytes()
    assert read_card(shipped / "ddpm_unet.safetensors") == read_card(run_file) and read_card(run_file)["sha256"] == sha256_of(shipped / "ddpm_unet.safetensors")
    unet, _ = load_shipped_unet("ddpm_unet", shipped)  # the purifiers load what --ship put there
    assert unet.config.sample_size == 128


def test_a_denoiser_run_interrupted_while_it_publishes_is_published_by_resume(small_xray_folder, tmp_path, monkeypatch, capsys):
    """A Ctrl-C while a finished run was published said "rerun with --resume", and --resume refused the run
    as finished, so it had to be trained again. --resume now publishes it from its checkpoint, as the run never
    interrupted did, when the file is missing or cut; once published whole, the run is refused as finished."""
    from core.cli import main
    from core.weights import sha256_of

    args = ["train", "diffusion", "--preset", "tiny", "--data", str(small_xray_folder), "--device", "cpu"]

    def purifylab(run, *more: str) -> tuple[int, str]:
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--out", str(run), *more])
        return int(exit_info.value.code or 0), capsys.readouterr().err

    assert purifylab(tmp_path / "whole")[0] == 0
    whole = read_card(tmp_path / "whole" / "ddpm_unet.safetensors")
    run = tmp_path / "run"
    weights = run / "ddpm_unet.safetensors"
    interrupt_writing(monkeypatch, weights.name)
    code, err = purifylab(run)
    monkeypatch.undo()
    assert (code, err.splitlines()[-1]) == (130, "interrupted: rerun the same command with --resume to continue from its last checkpoint"), err
    assert not weights.exists() and not weights.with_suffix(".json").exists()

    def timeless(history: list[dict]) -> list[dict]:
        return [{key: value for key, value in record.items() if key != "seconds"} for record in history]

    def published_by_resume() -> None:
        code, err = purifylab(run, "--resume")
        assert code == 0, err
        card = read_card(weights)
        assert card["sha256"] == sha256_of(weights) == whole["sha256"] and card["quality"] == whole["quality"]
        assert timeless(card["history"]) == timeless(whole["history"]) and card["epochs_completed"] == 1

    published_by_resume()
    weights.write_bytes(weights.read_bytes()[:100])  # a file cut short: its card no longer vouches for it
    published_by_resume()
    unet, _ = load_shipped_unet("ddpm_unet", run)
    assert unet.config.sample_size == 32
    code, err = purifylab(run, "--resume")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --resume: the run in") and "is finished (1 of 1 epochs)" in lines[0], err
