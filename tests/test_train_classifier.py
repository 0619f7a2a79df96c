"""Classifier training: a short real run lowers the loss, resume, distillation, SEViT heads, PGD, TRADES, config checks."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from interrupts import interrupt_writing
from torch import nn

from core.attacks import AttackConfig, create_attack
from core.errors import PurifyLabError
from core.models import create_classifier
from core.train.classifier import (
    TrainConfig,
    _fit_calibration,
    _loss,
    augment_batch,
    noise_blur_batch,
    preset,
    purified_half_batch,
    train_classifier,
)


def _history(run_dir) -> list[dict]:
    return json.loads((run_dir / "history.json").read_text())


def test_short_cpu_run_on_real_xrays_lowers_the_loss(xray_train_dir, tmp_path):
    config = preset("tiny", "substitute", epochs=6, augment=False, lr=3e-3)
    card = train_classifier(config, xray_train_dir, tmp_path, progress=False)
    losses = [epoch["train_loss"] for epoch in _history(tmp_path)]
    assert losses[-1] < 0.8 * losses[0], losses
    # the shipped file and its card: fp16 safetensors, val metrics measured on it, resolved config beside it
    assert (tmp_path / "substitute.safetensors").is_file()
    assert card["storage_dtype"] == "float16" and card["training_kind"] == "clean-trained"
    assert card["val_metrics"]["n"] == 64 and 0 <= card["val_metrics"]["balanced_accuracy"] <= 1
    assert card["data"]["split_seed"] == 0 and len(card["data"]["data_hash"]) == 64
    assert card["data"]["split"].startswith("deduplicated; by patient")
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 6
    reloaded = create_classifier("substitute", weights=tmp_path / "substitute.safetensors")
    assert reloaded.card["sha256"] == card["sha256"]
    # calibration chosen on val and applied on load; figures reported on the separate test cohort
    calibration = card["calibration"]
    assert calibration["temperature"] > 0 and 0 < calibration["threshold"] < 1 and calibration["fitted_on"].startswith("val")
    assert (reloaded.temperature, reloaded.threshold) == (calibration["temperature"], calibration["threshold"])
    assert card["val_metrics"]["data"]["split"] == "val"
    assert card["test_metrics"]["data"]["split"] == "all" and card["test_metrics"]["data"]["folder"].endswith("chest_xray_pneumonia/test")
    assert 0 <= card["test_metrics"]["ece"] <= 1 and card["test_metrics"]["specificity"] is not None


def test_acquisition_shift_augmentation_stays_in_range_and_varies(xray_train_dir):
    from core.data.loading import load_split

    images = load_split(xray_train_dir, "train", 64, limit=16).floats()
    config = preset("cpu", "resnet")
    assert config.crop_area < 1 and config.gamma > 0 and config.noise > 0
    augmented = augment_batch(images, config, torch.Generator().manual_seed(0))
    again = augment_batch(images, config, torch.Generator().manual_seed(0))
    assert augmented.shape == images.shape and augmented.dtype == torch.float32
    assert 0 <= float(augmented.min()) and float(augmented.max()) <= 1
    assert torch.equal(augmented, again)  # seeded: a resumed run sees the same augmentations
    per_image_change = (augmented - images).abs().mean(dim=(1, 2, 3))
    assert (per_image_change > 0.01).all()


def test_resume_continues_from_the_checkpoint(xray_train_dir, tmp_path):
    config = preset("tiny", "vit", epochs=1)
    train_classifier(config, xray_train_dir, tmp_path, progress=False)
    train_classifier(replace(config, epochs=2), xray_train_dir, tmp_path, progress=False, resume=True)
    history = _history(tmp_path)
    assert [epoch["epoch"] for epoch in history] == [1, 2]
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1 and state["step"] == 8


def test_optimizer_state_round_trips_without_pickle(tmp_path):
    from core.train.checkpoint import load_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.rand(4, 3)).sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path / "checkpoint", model, optimizer, {"epoch": 0})
    restored = torch.optim.AdamW(model.parameters(), lr=0.5)
    assert load_checkpoint(tmp_path / "checkpoint", torch.nn.Linear(3, 2), restored)["epoch"] == 0
    assert restored.param_groups[0]["lr"] == 0.1
    assert not list(tmp_path.rglob("*.pt")) and not list(tmp_path.rglob("*.bin"))
    for before, after in zip(optimizer.state.values(), restored.state.values(), strict=True):
        assert torch.equal(before["exp_avg_sq"], after["exp_avg_sq"])


@pytest.mark.parametrize("model", ["student_cnn", "sevit", "resnet_at", "resnet_smooth"])
def test_each_training_mode_runs_and_says_what_it_is(xray_train_dir, tmp_path, model):
    config = preset("tiny", model, epochs=1, max_batches_per_epoch=2)
    card = train_classifier(config, xray_train_dir, tmp_path, progress=False)
    kind = card["training_kind"]
    expected = {
        "student_cnn": "distilled from vit",
        "sevit": "frozen vit",
        "resnet_at": "PGD adversarial",
        "resnet_smooth": "under Gaussian noise of std 0.25 (randomized smoothing)",
    }[model]
    assert expected in kind
    assert card["val_metrics"]["n"] == 64
    if model == "resnet_smooth":  # calibrated and measured under the noise it reads through
        assert card["reads_through"] == {"purifier": "gaussian", "params": {"sigma": 0.25}}
        assert "read through gaussian" in card["calibration"]["fitted_on"]


def _train_tiny_through_the_cli(model: str, options: list[str], data, run) -> dict:
    """`purifylab train classifier --preset tiny --epochs 1` with `options` on real X-rays; the card it wrote."""
    from core.cli import main

    args = ["train", "classifier", "--model", model, "--preset", "tiny", "--epochs", "1", *options]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--data", str(data), "--out", str(run), "--no-progress", "--device", "cpu"])
    assert exit_info.value.code == 0
    return json.loads((run / f"{model}.json").read_text())


def test_cli_smoothing_sigma_sets_the_noise_the_model_trains_and_is_calibrated_under(xray_train_dir, tmp_path, capsys):
    card = _train_tiny_through_the_cli("resnet_smooth", ["--smoothing-sigma", "0.5"], xray_train_dir, tmp_path / "run")
    assert card["training_config"]["smoothing_sigma"] == 0.5 and "std 0.5 (randomized smoothing)" in card["training_kind"]
    assert card["reads_through"] == {"purifier": "gaussian", "params": {"sigma": 0.5}}
    assert '"val_metrics"' in capsys.readouterr().out


def test_cli_image_size_sets_the_resolution_the_model_trains_and_is_measured_at(xray_train_dir, tmp_path):
    card = _train_tiny_through_the_cli("substitute", ["--image-size", "48"], xray_train_dir, tmp_path / "run")
    assert card["training_config"]["image_size"] == card["image_size"] == 48


def test_adversarial_budget_ramps_up_and_the_best_epoch_is_a_full_budget_one(xray_train_dir, tmp_path):
    config = preset("tiny", "resnet_at", epochs=3, max_batches_per_epoch=2, adversarial_warmup_epochs=2)
    card = train_classifier(config, xray_train_dir, tmp_path, progress=False)
    budgets = [epoch["adversarial_eps"] for epoch in _history(tmp_path)]
    assert budgets[0] < budgets[1] == budgets[2] == pytest.approx(config.adversarial_eps)
    assert card["selected_epoch"] == 3  # the only epoch trained wholly at the full budget (epoch 2 ends the ramp)


def test_trades_loss_is_clean_cross_entropy_plus_beta_times_kl_to_the_tpgd_example():
    """TRADES written out by hand on a seeded linear model: CE(f(x), y) + beta * KL(f(x) || f(x')),
    x' from TPGD, the adversary that maximises that KL within the L-inf ball."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    x, labels = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 1, 0])
    attack = create_attack(model, AttackConfig(name="tpgd", eps=0.03, alpha=0.01, steps=3, seed=0))
    config = TrainConfig(model="resnet_at", adversarial_eps=0.03, trades_beta=6.0)
    loss = _loss(model, model, None, attack, x, labels, None, config)

    adversarial = attack(x, None)  # the same draw (seeded per call); label-free, as TRADES defines it
    assert (adversarial - x).abs().max() <= 0.03 + 1e-6
    clean, attacked = model(x), model(adversarial)
    assert (clean.argmax(1) != labels).any()  # a misread image is still perturbed, unlike the labelled tpgd attack
    assert ((adversarial - x).abs().flatten(1).amax(1) > 0).all()
    kl = (F.softmax(clean, 1) * (F.log_softmax(clean, 1) - F.log_softmax(attacked, 1))).sum(1).mean()
    assert kl > 0
    assert loss.item() == pytest.approx((F.cross_entropy(clean, labels) + 6.0 * kl).item(), rel=1e-5)


def test_robust_distillation_pulls_the_attacked_student_to_the_clean_teacher():
    """ARD written out by hand on seeded linear models: T^2 KL(teacher(x) / T || student(x') / T), x'
    the student's PGD example and the teacher reading the clean x; with a clean share w, (1 - w) times
    that plus w times the same KL on the student's clean reading."""
    torch.manual_seed(0)
    student, teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)), nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    x, labels = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 1, 0])
    attack = create_attack(student, AttackConfig(name="pgd", eps=0.03, alpha=0.01, steps=3, seed=0))
    adversarial = attack(x, labels)  # seeded per call: the draw _loss gets
    assert not torch.equal(adversarial, x)

    @torch.no_grad()
    def kl(student_input: torch.Tensor, temperature: float) -> float:
        targets = F.softmax(teacher(x) / temperature, 1)
        return float((targets * (targets.log() - F.log_softmax(student(student_input) / temperature, 1))).sum(1).mean()) * temperature**2

    config = TrainConfig(model="resnet_at", adversarial_eps=0.03, distill_from="resnet", temperature=2.0)
    assert _loss(student, student, teacher, attack, x, labels, None, config).item() == pytest.approx(kl(adversarial, 2.0), rel=1e-5)
    assert kl(adversarial, 2.0) != pytest.approx(kl(x, 2.0), rel=1e-3)  # the two readings differ: the test can tell them apart
    mixed = replace(config, distill_clean_weight=0.25)
    expected = 0.75 * kl(adversarial, 2.0) + 0.25 * kl(x, 2.0)
    assert _loss(student, student, teacher, attack, x, labels, None, mixed).item() == pytest.approx(expected, rel=1e-5)


def test_cli_distill_clean_weight_trains_a_robust_student_and_says_so(xray_train_dir, tmp_path):
    options = ["--distill-from", "resnet", "--distill-clean-weight", "0.5"]
    card = _train_tiny_through_the_cli("resnet_at", options, xray_train_dir, tmp_path / "run")
    assert card["training_config"]["distill_clean_weight"] == 0.5
    assert "robustly (ARD: attacked student, clean teacher) distilled from resnet (T=1.0, clean share 0.5)" in card["training_kind"]


def test_cli_trades_beta_trains_with_trades_and_says_so(xray_train_dir, tmp_path):
    card = _train_tiny_through_the_cli("resnet_at", ["--trades-beta", "6"], xray_train_dir, tmp_path / "run")
    assert card["training_config"]["trades_beta"] == 6.0 and card["training_kind"].startswith("TRADES adversarial training (beta 6.0, L-inf eps 0.03")


def test_noise_augment_is_recorded_in_the_card(xray_train_dir, tmp_path):
    config = preset("tiny", "student_cnn", epochs=1, max_batches_per_epoch=1, noise_augment=0.1)
    card = train_classifier(config, xray_train_dir, tmp_path, progress=False)
    assert "purifier-aware: noise-augmented" in card["training_kind"]


def test_purified_half_reads_about_half_the_batch_through_the_purifier():
    from core.purifiers import create_purifier

    x = torch.rand(64, 1, 16, 16)
    blur = create_purifier("blur", sigma=1.5)
    out = purified_half_batch(x, blur, torch.Generator().manual_seed(0), seed=0)
    purified = blur.purify(x)
    is_purified = (out - purified).abs().flatten(1).amax(1) < 1e-6
    is_clean = (out - x).abs().flatten(1).amax(1) == 0
    assert (is_purified ^ is_clean).all() and 16 <= int(is_purified.sum()) <= 48


def test_purifier_aware_fine_tuning_is_recorded_in_the_card(xray_train_dir, tmp_path):
    through = {"purifier": "blur", "params": {"sigma": 1.5}}
    config = preset("tiny", "substitute", epochs=1, max_batches_per_epoch=1, purified_half=through)
    card = train_classifier(config, xray_train_dir, tmp_path, progress=False)
    assert card["training_kind"] == "purifier-aware: half of each batch read through blur {'sigma': 1.5}"
    assert card["training_config"]["purified_half"] == through


def test_augmentation_is_small_and_keeps_the_side():
    x = torch.zeros(8, 1, 32, 32)
    x[..., :16] = 1.0  # bright left half: a flip would move it to the right
    out = augment_batch(x, TrainConfig(), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert (out[..., :16].mean((1, 2, 3)) > out[..., 16:].mean((1, 2, 3)) + 0.5).all()
    still = TrainConfig(rotation_degrees=0, shift=0, scale=0, brightness=0, contrast=0)
    assert torch.allclose(augment_batch(x, still, torch.Generator()), x, atol=1e-5)


def test_noise_blur_degrades_about_half_the_batch():
    x = torch.rand(64, 1, 16, 16)
    out = noise_blur_batch(x, 0.1, torch.Generator().manual_seed(0))
    changed = (out - x).abs().flatten(1).amax(1) > 1e-6
    assert 16 <= int(changed.sum()) <= 48 and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(epochs=0), "epochs"),
        (dict(adversarial_eps=1.0), "eps"),
        (dict(noise_augment=2.0), "noise_augment"),
        (dict(smoothing_sigma=0.0), "smoothing_sigma"),
        (dict(purified_half={"purifier": "blur"}), "purified_half"),
        (dict(adversarial_warmup_epochs=5, epochs=3), "adversarial_warmup_epochs"),
        (dict(trades_beta=6.0), "trades_beta"),
        (dict(distill_clean_weight=0.5), "distill_clean_weight"),
        (dict(colour=True), "unknown"),
    ],
)
def test_bad_settings_are_refused(overrides, message):
    with pytest.raises(PurifyLabError, match=message):
        preset("tiny", "vit", **overrides)


def test_unknown_preset_and_model_are_refused():
    with pytest.raises(PurifyLabError, match="preset"):
        preset("huge", "vit")
    with pytest.raises(PurifyLabError, match="classifier"):
        preset("cpu", "densenet")


def test_ten_class_colour_training_on_cifar(shared_data, tmp_path):
    """The CIFAR-10 re-run's classifier: RGB in, ten classes out, class names from the archive in the card."""
    data = shared_data / "cifar10_test_jpeg_q75" / "cifar10_test_jpegs.tar.gz"
    config = preset("tiny", "cifar10_cnn", epochs=1, max_batches_per_epoch=2, limit=200)
    card = train_classifier(config, data, tmp_path, progress=False)
    assert card["architecture"]["in_channels"] == 3 and card["architecture"]["num_classes"] == 10
    assert card["classes"][0] == "airplane" and len(card["val_metrics"]["sensitivity"]) == 10
    assert card["data"]["split"].startswith("deduplicated; by image")  # CIFAR-10 has no patients
    assert card["input"].startswith("float32 (N, 3, S, S)")
    model = create_classifier("cifar10_cnn", weights=tmp_path / "cifar10_cnn.safetensors")
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_calibration_reads_the_model_as_at_inference_whatever_mode_training_left(xray_train_dir):
    """A model handed over in train mode (batch-norm on batch statistics) must calibrate exactly as
    the same model in eval mode: the shipped temperature and threshold are fitted on what users see."""
    from core.data.loading import load_split

    torch.manual_seed(0)
    model = create_classifier("resnet", pretrained=False, image_size=32, widths=(4, 8, 8, 8), layers=(1, 1, 1, 1))
    val = load_split(xray_train_dir, "val", 32, limit=48)
    in_train_mode = _fit_calibration(model.train(), val)
    in_eval_mode = _fit_calibration(model.eval(), val)
    assert in_train_mode == in_eval_mode and not model.training


def _cli(args: list[str], capsys) -> tuple[int, str]:
    from core.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0), capsys.readouterr().err


def _one_line(code: int, err: str, fragment: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


def _strict_json(text: str):
    """JSON as other tools read it: a bare NaN or Infinity is an error, not a number."""

    def refuse(constant: str):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, xray_train_dir):
    """One epoch of the tiny substitute through the CLI (64 train / 64 val images): finished, checkpointed."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    _train_tiny_through_the_cli("substitute", ["--threads", "1"], xray_train_dir, run)
    return run


def test_resume_refuses_other_settings_another_model_a_finished_run_and_no_checkpoint(tiny_run, xray_train_dir, tmp_path, capsys):
    saved = (tiny_run / "config.json").read_text()
    resume = ["--preset", "tiny", "--data", str(xray_train_dir), "--no-progress", "--device", "cpu", "--resume"]
    cases = {
        "other settings (lr 0.003 -> 0.5)": ["--model", "substitute", "--out", str(tiny_run), "--epochs", "2", "--lr", "0.5"],
        "(image_size 32 -> 64)": ["--model", "substitute", "--out", str(tiny_run), "--epochs", "2", "--image-size", "64"],
        "model 'substitute' -> 'student_cnn'": ["--model", "student_cnn", "--out", str(tiny_run), "--epochs", "2"],
        "is finished (1 of 1 epochs); raise --epochs": ["--model", "substitute", "--out", str(tiny_run), "--epochs", "1"],
        "holds no checkpoint to continue": ["--model", "substitute", "--out", str(tmp_path / "empty")],
    }
    for message, args in cases.items():
        _one_line(*_cli(["train", "classifier", *args, *resume], capsys), message)
    assert (tiny_run / "config.json").read_text() == saved and not (tmp_path / "empty").exists()
    assert _strict_json((tiny_run / "history.json").read_text())[0]["epoch"] == 1


def test_the_reporting_cohort_is_never_trained_or_calibrated_on(tiny_run, xray_test_dir, tmp_path, capsys):
    import os
    import shutil

    copy = tmp_path / "renamed_test"  # the same images elsewhere: the same data hash
    shutil.copytree(xray_test_dir, copy, copy_function=os.link)
    for data in (xray_test_dir, copy):
        train = ["train", "classifier", "--model", "substitute", "--preset", "tiny", "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu"]
        _one_line(*_cli([*train, "--data", str(data)], capsys), "is the reporting cohort")
        assert not (tmp_path / "run" / "substitute.safetensors").exists()
    weights = tiny_run / "substitute.safetensors"
    before = weights.with_suffix(".json").read_text()
    _one_line(
        *_cli(["train", "calibrate", "--model", "substitute", "--weights", str(weights), "--data", str(xray_test_dir)], capsys), "is the reporting cohort"
    )
    assert weights.with_suffix(".json").read_text() == before


def test_a_diverged_run_stops_in_one_line_and_publishes_nothing(xray_train_dir, tmp_path, capsys):
    args = ["train", "classifier", "--model", "vit", "--preset", "tiny", "--lr", "1e9", "--threads", "1", "--no-progress", "--device", "cpu"]
    _one_line(*_cli([*args, "--data", str(xray_train_dir), "--out", str(tmp_path / "run")], capsys), "the run diverged and nothing was published")
    assert not any((tmp_path / "run" / name).exists() for name in ("vit.safetensors", "vit.json", "history.json"))


def test_data_of_the_wrong_kind_is_refused_in_one_line(tiny_run, shared_data, xray_train_dir, tmp_path, capsys):
    train = ["train", "classifier", "--preset", "tiny", "--out", str(tmp_path / "run"), "--no-progress", "--device", "cpu"]
    mnist = shared_data / "mnist" / "t10k-images-idx3-ubyte.gz"
    npz = shared_data / "pneumoniamnist_28" / "pneumoniamnist.npz"
    _one_line(*_cli([*train, "--model", "mnist_cnn", "--data", str(xray_train_dir)], capsys), "answers 10 classes, but --data")
    _one_line(*_cli([*train, "--model", "vit", "--data", str(mnist)], capsys), "answers 2 classes, but --data")
    code, err = _cli([*train, "--model", "substitute", "--data", str(npz)], capsys)
    _one_line(code, err, "holds splits of its own (train, val)")
    assert "--split" not in err
    calibrate = ["train", "calibrate", "--model", "substitute", "--weights", str(tiny_run / "substitute.safetensors"), "--data", str(mnist)]
    _one_line(*_cli(calibrate, capsys), "has 10")
    _one_line(*_cli(["train", "calibrate", "--model", "mnist_cnn"], capsys), "mnist_cnn has 10")
    assert not (tmp_path / "run").exists()


def test_a_soup_of_limited_runs_is_calibrated_and_measured_on_what_its_card_says(tiny_run, xray_train_dir, tmp_path, capsys):
    member = tiny_run / "substitute.safetensors"
    args = ["train", "soup", "--model", "substitute", "--weights", str(member), "--weights", str(member), "--data", str(xray_train_dir)]
    code, err = _cli([*args, "--out", str(tmp_path / "soup"), "--device", "cpu"], capsys)
    assert code == 0, err
    card = json.loads((tmp_path / "soup" / "substitute.json").read_text())
    assert card["data"]["val_images"] == card["val_metrics"]["n"] == 64 and card["calibration"]["fitted_on"].startswith("val (64 images")
    member_card = json.loads(member.with_suffix(".json").read_text())
    assert [entry["training_minutes"] for entry in card["soup_of"]] == [member_card["training_minutes"]] * 2  # numbers, as on every card


def test_a_run_without_out_dir_lands_in_the_runs_folder_from_any_working_directory(xray_train_dir, tmp_path):
    """The default run folder is RUNS_DIR/<model> (PURIFYLAB_RUNS here), not runs/ under the working directory."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "from core.train.classifier import preset, train_classifier\n"
        f"train_classifier(preset('tiny', 'substitute', epochs=1, threads=1), {str(xray_train_dir)!r}, progress=False)"
    )
    working_directory = tmp_path / "elsewhere"
    working_directory.mkdir()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "PURIFYLAB_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], cwd=working_directory, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "runs" / "substitute" / "config.json").read_text())["model"] == "substitute"
    assert (tmp_path / "runs" / "substitute" / "substitute.safetensors").is_file()
    assert not list(working_directory.iterdir())


def _folder_of(tmp_path, name: str, files) -> str:
    """`files` (real X-rays) linked into tmp_path/name/CLASS/, the class being each file's folder name."""
    import os

    root = tmp_path / name
    for file in files:
        (root / file.parent.name).mkdir(parents=True, exist_ok=True)
        os.link(file, root / file.parent.name / file.name)
    return str(root)


def test_a_new_run_removes_the_old_checkpoint_so_a_resume_cannot_continue_the_old_run(tiny_run, xray_train_dir, tmp_path, capsys):
    """--overwrite with other settings, stopped before its first checkpoint (here: it diverges in epoch 1):
    the old run's checkpoint, best weights and history are gone, so --resume has nothing to continue."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    args = ["train", "classifier", "--model", "substitute", "--preset", "tiny", "--epochs", "2", "--seed", "7", "--lr", "1e9", "--threads", "1"]
    args += ["--data", str(xray_train_dir), "--out", str(run), "--no-progress", "--device", "cpu"]
    _one_line(*_cli([*args, "--overwrite"], capsys), "the run diverged")
    assert not any((run / name).exists() for name in ("checkpoint", "selected.safetensors", "history.json"))
    _one_line(*_cli([*args, "--resume"], capsys), "holds no checkpoint to continue")


def test_resume_and_calibrate_refuse_other_data_than_the_runs(tiny_run, xray_paths, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    other = _folder_of(tmp_path, "other", xray_paths["NORMAL"] + xray_paths["PNEUMONIA"])
    history, card = (run / "history.json").read_text(), (run / "substitute.json").read_text()
    resume = ["train", "classifier", "--model", "substitute", "--preset", "tiny", "--epochs", "2", "--threads", "1", "--resume"]
    _one_line(*_cli([*resume, "--data", other, "--out", str(run), "--no-progress", "--device", "cpu"], capsys), "was trained on data with hash")
    calibrate = ["train", "calibrate", "--model", "substitute", "--weights", str(run / "substitute.safetensors"), "--data", other, "--device", "cpu"]
    _one_line(*_cli(calibrate, capsys), "is not the data substitute.safetensors was trained on")
    assert (run / "history.json").read_text() == history and (run / "substitute.json").read_text() == card


def test_resume_calibrate_and_soup_refuse_other_data_in_the_same_words(tiny_run, xray_paths, tmp_path, capsys):
    """One rule (core.train.runs.check_same_data) for every step that goes on from a run: calibrate had
    its own comparison in other words, and soup refused only after writing an uncalibrated soup."""
    import shutil

    from core.data.splits import data_hash_of_folder

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    weights = run / "substitute.safetensors"
    other = _folder_of(tmp_path, "other", xray_paths["NORMAL"] + xray_paths["PNEUMONIA"])
    trained_on = json.loads(weights.with_suffix(".json").read_text())["data"]["data_hash"]
    same = f" was trained on data with hash {trained_on[:12]}, but --data {other} has hash {data_hash_of_folder(other)[:12]}; "
    resume = ["train", "classifier", "--model", "substitute", "--preset", "tiny", "--epochs", "2", "--threads", "1", "--no-progress"]
    resume += ["--resume", "--out", str(run)]
    calibrate = ["train", "calibrate", "--model", "substitute", "--weights", str(weights)]
    soup = ["train", "soup", "--model", "substitute", "--weights", str(weights), "--weights", str(weights), "--out", str(tmp_path / "soup")]
    for command, trained in ((resume, f"--resume: the run in {run}"), (calibrate, weights.name), (soup, str(weights))):
        _one_line(*_cli([*command, "--data", other, "--device", "cpu"], capsys), f"error: {trained}{same}")
    assert not (tmp_path / "soup" / "substitute.safetensors").exists()


def test_soup_refuses_a_member_trained_on_other_data_before_writing(tiny_run, xray_paths, xray_train_dir, tmp_path, capsys):
    """A soup is calibrated on its first member's val split, which a member trained on other data may
    have learnt from: that member is named, and no soup is written."""
    import shutil

    from core.data.splits import data_hash_of_folder

    other = _folder_of(tmp_path, "other", xray_paths["NORMAL"] + xray_paths["PNEUMONIA"])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(tiny_run / f"substitute{suffix}", elsewhere / f"substitute{suffix}")
    card_file = elsewhere / "substitute.json"
    card = json.loads(card_file.read_text())
    other_hash = data_hash_of_folder(other)
    card["data"] = {**card["data"], "folder": "other", "data_hash": other_hash, "listed_hash": other_hash}
    card_file.write_text(json.dumps(card))
    member = elsewhere / "substitute.safetensors"
    soup = ["train", "soup", "--model", "substitute", "--weights", str(tiny_run / "substitute.safetensors"), "--weights", str(member)]
    code, err = _cli([*soup, "--data", str(xray_train_dir), "--out", str(tmp_path / "soup"), "--device", "cpu"], capsys)
    _one_line(code, err, f"error: {member} was trained on data with hash {other_hash[:12]}, but --data {xray_train_dir} has hash ")
    assert "calibrate on the folder it was trained on (other)" in err
    assert not (tmp_path / "soup" / "substitute.safetensors").exists()


def test_data_sharing_file_names_with_the_test_cohort_is_refused_by_every_trainer(tiny_run, xray_paths, xray_test_dir, tmp_path, capsys):
    """Training X-rays with two images of the test cohort among them, in a folder of another name."""
    test_files = [sorted((xray_test_dir / cls).glob("*.jpeg"))[0] for cls in ("NORMAL", "PNEUMONIA")]
    mixed = _folder_of(tmp_path, "mixed", xray_paths["NORMAL"] + xray_paths["PNEUMONIA"] + test_files)
    weights = tiny_run / "substitute.safetensors"
    card = weights.with_suffix(".json").read_text()
    commands = [
        ["train", "classifier", "--model", "substitute", "--preset", "tiny", "--out", str(tmp_path / "run")],
        ["train", "calibrate", "--model", "substitute", "--weights", str(weights)],
        ["train", "diffusion", "--preset", "tiny", "--out", str(tmp_path / "ddpm")],
        ["train", "cold", "--preset", "tiny", "--out", str(tmp_path / "cold")],
    ]
    for command in commands:
        _one_line(*_cli([*command, "--data", mixed, "--device", "cpu"], capsys), f"is the reporting cohort {xray_test_dir} in 2 of its 18 images")
    assert not any((tmp_path / name).exists() for name in ("run", "ddpm", "cold")) and weights.with_suffix(".json").read_text() == card


def test_a_validation_split_without_a_class_is_refused_before_training(xray_train_dir, tmp_path):
    """30 NORMAL patients and 2 PNEUMONIA ones: both PNEUMONIA patients land in train, none in val."""
    from core.data.groups import kermany_patient

    def one_per_patient(cls: str, count: int) -> list:
        firsts = {}
        for file in sorted((xray_train_dir / cls).glob("*.jpeg")):
            firsts.setdefault(kermany_patient(f"{cls}/{file.name}"), file)
        return list(firsts.values())[:count]

    folder = _folder_of(tmp_path, "few", one_per_patient("NORMAL", 30) + one_per_patient("PNEUMONIA", 2))
    with pytest.raises(PurifyLabError, match=r"^the validation split lacks a class \(NORMAL \d+, PNEUMONIA 0\)"):
        train_classifier(preset("tiny", "substitute", threads=1), folder, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_batch_size_one_is_refused_for_batch_norm_models_before_the_data_is_read(tmp_path):
    with pytest.raises(PurifyLabError, match="^--batch-size 1: this model has batch-norm layers"):
        train_classifier(preset("tiny", "resnet", batch_size=1), tmp_path / "no data here", tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_time_budget_cut_stays_on_the_card_after_a_resume(xray_train_dir, tmp_path):
    """Epoch 1 is cut after its first of 4 batches; the resumed run goes on at epoch 2, which it completes."""
    config = preset("tiny", "substitute", epochs=2, max_minutes=1e-6, threads=1)
    cut = train_classifier(config, xray_train_dir, tmp_path, progress=False)
    assert (cut["epochs_run"], cut["epochs_completed"], cut["batches_per_epoch"], cut["stopped_by_time_budget"]) == (1, 0, 4, True)
    resumed = train_classifier(replace(config, max_minutes=10.0), xray_train_dir, tmp_path, progress=False, resume=True)
    assert [record["batches"] for record in _history(tmp_path)] == [1, 4]
    assert (resumed["epochs_run"], resumed["epochs_completed"], resumed["stopped_by_time_budget"]) == (2, 1, True)


def test_the_kept_epoch_is_named_for_the_rule_that_chose_it_and_an_old_run_resumes_with_its_file(xray_train_dir, tmp_path):
    """Every X-ray preset keeps the last epoch, so the file it publishes from is `selected.safetensors`,
    not `best`; a resumed run that kept it under the old name, `best.safetensors`, goes on with that file."""
    from core.train.checkpoint import checkpoint_tensors, read_state
    from core.weights import load_state

    last = tmp_path / "last"
    card = train_classifier(preset("tiny", "substitute", epochs=2, select_epoch="last", threads=1), xray_train_dir, last, progress=False)
    assert (card["epoch_selection"], card["selected_epoch"]) == ("last", 2) and not (last / "best.safetensors").exists()
    checkpoint = last / "checkpoint"
    selected, final = load_state(last / "selected.safetensors", verify=False), checkpoint_tensors(checkpoint, read_state(checkpoint), "model")
    assert selected.keys() == final.keys() and all(torch.equal(selected[key], final[key]) for key in selected)

    old = tmp_path / "old"
    config = preset("tiny", "substitute", epochs=1, threads=1)  # "best": a later epoch may not replace the file
    train_classifier(config, xray_train_dir, old, progress=False)
    (old / "selected.safetensors").rename(old / "best.safetensors")
    resumed = train_classifier(replace(config, epochs=2), xray_train_dir, old, progress=False, resume=True)
    assert resumed["selected_epoch"] in (1, 2) and (old / "selected.safetensors").is_file() and not (old / "best.safetensors").exists()


def test_a_tiny_run_refuses_init_from_and_its_sevit_card_says_its_backbone_is_unsaved(xray_train_dir, tmp_path):
    with pytest.raises(PurifyLabError, match="^init_from='resnet' starts from its shipped weights, which this run does not load"):
        preset("tiny", "resnet_at", init_from="resnet")
    card = train_classifier(preset("tiny", "sevit", epochs=1, max_batches_per_epoch=1, threads=1), xray_train_dir, tmp_path, progress=False)
    assert card["backbone_sha256"] is None and "not saved" in card["backbone"] and "cannot be reproduced" in card["backbone"]


def test_evaluate_reads_only_the_val_part_of_a_training_folder_that_holds_an_undecodable_file(xray_train_dir, tmp_path, capsys):
    """The card's data hash names the images that decoded, the folder's file list every file: one broken
    file made `evaluate` read the whole folder (split all), training images included, by default."""
    files = [path for name in ("NORMAL", "PNEUMONIA") for path in sorted((xray_train_dir / name).glob("*.jpeg"))[:40]]
    data = Path(_folder_of(tmp_path, "data", files))
    (data / "NORMAL" / "broken.jpeg").write_text("not a jpeg")
    run = tmp_path / "run"
    _train_tiny_through_the_cli("substitute", ["--threads", "1"], data, run)
    evaluate = ["evaluate", "--data", str(data), "--classifier", "substitute", "--weights", str(run / "substitute.safetensors"), "--device", "cpu"]
    capsys.readouterr()
    from core.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(evaluate)
    out = capsys.readouterr().out
    assert exit_info.value.code in (0, None) and " split val " in out, out


@pytest.mark.parametrize(
    ("file_name", "nth"),
    [
        ("optimizer.safetensors", 2),  # epoch 2's checkpoint, after its model file and before its optimizer file
        ("selected.safetensors", 1),  # epoch 1's kept weights, the run's only selected epoch
    ],
)
def test_a_run_killed_while_it_saves_resumes_as_if_never_stopped(xray_train_dir, tmp_path, monkeypatch, file_name, nth):
    """A kill in the middle of a save left epoch 2's weights beside epoch 1's counters, and --resume
    trained epoch 2 again on them; or it left no kept-epoch file to publish. The resumed run's history,
    kept epoch and published weights are those of the same run never stopped."""
    config = preset("tiny", "substitute", epochs=2, threads=1)
    whole = train_classifier(config, xray_train_dir, tmp_path / "whole", progress=False)
    assert whole["selected_epoch"] == 1  # seed 0: epoch 2 is not better, so the file written in epoch 1 is the one published
    run = tmp_path / "run"
    interrupt_writing(monkeypatch, file_name, nth)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(config, xray_train_dir, run, progress=False)
    monkeypatch.undo()
    resumed = train_classifier(config, xray_train_dir, run, progress=False, resume=True)

    def timeless(history: list[dict]) -> list[dict]:
        return [{key: value for key, value in record.items() if key != "seconds"} for record in history]

    assert timeless(_history(run)) == timeless(_history(tmp_path / "whole"))
    assert (resumed["selected_epoch"], resumed["sha256"]) == (whole["selected_epoch"], whole["sha256"])


def test_init_from_starts_from_the_raw_network_not_the_source_cards_calibration():
    """--init-from kept the shipped card's temperature and threshold inside `forward`: the loss, the adversary
    and every epoch's val figures read rescaled, shifted logits (the distillation teacher was already cleared)."""
    from core.train.classifier import _build_model

    source = create_classifier("student_cnn")
    assert (source.temperature, source.threshold) != (1.0, None)  # the shipped card carries a calibration
    model = _build_model(preset("cpu", "student_cnn", init_from="student_cnn", threads=1))
    assert (model.temperature, model.threshold, model.card) == (1.0, None, None)
    x = torch.rand(4, 1, source.image_size, source.image_size)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), source.logits(source.normalise(x)))


def test_init_from_at_another_image_size_names_both_sizes():
    """It was refused as "does not share student_cnn's architecture": the architecture is the same, the input size is not."""
    from core.train.classifier import _build_model

    with pytest.raises(PurifyLabError, match=r"^init_from='student_cnn' takes 128 px, but this run trains student_cnn at 64 px \(--image-size\)"):
        _build_model(preset("cpu", "student_cnn", init_from="student_cnn", image_size=64, threads=1))
    # no --image-size given: the preset chose the size, and the message told the user to drop a flag they never gave
    with pytest.raises(PurifyLabError, match=r"trains mnist_cnn at 28 px \(the cpu preset's size\); start from a model of that size$"):
        _build_model(preset("cpu", "mnist_cnn", init_from="student_cnn", threads=1))
    with pytest.raises(PurifyLabError, match=r"^init_from='student_cnn' takes 128 px, but this run trains mnist_cnn at 28 px \(its image_size\); start from"):
        _build_model(TrainConfig(model="mnist_cnn", init_from="student_cnn", image_size=28))  # the Python API's config names no preset


def test_a_temperature_without_a_teacher_is_refused_not_recorded_and_ignored():
    """--temperature 4 without --distill-from exited 0, recorded temperature 4.0 on a clean-trained card and
    trained bit for bit the model it trains without the flag."""
    with pytest.raises(PurifyLabError, match=r"^temperature=4.0 is the distillation temperature.*give --distill-from or drop --temperature$"):
        preset("tiny", "resnet", temperature=4.0)
    assert preset("tiny", "student_cnn", temperature=4.0).temperature == 4.0  # its tiny preset distils from vit


def test_train_calibrate_on_a_fresh_run_changes_nothing_on_its_card(tiny_run, xray_train_dir, tmp_path):
    """The temperature and threshold were fitted on the fp32 selected weights and the card's figures measured on
    the fp16 file, so `train calibrate`, which fits on the file, moved both on a run fresh from training."""
    import shutil

    from core.train.classifier import recalibrate

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = (run / "substitute.json").read_text()
    recalibrate("substitute", run / "substitute.safetensors", xray_train_dir)
    assert (run / "substitute.json").read_text() == before


@pytest.mark.parametrize("nth", [1, 2])  # the fp16 file measured before it is published; the published file, after its figures
def test_a_run_interrupted_while_it_publishes_leaves_no_model_and_resume_publishes_it(tiny_run, xray_train_dir, tmp_path, monkeypatch, capsys, nth):
    """A Ctrl-C while a run published left <model>.safetensors with a card without val or test figures, loadable
    as a normal model, and --resume refused the run as finished."""
    from core.weights import sha256_of

    run = tmp_path / "run"
    args = ["train", "classifier", "--model", "substitute", "--preset", "tiny", "--epochs", "1", "--threads", "1"]
    args += ["--data", str(xray_train_dir), "--out", str(run), "--no-progress", "--device", "cpu"]
    interrupt_writing(monkeypatch, "substitute.safetensors", nth)
    code, err = _cli(args, capsys)
    monkeypatch.undo()
    assert (code, err.splitlines()[-1]) == (130, "interrupted: rerun the same command with --resume to continue from its last checkpoint"), err
    assert sorted(path.name for path in run.iterdir()) == ["checkpoint", "config.json", "history.json", "selected.json", "selected.safetensors"]
    code, err = _cli([*args, "--resume"], capsys)
    assert code == 0, err
    card, whole = json.loads((run / "substitute.json").read_text()), json.loads((tiny_run / "substitute.json").read_text())
    assert card["sha256"] == sha256_of(run / "substitute.safetensors") == whole["sha256"]  # the same run, never interrupted
    assert [card[key] for key in ("calibration", "val_metrics", "test_metrics")] == [whole[key] for key in ("calibration", "val_metrics", "test_metrics")]
    assert [{**record, "seconds": None} for record in _history(run)] == [{**record, "seconds": None} for record in _history(tiny_run)]
    _one_line(*_cli([*args, "--resume"], capsys), "is finished (1 of 1 epochs)")  # published whole: nothing left to do


def test_ctrl_c_before_the_first_checkpoint_says_to_start_over_not_to_resume(xray_train_dir, tmp_path, monkeypatch, capsys):
    """The hint said "rerun with --resume" whatever the run folder held; before the first checkpoint that
    resume is refused ("holds a training run without a complete checkpoint")."""
    run = tmp_path / "run"
    args = ["train", "classifier", "--model", "substitute", "--preset", "tiny", "--epochs", "1", "--threads", "1"]
    args += ["--data", str(xray_train_dir), "--out", str(run), "--no-progress", "--device", "cpu"]
    interrupt_writing(monkeypatch, "model.safetensors", 1)  # the first checkpoint's model tensors
    code, err = _cli(args, capsys)
    monkeypatch.undo()
    said = "interrupted: the run saved no checkpoint, so there is nothing to resume; rerun the same command with --overwrite to start over"
    assert (code, err.splitlines()[-1]) == (130, said), err
    _one_line(*_cli([*args, "--resume"], capsys), "without a complete checkpoint")
    code, err = _cli([*args, "--overwrite"], capsys)
    assert code == 0, err


def test_a_resumed_run_interrupted_while_it_publishes_is_published_by_the_next_resume(tiny_run, xray_train_dir, tmp_path, monkeypatch, capsys):
    """The model in the folder is epoch 1's, published whole before the run was resumed for a second epoch: it is
    not the finished checkpoint's, so --resume publishes that instead of refusing the run as finished."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    args = ["train", "classifier", "--model", "substitute", "--preset", "tiny", "--epochs", "2", "--threads", "1", "--resume"]
    args += ["--data", str(xray_train_dir), "--out", str(run), "--no-progress", "--device", "cpu"]
    interrupt_writing(monkeypatch, "substitute.safetensors", 1)
    code, err = _cli(args, capsys)
    monkeypatch.undo()
    assert (code, err.splitlines()[-1]) == (130, "interrupted: rerun the same command with --resume to continue from its last checkpoint"), err
    assert json.loads((run / "substitute.json").read_text())["epochs_run"] == 1
    code, err = _cli(args, capsys)
    assert code == 0, err
    assert json.loads((run / "substitute.json").read_text())["epochs_run"] == len(_history(run)) == 2


def test_ctrl_c_says_resume_only_for_a_checkpoint_this_command_resumed_or_saved(tmp_path, capsys):
    """An --overwrite stopped before it removed the old run's checkpoint has nothing of its own to resume."""
    import os
    import time

    import typer

    from core.cli.preflight import training_resume_hint

    def said(run, resumed: bool, saved_by_this_command: bool) -> str:
        hint = training_resume_hint(run, resumed)
        if run.exists():  # the checkpoint is this command's, or an old run's (saved before it started)
            then = time.time() if saved_by_this_command else time.time() - 60
            os.utime(run / "checkpoint" / "state.json", (then, then))
        with pytest.raises(typer.Exit), hint:
            raise KeyboardInterrupt
        return capsys.readouterr().err.strip()

    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    (run / "checkpoint" / "state.json").write_text("{}")
    resume = "interrupted: rerun the same command with --resume to continue from its last checkpoint"
    assert said(run, resumed=True, saved_by_this_command=False) == resume
    assert said(run, resumed=False, saved_by_this_command=False).endswith("nothing to resume; rerun the same command with --overwrite to start over")
    assert said(run, resumed=False, saved_by_this_command=True) == resume
    assert said(tmp_path / "none", resumed=False, saved_by_this_command=False).endswith("nothing to resume; rerun the same command to start over")
