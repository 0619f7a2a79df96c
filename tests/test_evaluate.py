"""Metrics against hand-computed values, and clean evaluation of a classifier on real X-rays."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from core.attacks import AttackConfig, craft, evaluate_defended
from core.data.loading import load_split
from core.errors import PurifyLabError
from core.evaluate import EvaluationConfig, evaluate, predict_probabilities
from core.lab import read
from core.metrics import accuracy, auroc, balanced_accuracy, classification_metrics
from core.models import create_classifier
from core.purifiers import create_purifier
from core.weights import save_weights

# Five images: NORMAL, NORMAL, PNEUMONIA x 3; predictions 0, 1, 1, 0, 1.
LABELS = [0, 0, 1, 1, 1]
PROBS = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.8, 0.2], [0.1, 0.9]])


def test_metrics_match_hand_computation():
    m = classification_metrics(LABELS, PROBS, bootstrap=0)
    assert m.n == 5
    assert m.accuracy == pytest.approx(3 / 5)
    assert m.sensitivity == pytest.approx({"NORMAL": 1 / 2, "PNEUMONIA": 2 / 3})
    assert m.balanced_accuracy == pytest.approx((1 / 2 + 2 / 3) / 2)
    # positive scores 0.7, 0.2, 0.9 vs negative 0.1, 0.6: 5 of 6 pairs ordered correctly
    assert m.auroc == pytest.approx(5 / 6)


def test_auroc_edge_cases():
    assert auroc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)  # ties count half
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert np.isnan(auroc([1, 1], [0.2, 0.3]))  # the raw statistic; classification_metrics reports None
    assert accuracy([0, 1], [0, 0]) == 0.5
    assert balanced_accuracy([1, 1, 1, 0], [1, 1, 1, 1]) == 0.5  # always PNEUMONIA is chance


def test_bootstrap_intervals_are_seeded_and_bracket_the_estimate():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 300)
    scores = np.clip(labels * 0.3 + rng.random(300) * 0.7, 0, 1)
    probs = np.stack([1 - scores, scores], 1)
    first = classification_metrics(labels, probs, bootstrap=500, seed=3)
    again = classification_metrics(labels, probs, bootstrap=500, seed=3)
    assert first.confidence_95 == again.confidence_95
    for key in ("accuracy", "balanced_accuracy", "auroc"):
        low, high = first.confidence_95[key]
        assert low <= getattr(first, key) <= high and high - low < 0.2
    json.dumps(first.to_dict())  # JSON-ready


def test_ten_class_metrics_average_one_vs_rest_aurocs():
    # Three classes: class 0 perfectly separated, class 1 always inverted, class 2 all ties.
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.8, 0.1, 0.1],
            [0.1, 0.0, 0.9],
            [0.1, 0.05, 0.85],
            [0.3, 0.4, 0.3],
            [0.3, 0.4, 0.3],
        ]
    )
    m = classification_metrics(labels, probs, bootstrap=200, seed=0)
    class_0 = 1.0
    class_1 = auroc(labels == 1, probs[:, 1])
    class_2 = auroc(labels == 2, probs[:, 2])
    assert m.auroc == pytest.approx((class_0 + class_1 + class_2) / 3)
    assert list(m.sensitivity) == ["0", "1", "2"]  # generic names without class_names
    assert m.accuracy == pytest.approx(2 / 6)
    low, high = m.confidence_95["auroc"]
    assert 0 <= low <= high <= 1
    named = classification_metrics(labels, probs, bootstrap=0, class_names=("a", "b", "c"))
    assert list(named.sensitivity) == ["a", "b", "c"]


def test_undefined_statistics_are_none_and_survive_the_results_store():
    """One class present: AUROC and that class's missing-class intervals are undefined, stored as null."""
    from core.results import canonical_json

    m = classification_metrics([1, 1, 1], np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]]), bootstrap=50)
    assert m.auroc is None and m.confidence_95["sensitivity_NORMAL"] == [None, None]
    canonical_json(m.to_dict())  # no NaN reaches the store


def test_metrics_refuse_mismatched_inputs():
    with pytest.raises(PurifyLabError, match="probabilities"):
        classification_metrics([0, 1], np.ones((3, 2)))


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = create_classifier("student_cnn", pretrained=False, image_size=32, widths=(4, 8, 8, 8))
    path = tmp_path_factory.mktemp("weights") / "student_cnn.safetensors"
    save_weights(model, path, {"architecture": model.architecture})
    return path


def test_evaluate_on_real_xrays(xray_train_dir, tiny_weights, tmp_path):
    config = EvaluationConfig(data=str(xray_train_dir), classifier="student_cnn", split="val", limit=24, weights=str(tiny_weights), bootstrap=200)
    result = evaluate(config)
    assert result["n"] == 24
    assert result["classes"] == ["NORMAL", "PNEUMONIA"]
    assert 0 <= result["balanced_accuracy"] <= 1 and 0 <= result["auroc"] <= 1
    assert set(result["sensitivity"]) == {"NORMAL", "PNEUMONIA"}
    assert result["classifier_sha256"] == json.loads(tiny_weights.with_suffix(".json").read_text())["sha256"]
    assert result["seconds"] > 0 and len(result["data_hash"]) == 64
    # the limited val split keeps both classes and never overlaps the training split
    val = load_split(xray_train_dir, "val", 32, limit=24)
    train = load_split(xray_train_dir, "train", 32)
    assert set(val.labels.tolist()) == {0, 1}
    train_bytes = {bytes(image.numpy()) for image in train.images}
    assert not any(bytes(image.numpy()) in train_bytes for image in val.images)


def test_evaluate_with_a_blur_purifier_changes_the_inputs(xray_train_dir, tiny_weights):
    model = create_classifier("student_cnn", weights=tiny_weights)
    images = load_split(xray_train_dir, "val", 32, limit=8).images
    from core.purifiers import create_purifier

    clean = predict_probabilities(model, images)
    blurred = predict_probabilities(model, images, purifier=create_purifier("blur", sigma=2.0))
    assert clean.shape == blurred.shape == (8, 2)
    assert not np.allclose(clean, blurred)


def test_evaluate_rejects_unknown_split(xray_train_dir, tiny_weights):
    with pytest.raises(PurifyLabError, match="split"):
        evaluate(EvaluationConfig(data=str(xray_train_dir), classifier="student_cnn", split="holdout", weights=str(tiny_weights)))


def test_evaluate_command_names_its_split_and_never_defaults_to_training_images(xray_train_dir, xray_test_dir, tiny_weights, tmp_path):
    from core.cli import classifier_commands
    from core.data import data_hash_of_folder

    app = typer.Typer()
    groups = {"train": typer.Typer()}
    app.add_typer(groups["train"], name="train")
    classifier_commands.register(app, groups)
    # a card that says the model was trained on the train folder
    card = json.loads(tiny_weights.with_suffix(".json").read_text())
    trained = tmp_path / "student_cnn.safetensors"
    trained.write_bytes(tiny_weights.read_bytes())
    trained.with_suffix(".json").write_text(json.dumps({**card, "data": {"data_hash": data_hash_of_folder(xray_train_dir)}}))
    for folder, expected in ((xray_train_dir, "val"), (xray_test_dir, "all")):
        out = tmp_path / f"{expected}.json"
        result = CliRunner().invoke(
            app,
            [
                "evaluate",
                "--data",
                str(folder),
                "--classifier",
                "student_cnn",
                "--weights",
                str(trained),
                "--limit",
                "16",
                "--json",
                str(out),
            ],
        )
        assert result.exit_code == 0, result.output
        assert f"split {expected}" in result.output and "balanced_accuracy" in result.output
        written = json.loads(out.read_text())
        assert written["n"] == 16 and written["config"]["split"] == expected == written["data"]["split"]
        assert written["data"]["folder"].endswith(f"chest_xray_pneumonia/{folder.name}")


def test_mnist_and_cifar_splits_load_with_their_channels(shared_data):
    """The papers' own data sets: 10,000 test images each, carved 80/10/10 image by image (no patients)."""
    mnist = load_split(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz", "val", 28, limit=20)
    assert mnist.images.shape == (20, 1, 28, 28) and mnist.classes == tuple("0123456789")
    cifar = load_split(shared_data / "cifar10_test_jpeg_q75" / "cifar10_test_jpegs.tar.gz", "val", 32, limit=20, channels=3)
    assert cifar.images.shape == (20, 3, 32, 32) and len(cifar.classes) == 10 and cifar.classes[0] == "airplane"
    assert cifar.labels.unique().numel() > 5


@pytest.fixture(scope="module")
def boundary():
    """An untrained registered classifier and a blur: the boundary checks need no learned weights."""
    torch.manual_seed(0)
    classifier = create_classifier("student_cnn", pretrained=False, image_size=32, widths=(8, 8, 8, 8)).eval()
    return classifier, create_purifier("blur", sigma=1.0), torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 0, 1])


def test_public_entry_points_refuse_bad_images_and_labels_in_one_line(boundary):
    """evaluate_defended, craft and lab.read check what the caller passes once, at the boundary."""
    classifier, purifier, x, y = boundary
    attack = AttackConfig(name="fgsm", eps=0.03)
    images = [
        (x * 255, r"values span .*expected \[0, 1\]"),
        ((x * 255).to(torch.uint8), "dtype is torch.uint8"),
        (x * float("nan"), "NaN or Inf"),
        (x.permute(0, 2, 3, 1), r"shape \(4, 32, 32, 1\) has 32 channels; expected \(N, 1, H, W\)"),
    ]
    for bad, message in images:
        with pytest.raises(PurifyLabError, match=message):
            evaluate_defended(classifier, purifier, bad, y)
        with pytest.raises(PurifyLabError, match=message):
            craft("grey", classifier, None, bad, y, attack)
        with pytest.raises(PurifyLabError, match=message):
            read(classifier, bad)
    with pytest.raises(PurifyLabError, match="image is empty"):
        evaluate_defended(classifier, purifier, x[:0], y[:0])
    labels = [
        (y.float(), "labels dtype is torch.float32"),
        (y + 5, r"labels span \[5, 6\]; the classifier has 2 classes"),
        ([0, 1, 0, 1], "labels must be a torch.Tensor"),
        (y[:3], "do not fit 4 images"),
    ]
    for bad, message in labels:
        with pytest.raises(PurifyLabError, match=message):
            evaluate_defended(classifier, purifier, x, bad)
        with pytest.raises(PurifyLabError, match=message):
            craft("grey", classifier, None, x, bad, attack)


def test_craft_names_the_callers_batch_and_evaluate_defended_takes_no_defense(boundary):
    classifier, purifier, x, y = boundary
    with pytest.raises(PurifyLabError, match=r"input of shape \(4, 1, 16, 16\) does not fit"):
        craft("grey", classifier, None, x[:, :, :16, :16], y, AttackConfig(name="fgsm", eps=0.03))
    undefended = evaluate_defended(classifier, None, x.double(), y.int())  # float64 and int32 are widened
    assert undefended.n == 4 and undefended.redraws == 1
    assert undefended.one_shot_accuracy == evaluate_defended(classifier, create_purifier("none"), x, y).one_shot_accuracy


def test_a_result_records_the_weights_file_and_the_calibration_its_card_applied(xray_test_dir, tiny_weights, tmp_path):
    """Only the weights file is hashed; a card's temperature and threshold, which change every reading,
    were recorded nowhere, so a hand-edited card changed a result without a trace."""
    import shutil

    edited = tmp_path / "student_cnn.safetensors"
    shutil.copy(tiny_weights, edited)
    card = json.loads(tiny_weights.with_suffix(".json").read_text())
    edited.with_suffix(".json").write_text(json.dumps({**card, "calibration": {"temperature": 2.0, "threshold": 0.9}}))
    records = [
        evaluate(EvaluationConfig(data=str(xray_test_dir), classifier="student_cnn", limit=4, weights=str(weights), bootstrap=0))
        for weights in (tiny_weights, edited)
    ]
    assert records[0]["classifier_sha256"] == records[1]["classifier_sha256"]
    assert records[0]["classifier_calibration"] == {"temperature": 1.0, "threshold": None}
    assert records[1]["classifier_calibration"] == {"temperature": 2.0, "threshold": 0.9}
    assert records[1]["classifier_weights"].endswith("student_cnn.safetensors") and records[0]["classifier_weights"] != records[1]["classifier_weights"]


def test_predict_probabilities_refuses_other_scales_and_reads_uint8(boundary):
    """0-255 floats and int16 read as [0, 0]: only uint8 was divided by 255."""
    classifier, _, x, _ = boundary
    eight_bit = (x * 255).round()
    reference = predict_probabilities(classifier, eight_bit / 255)
    np.testing.assert_allclose(predict_probabilities(classifier, eight_bit.to(torch.uint8)), reference, atol=1e-6)
    refusals = [
        (eight_bit, r"values span .*expected \[0, 1\]"),
        (eight_bit.to(torch.int16), "dtype is torch.int16"),
        (x * float("nan"), "NaN or Inf"),
        (x.numpy(), "images must be a torch.Tensor; got ndarray"),
    ]
    for bad, message in refusals:
        with pytest.raises(PurifyLabError, match=message):
            predict_probabilities(classifier, bad)


def test_evaluate_says_when_the_classifier_reads_through_a_purifier_the_run_does_not_use(xray_test_dir, tiny_weights, tmp_path):
    """resnet_smooth read without its noise printed its figures with nothing saying they are not its card's."""
    import shutil

    from core.cli.reporting import format_report

    smooth = tmp_path / "student_cnn.safetensors"
    shutil.copy(tiny_weights, smooth)
    card = json.loads(tiny_weights.with_suffix(".json").read_text())
    smooth.with_suffix(".json").write_text(json.dumps({**card, "reads_through": {"purifier": "gaussian", "params": {"sigma": 0.5}}}))
    plain = EvaluationConfig(data=str(xray_test_dir), classifier="student_cnn", limit=4, weights=str(smooth), bootstrap=0)
    without = evaluate(plain)
    assert without["reads_through_note"].startswith("student_cnn was trained and calibrated to read X-rays through the 'gaussian' purifier (sigma 0.5)")
    assert f"note: {without['reads_through_note']}" in format_report(without).splitlines()[1]
    through = evaluate(EvaluationConfig(**{**plain.__dict__, "purifier": "gaussian", "purifier_params": {"sigma": 0.5}}))
    assert "reads_through_note" not in through and "note:" not in format_report(through)
    assert "reads_through_note" not in evaluate(EvaluationConfig(**{**plain.__dict__, "weights": str(tiny_weights)}))


def test_evaluate_returns_the_weights_it_loaded(xray_test_dir, tiny_weights):
    """The CLI built the purifier and substitute again after evaluate, only to hash their weights."""
    from core.weights import read_card

    config = EvaluationConfig(data=str(xray_test_dir), classifier="student_cnn", limit=2, weights=str(tiny_weights), bootstrap=0, purifier="noise")
    assert evaluate(config)["loaded_weights"] == {"student_cnn.safetensors": read_card(tiny_weights)["sha256"]}


def test_predict_probabilities_shows_batch_progress_only_when_asked(xray_train_dir, tiny_weights, capsys):
    """A purified clean pass can run for minutes: it shows the attacked pass's bar on stderr."""
    model = create_classifier("student_cnn", weights=tiny_weights)
    images = load_split(xray_train_dir, "val", 32, limit=4).images
    capsys.readouterr()
    shown = predict_probabilities(model, images, batch_size=2, progress=True)
    assert "batches" in capsys.readouterr().err
    np.testing.assert_array_equal(predict_probabilities(model, images, batch_size=2), shown)
    assert capsys.readouterr().err == ""


def test_evaluate_records_the_name_of_the_model_passed_in_not_the_configs_default(xray_test_dir, tiny_weights, tmp_path):
    """evaluate(config, model=M) recorded config.classifier ('vit' by default) beside M's figures and weights,
    and its reads-through note named vit."""
    import shutil

    smooth = tmp_path / "student_cnn.safetensors"
    shutil.copy(tiny_weights, smooth)
    card = json.loads(tiny_weights.with_suffix(".json").read_text())
    smooth.with_suffix(".json").write_text(json.dumps({**card, "name": "student_cnn", "reads_through": {"purifier": "gaussian", "params": {"sigma": 0.5}}}))
    result = evaluate(EvaluationConfig(data=str(xray_test_dir), limit=2, bootstrap=0), model=create_classifier("student_cnn", weights=smooth))
    assert result["config"]["classifier"] == "student_cnn"
    assert result["reads_through_note"].startswith("student_cnn was trained and calibrated to read X-rays through")


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"redraws": 5}, "^redraws=5 sets the attacked run, but attack is None; drop redraws"),
        ({"eot": 4}, "^eot=4 sets the attacked run, but attack is None; drop eot"),
        ({"threat": "white"}, "^threat='white' sets the attacked run, but attack is None; drop threat"),
        ({"attack": "pgd"}, r"^attack must be an AttackConfig \(build one with AttackConfig\(name='pgd', \.\.\.\)\), got str 'pgd'$"),
        ({"attack": {"name": "pgd"}}, r"^attack must be an AttackConfig .*, got dict \{'name': 'pgd'\}$"),
    ],
)
def test_evaluation_config_refuses_attack_settings_without_an_attack_and_an_attack_by_name(setting, message):
    """Without an attack, redraws, eot and threat were recorded beside a clean figure they never touched
    (the CLI refuses them); an attack named by string failed as "'str' object has no attribute 'seed'"."""
    with pytest.raises(PurifyLabError, match=message):
        EvaluationConfig(data=".", **setting)
    assert EvaluationConfig(data=".", attack=AttackConfig(name="fgsm"), threat="white", eot=4, redraws=5).redraws == 5


def test_predict_probabilities_hands_the_model_back_in_the_mode_it_came_in():
    """It left a caller's model (a trainer's, mid-epoch) in eval mode."""
    torch.manual_seed(0)
    model = create_classifier("student_cnn", pretrained=False, image_size=32, widths=(4, 8, 8, 8)).train()
    predict_probabilities(model, torch.rand(2, 1, 32, 32))
    assert model.training and all(module.training for module in model.modules())
    assert all(parameter.requires_grad for parameter in model.parameters())


def test_scalar_arguments_outside_the_typed_configs_are_checked_in_one_line():
    """bool("false") ran BPDA, int(1.7) ran seed 1, pretrained="no" loaded the shipped weights,
    with_overrides(limit=True) titled a table "on True X-rays", and limit="4" died in numpy."""
    from core.defended import DefendedClassifier
    from core.models import create_classifier
    from core.purifiers import create_purifier
    from core.tables import load_preset

    classifier = create_classifier("student_cnn", pretrained=False, image_size=32).eval()
    cases = [
        (lambda: DefendedClassifier(create_purifier("none"), classifier, bpda="false"), "bpda must be true or false; got 'false'"),
        (lambda: DefendedClassifier(create_purifier("none"), classifier, seed=1.7), "seed must be an integer; got 1.7"),
        (lambda: create_classifier("student_cnn", pretrained="no"), "pretrained must be true or false; got 'no'"),
        (lambda: load_preset("quick").with_overrides(limit=True), "limit must be an integer or None; got True"),
        (lambda: load_preset("quick").with_overrides(eot=2.5), "eot must be an integer or None; got 2.5"),
        (lambda: EvaluationConfig(data="x", limit="4"), "limit must be an integer or None; got '4'"),
        (lambda: EvaluationConfig(data="x", batch_size=2.5), "batch_size must be an integer; got 2.5"),
    ]
    for make, message in cases:
        with pytest.raises(PurifyLabError) as refused:
            make()
        assert str(refused.value) == message and "\n" not in str(refused.value)
    assert DefendedClassifier(create_purifier("none"), classifier, bpda=True, seed=3).seed == 3
    only = load_preset("quick").with_overrides(only="table1")  # one name, not the letters t, a, b, l, e, 1
    assert [table.name for table in only.tables] == ["table1"]


def test_clean_and_attacked_results_name_the_device_that_computed_them(xray_test_dir, tiny_weights):
    """Neither result said where it ran, though CPU and CUDA generators draw other purifier noise for one seed."""
    from core.cli.reporting import format_report

    clean = EvaluationConfig(data=str(xray_test_dir), classifier="student_cnn", weights=str(tiny_weights), limit=4, bootstrap=20)
    attacked = EvaluationConfig(**{**clean.__dict__, "purifier": "noise", "purifier_params": {"t_star": 0.02}, "attack": AttackConfig(name="fgsm", eps=0.03)})
    for result in (evaluate(clean), evaluate(attacked)):
        assert result["device"] == "cpu", result
        assert format_report(result).splitlines()[-1].endswith(" images/s on cpu)"), format_report(result)
        assert result["images_per_second"] == float(f"{result['images_per_second']:.3g}")  # the rate's one rounding, both paths


def test_a_clean_evaluate_runs_on_the_device_it_is_given_never_a_gpu_it_finds(xray_test_dir, tiny_weights, monkeypatch):
    """evaluate() moved the model it built to CUDA whenever torch saw one: benchmarks/evaluate_cohort.py,
    a "2 CPU cores" benchmark that calls it directly, would have timed the GPU. The CLI passes --device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with a GPU, as far as evaluate can tell
    config = EvaluationConfig(data=str(xray_test_dir), classifier="student_cnn", weights=str(tiny_weights), limit=2, bootstrap=20)
    assert evaluate(config)["device"] == "cpu"


def test_a_slow_runs_rate_keeps_three_significant_digits(xray_test_dir, tiny_weights):
    """16 images in 468.6 s were reported and printed as '0.0 images/s', as if none was read."""
    from core.cli.reporting import format_report
    from core.evaluate import images_per_second

    assert (images_per_second(16, 468.6), images_per_second(4, 0.5), images_per_second(12345, 1.0)) == (0.0341, 8.0, 12300.0)
    result = evaluate(EvaluationConfig(data=str(xray_test_dir), classifier="student_cnn", weights=str(tiny_weights), limit=4, bootstrap=20))
    slow = {**result, "seconds": 468.6, "images_per_second": images_per_second(16, 468.6)}
    assert format_report(slow).splitlines()[-1] == "seconds 468.60 (0.0341 images/s on cpu)"
