"""Cold-diffusion deblurring: the blur degradation, the three purifiers and the restoration training."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from interrupts import interrupt_writing

from core.errors import PurifyLabError
from core.io import load_image, to_model_input
from core.purifiers import create_purifier
from core.purifiers.base import parse_params
from core.purifiers.blur_degradation import BlurDegradation, BlurSchedule, gaussian_blur_variance
from core.purifiers.cold import (
    COLD_WEIGHTS_STEM,
    ColdBlurPurifier,
    ColdDirectPurifier,
    ColdReconConfig,
    ColdReconPurifier,
)
from core.purifiers.unet import build_unet, load_shipped_unet
from core.weights import WEIGHTS_DIR

SCHEDULE = BlurSchedule(levels=20, sigma_step=0.06)


def _xrays(xray_paths, size: int, count: int = 2) -> torch.Tensor:
    paths = xray_paths["NORMAL"][: count // 2] + xray_paths["PNEUMONIA"][: count - count // 2]
    return torch.cat([to_model_input(load_image(path), size) for path in paths])


@pytest.fixture
def tiny_unet():
    torch.manual_seed(0)
    return build_unet("tiny")


@pytest.fixture
def xrays(xray_paths) -> torch.Tensor:
    return _xrays(xray_paths, 32)


# ------------------------------------------------------------------------------------ degradation


def test_blur_levels_compose_into_one_blur_of_summed_variance(xray_paths):
    x = _xrays(xray_paths, 64)
    degrade = BlurDegradation(SCHEDULE)
    step_by_step = x
    for level in range(1, 13):
        step_by_step = gaussian_blur_variance(step_by_step, SCHEDULE.step_sigma(level) ** 2)
    torch.testing.assert_close(step_by_step, degrade(x, 12), atol=2e-5, rtol=0)
    # D(D(x, a), steps a+1..b) = D(x, b): continuing from a level matches blurring from scratch.
    continued = degrade(x, 12)
    for level in range(13, 21):
        continued = gaussian_blur_variance(continued, SCHEDULE.step_sigma(level) ** 2)
    torch.testing.assert_close(continued, degrade(x, 20), atol=2e-5, rtol=0)
    assert SCHEDULE.variance(20) == pytest.approx(sum(SCHEDULE.step_sigma(i) ** 2 for i in range(1, 21)))


def test_blur_removes_detail_monotonically_and_keeps_mean_and_range(xray_paths):
    x = _xrays(xray_paths, 64)
    degrade = BlurDegradation(SCHEDULE)
    assert torch.equal(degrade(x, 0), x)
    detail = [(degrade(x, t) - x).abs().mean().item() for t in (1, 5, 10, 20)]
    assert detail == sorted(detail) and detail[0] > 0
    blurred = degrade(x, 20)
    assert blurred.shape == x.shape and 0 <= blurred.min() and blurred.max() <= 1
    torch.testing.assert_close(blurred.mean(dim=(2, 3)), x.mean(dim=(2, 3)), atol=2e-3, rtol=0)


def test_per_image_levels_match_single_level_calls(xray_paths):
    x = _xrays(xray_paths, 32, count=4)
    degrade = BlurDegradation(SCHEDULE)
    levels = torch.tensor([3, 20, 3, 0])
    expected = torch.cat([degrade(x[i : i + 1], int(t)) for i, t in enumerate(levels)])
    torch.testing.assert_close(degrade(x, levels), expected)


def test_blur_level_outside_schedule_is_refused():
    with pytest.raises(PurifyLabError, match="blur level=21"):
        BlurDegradation(SCHEDULE)(torch.zeros(1, 1, 16, 16), 21)


# ------------------------------------------------------------------------------------- purifiers


def _purifiers(unet, depth: int = 20, steps: int | None = None):
    return [
        ColdBlurPurifier(parse_params(ColdBlurPurifier.config_type, {"depth": depth}), schedule=SCHEDULE),
        ColdDirectPurifier(parse_params(ColdDirectPurifier.config_type, {"depth": depth}), unet=unet, schedule=SCHEDULE),
        ColdReconPurifier(ColdReconConfig(depth=depth, steps=steps), unet=unet, schedule=SCHEDULE),
    ]


def test_purifiers_keep_shape_and_range_and_are_deterministic(tiny_unet, xrays):
    for purifier in _purifiers(tiny_unet, depth=10, steps=4):
        first, second = purifier.purify(xrays), purifier.purify(xrays, seed=123)
        assert first.shape == xrays.shape and first.dtype == torch.float32, purifier.name
        assert 0 <= first.min() and first.max() <= 1, purifier.name
        assert torch.equal(first, second), purifier.name  # no noise anywhere: the seed changes nothing
        assert not purifier.stochastic
    odd = xrays[:, :, :31, :29]  # the UNet needs even sides: padded for the call, cropped back
    assert _purifiers(tiny_unet)[1].purify(odd).shape == odd.shape


def test_differentiable_mode_matches_fast_mode_and_reaches_the_input(tiny_unet, xrays):
    for purifier in _purifiers(tiny_unet, depth=12, steps=3):
        x = xrays.clone().requires_grad_(True)
        out = purifier(x)
        (out * torch.linspace(0, 1, out.numel()).view_as(out)).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0, purifier.name
        torch.testing.assert_close(out.detach(), purifier.purify(xrays), atol=1e-6, rtol=0)
    assert not any(p.requires_grad for p in tiny_unet.parameters())  # the UNet stays frozen


def test_direct_and_recon_use_the_unet_and_recon_differs_from_blur(tiny_unet, xrays):
    blur, direct, recon = _purifiers(tiny_unet, depth=10)
    blurred = blur.purify(xrays)
    for purifier in (direct, recon):  # neither the blurred input nor the input itself (returned unpurified, it passed)
        assert not torch.allclose(purifier.purify(xrays), blurred) and not torch.allclose(purifier.purify(xrays), xrays, atol=1e-3)


def test_nfe_and_recon_levels(tiny_unet):
    blur, direct, recon = _purifiers(tiny_unet, depth=20)
    assert (blur.nfe(), direct.nfe(), recon.nfe()) == (0, 1, 20)
    assert recon.levels() == list(range(20, -1, -1))
    strided = ColdReconPurifier(ColdReconConfig(depth=20, steps=6), unet=tiny_unet, schedule=SCHEDULE)
    assert strided.nfe() == 6
    levels = strided.levels()
    assert levels[0] == 20 and levels[-1] == 0 and len(set(levels)) == 7 and levels == sorted(levels, reverse=True)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("cold_blur", {"depth": "0"}, r"depth=0 is outside the allowed range \[1, 20\]"),
        ("cold_blur", {"depth": "21"}, r"depth=21 is outside the allowed range \[1, 20\]"),
        ("cold_blur", {"depth": "deep"}, r"depth='deep' is not a valid int"),
        ("cold_blur", {"steps": "4"}, r"unknown parameter 'steps'"),
        ("cold_recon", {"depth": "5", "steps": "6"}, r"steps=6 is outside the allowed range \[1, 5\]"),
        ("cold_recon", {"steps": "0"}, r"steps=0 is outside the allowed range \[1, 20\]"),
    ],
)
def test_bad_parameters_give_one_line_errors(name, params, message):
    with pytest.raises(PurifyLabError, match=message) as caught:
        create_purifier(name, **params)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["cold_blur", "cold_direct", "cold_recon"])
def test_a_shipped_cold_purifier_refuses_an_image_of_another_size(name):
    """Its blur sigmas are pixels of a 128 px X-ray: `evaluate --classifier mnist_cnn --purifier cold_blur`
    blurred 28 px digits 4.6 times as wide and reported chance (0.10 against 0.94 unpurified) as the
    purifier's effect, where the ddpm family refuses the size."""
    purifier = create_purifier(name, depth=4)
    refusal = rf"^{name}: the shipped blur schedule is in pixels of 128 px images, got \(28, 28\); resize to 128$"
    with pytest.raises(PurifyLabError, match=refusal):
        purifier.purify(torch.rand(2, 1, 28, 28))
    assert purifier.purify(torch.rand(1, 1, 128, 128)).shape == (1, 1, 128, 128)


def test_depth_above_a_models_schedule_is_refused(tiny_unet):
    with pytest.raises(PurifyLabError, match=r"depth=9 is outside the allowed range \[1, 8\]"):
        ColdDirectPurifier(parse_params(ColdDirectPurifier.config_type, {"depth": 9}), unet=tiny_unet, schedule=BlurSchedule(8, 0.1))


def test_every_cold_setting_runs_one_shared_frozen_unet_with_the_output_of_its_own_load(xrays, tmp_path, monkeypatch):
    """Each cold_direct / cold_recon instance reloaded, re-hashed and held its own UNet (20 depths:
    +161 MiB); now they share the cached copy ddpm's loader keeps, which no instance's use changes."""
    from core.purifiers import cold
    from core.purifiers.diffusion import shared_shipped_unet
    from core.weights import save_weights

    torch.manual_seed(0)
    unet = build_unet("tiny", sample_size=32)  # shipped at the size it runs at: `xrays` are 32 px
    card = {"unet_size": "tiny", "unet_overrides": {"sample_size": 32}, "blur_schedule": SCHEDULE.to_dict()}
    card = save_weights(unet, tmp_path / f"{COLD_WEIGHTS_STEM}.safetensors", card)
    monkeypatch.setattr(cold, "WEIGHTS_DIR", tmp_path)
    direct, recon = create_purifier("cold_direct", depth=12), create_purifier("cold_recon", depth=12, steps=3)
    assert direct.unet is recon.unet is shared_shipped_unet(COLD_WEIGHTS_STEM, tmp_path)[0]
    assert [p.data_ptr() for p in direct.unet.parameters()] == [p.data_ptr() for p in recon.unet.parameters()]
    assert direct.loaded_weights() == recon.loaded_weights() == {f"{COLD_WEIGHTS_STEM}.safetensors": card["sha256"]}
    x = xrays.clone().requires_grad_(True)
    recon(x).sum().backward()  # a white-box pass through one instance leaves the shared network as loaded
    assert x.grad is not None and not direct.unet.training
    assert all(not p.requires_grad and p.grad is None and p.dtype == torch.float32 and p.device.type == "cpu" for p in direct.unet.parameters())
    for purifier in (direct, recon):  # the output a purifier with its own fresh load gives
        own_unet, _ = load_shipped_unet(COLD_WEIGHTS_STEM, weights_dir=tmp_path)
        assert torch.equal(purifier.purify(xrays), type(purifier)(purifier.config, unet=own_unet, schedule=SCHEDULE).purify(xrays)), purifier.name


# -------------------------------------------------------------------------------------- training


@pytest.fixture
def tiny_xray_folder(xray_paths, tmp_path) -> Path:
    """16 real X-rays in the class-per-folder layout (the seed-0 split gives 12 train / 2 val / 2 test)."""
    root = tmp_path / "xrays"
    for cls, paths in xray_paths.items():
        (root / cls).mkdir(parents=True)
        for path in paths:
            shutil.copy(path, root / cls / path.name)
    return root


def test_tiny_training_lowers_the_loss_and_ships_a_loadable_model(tiny_xray_folder, tmp_path, xrays):
    from core.train.cold import ColdTrainConfig, train_cold

    out = tmp_path / "run"
    card = train_cold(ColdTrainConfig.from_preset("tiny"), tiny_xray_folder, out, progress=False, weights_path=out / "cold_unet.safetensors")
    history = card["training"]["history"]
    assert len(history) == 3 and history[-1]["train_l1"] < history[0]["train_l1"]
    assert card["unet_size"] == "tiny" and card["blur_schedule"]["levels"] == 20
    assert set(card["quality"]["psnr_db"]) == {"blurred", "direct", "recon"}
    assert (out / "samples" / "epoch_003.png").is_file() and (out / "checkpoint" / "state.json").is_file()
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.bin"))  # safetensors + JSON only
    unet, loaded_card = load_shipped_unet(COLD_WEIGHTS_STEM, weights_dir=out)
    assert BlurSchedule.from_dict(loaded_card["blur_schedule"]) == SCHEDULE
    purified = ColdDirectPurifier(unet=unet, schedule=SCHEDULE).purify(xrays)
    assert purified.shape == xrays.shape


def test_training_config_errors_are_one_line():
    from core.train.cold import ColdTrainConfig

    with pytest.raises(PurifyLabError, match="crop_size=60 must be a multiple of 8"):
        ColdTrainConfig.from_preset("cpu", crop_size=60)
    with pytest.raises(PurifyLabError, match="unknown preset 'huge'"):
        ColdTrainConfig.from_preset("huge")
    assert ColdTrainConfig.from_preset("cpu", max_minutes=None).max_minutes == 45.0  # unset CLI options keep the preset


@pytest.mark.skipif(not (WEIGHTS_DIR / f"{COLD_WEIGHTS_STEM}.safetensors").is_file(), reason="no shipped cold_unet weights")
def test_shipped_model_direct_reconstruction_beats_the_blurred_input(shared_data):
    from core.data.loading import load_split
    from core.train.diffusion import psnr

    val = load_split(shared_data / "chest_xray_pneumonia" / "train", "val", 128, limit=16)
    clean = val.images.float().div(255.0)
    direct = create_purifier("cold_direct")
    blurred = create_purifier("cold_blur").purify(clean)
    restored = direct.purify(clean)
    gain = psnr(clean, restored) - psnr(clean, blurred)
    assert gain.mean() > 0.5 and (gain > 0).float().mean() >= 0.75
    assert (psnr(clean, restored) < 60).all()  # a reconstruction, not the input handed back (120 dB, clamped)


def test_resumed_training_continues_exactly_where_it_stopped(tiny_xray_folder, tmp_path):
    from core.train.cold import ColdTrainConfig, train_cold

    def run(folder: str, **overrides) -> dict:
        out = tmp_path / folder
        config = ColdTrainConfig.from_preset("tiny", **overrides)
        return train_cold(config, tiny_xray_folder, out, progress=False, weights_path=out / "cold_unet.safetensors")

    straight = run("straight", epochs=2)
    run("resumed", epochs=1)
    resumed = run("resumed", epochs=2, resume=True)
    losses = [[record["train_l1"] for record in card["training"]["history"]] for card in (straight, resumed)]
    assert len(losses[1]) == 2 and losses[0] == losses[1]
    assert straight["quality"] == resumed["quality"]


def test_a_cold_run_never_trains_on_the_test_cohort_and_resumes_only_on_its_own_data(tiny_xray_folder, xray_test_dir, tmp_path):
    import os

    from core.train.cold import ColdTrainConfig, train_cold

    mixed = tmp_path / "mixed"
    shutil.copytree(tiny_xray_folder, mixed)
    for cls in ("NORMAL", "PNEUMONIA"):
        test_file = sorted((xray_test_dir / cls).glob("*.jpeg"))[0]
        os.link(test_file, mixed / cls / test_file.name)
    out = tmp_path / "run"
    with pytest.raises(PurifyLabError, match=f"^--data {mixed} is the reporting cohort {xray_test_dir} in 2 of its 18 images"):
        train_cold(ColdTrainConfig.from_preset("tiny"), mixed, out, progress=False, weights_path=out / "cold_unet.safetensors")
    assert not out.exists()
    train_cold(ColdTrainConfig.from_preset("tiny", epochs=1), tiny_xray_folder, out, progress=False, weights_path=out / "cold_unet.safetensors")
    other = tmp_path / "other"
    shutil.copytree(tiny_xray_folder, other)
    next((other / "NORMAL").iterdir()).unlink()
    with pytest.raises(PurifyLabError, match="^--resume: the run in .* was trained on data with hash [0-9a-f]{12}, but --data .* has hash"):
        train_cold(ColdTrainConfig.from_preset("tiny", epochs=2, resume=True), other, out, progress=False, weights_path=out / "cold_unet.safetensors")


def test_a_new_cold_run_stopped_before_its_first_checkpoint_leaves_none_to_resume(tiny_xray_folder, tmp_path):
    """As after Ctrl-C or a kill: a run (seed 7) started over an old one in its folder, stopped in its
    first (long) epoch; the old run's checkpoint must not be left for --resume to continue."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from core.train.cold import ColdTrainConfig, train_cold

    out = tmp_path / "run"
    train_cold(ColdTrainConfig.from_preset("tiny", epochs=1), tiny_xray_folder, out, progress=False, weights_path=out / "cold_unet.safetensors")
    assert (out / "checkpoint" / "state.json").is_file()
    code = (
        "from core.train.cold import ColdTrainConfig, train_cold\n"
        f"train_cold(ColdTrainConfig.from_preset('tiny', seed=7, epoch_images=10_000_000), {str(tiny_xray_folder)!r}, {str(out)!r}, progress=False)"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 300
        while '"seed": 7,' not in (out / "config.json").read_text():  # the new run's config, written after its data loaded
            assert process.poll() is None and time.time() < deadline, process.stderr.read() if process.poll() is not None else "timed out"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert not (out / "checkpoint").exists()
    with pytest.raises(PurifyLabError, match="holds no checkpoint to continue"):
        train_cold(ColdTrainConfig.from_preset("tiny", seed=7, epoch_images=10_000_000, resume=True), tiny_xray_folder, out, progress=False)


def test_a_cold_run_of_any_preset_stays_in_its_run_folder_and_only_ship_copies_it_into_weights(tiny_xray_folder, tmp_path):
    """`train cold --preset cpu` (cut after its first step) wrote straight into weights/cold_unet.safetensors:
    now it writes into --out; --ship copies the file and its card there, never from --preset tiny."""
    import os
    import subprocess
    import sys

    from core.weights import read_card, sha256_of

    shipped = tmp_path / "weights"  # the shipped folder as the command sees it
    shipped.mkdir()
    env = {**os.environ, "PURIFYLAB_WEIGHTS": str(shipped), "PURIFYLAB_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}

    def purifylab(preset: str, *more: str) -> subprocess.CompletedProcess:
        args = ["train", "cold", "--preset", preset, "--epochs", "1", "--max-minutes", "0.001", "--data", str(tiny_xray_folder), "--device", "cpu"]
        return subprocess.run([sys.executable, "-m", "core", *args, *more], capture_output=True, text=True, timeout=600, env=env)

    kept = purifylab("cpu", "--out", str(tmp_path / "kept"))
    assert kept.returncode == 0, kept.stderr
    assert not list(shipped.iterdir())
    assert read_card(tmp_path / "kept" / f"{COLD_WEIGHTS_STEM}.safetensors")["training_config"]["preset"] == "cpu"
    tiny = purifylab("tiny", "--out", str(tmp_path / "tiny"), "--ship")
    assert tiny.returncode == 2 and "a --preset tiny test run must never replace a shipped model" in tiny.stderr and len(tiny.stderr.strip().splitlines()) == 1
    assert not list(shipped.iterdir()) and not (tmp_path / "tiny").exists()
    done = purifylab("cpu", "--out", str(tmp_path / "shipped_run"), "--ship")
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in shipped.iterdir()) == [f"{COLD_WEIGHTS_STEM}.json", f"{COLD_WEIGHTS_STEM}.safetensors"]
    run_file = tmp_path / "shipped_run" / f"{COLD_WEIGHTS_STEM}.safetensors"
    assert (shipped / run_file.name).read_bytes() == run_file.read_bytes()
    assert read_card(shipped / run_file.name) == read_card(run_file) and read_card(run_file)["sha256"] == sha256_of(shipped / run_file.name)
    unet, card = load_shipped_unet(COLD_WEIGHTS_STEM, weights_dir=shipped)  # the purifiers load what --ship put there
    assert card["training_config"]["preset"] == "cpu" and unet.config.sample_size == 128


def test_a_resumed_cold_run_interrupted_while_it_publishes_is_published_by_the_next_resume(tiny_xray_folder, tmp_path, monkeypatch):
    """The card in the folder is epoch 1's, published whole before the run was resumed for a second epoch
    whose publish a Ctrl-C cut: --resume refused the run as finished. It now publishes the finished
    checkpoint, as the run never interrupted did; once that is in place, the run is refused as finished."""

    from core.train.cold import ColdTrainConfig, train_cold
    from core.weights import read_card, sha256_of

    def run(folder: str, **overrides) -> dict:
        out = tmp_path / folder
        return train_cold(ColdTrainConfig.from_preset("tiny", **overrides), tiny_xray_folder, out, progress=False, weights_path=out / "cold_unet.safetensors")

    straight = run("straight", epochs=2)
    run("run", epochs=1)
    weights = tmp_path / "run" / f"{COLD_WEIGHTS_STEM}.safetensors"
    interrupt_writing(monkeypatch, weights.name)  # as a Ctrl-C landing in the publish ends the process
    with pytest.raises(KeyboardInterrupt):
        run("run", epochs=2, resume=True)
    monkeypatch.undo()
    assert read_card(weights)["training"]["epochs_completed"] == 1  # whole, but older than the checkpoint of epoch 2
    resumed = run("run", epochs=2, resume=True)
    assert resumed["sha256"] == sha256_of(weights) == straight["sha256"] and resumed["quality"] == straight["quality"]
    assert resumed["training"]["epochs_completed"] == 2 and read_card(weights) == resumed
    with pytest.raises(PurifyLabError, match=r"^--resume: the run in .* is finished \(2 of 2 epochs\)"):
        run("run", epochs=2, resume=True)
