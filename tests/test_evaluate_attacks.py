"""`purifylab evaluate --attack` and `purifylab attack` on a tiny student CNN trained here on real X-rays."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from core.attacks import THREAT_MODELS, AttackConfig
from core.attacks.robust import RobustRun, majority_correct, robust_run, run_metrics
from core.cli.options import parse_purifier_spec
from core.cli.reporting import format_report
from core.data.loading import load_split
from core.errors import PurifyLabError
from core.evaluate import EvaluationConfig, evaluate
from core.metrics import clopper_pearson
from core.models import create_classifier
from core.purifiers import create_purifier
from core.weights import save_weights

IMAGE_SIZE = 32


def train_tiny(name: str, data_dir, path, seed: int, steps: int = 150, **architecture):
    """A real classifier of the registry, trained a few Adam steps on the train split (32 px)."""
    torch.manual_seed(seed)
    model = create_classifier(name, pretrained=False, image_size=IMAGE_SIZE, **architecture)
    train = load_split(data_dir, "train", IMAGE_SIZE, limit=1024)
    images, labels = train.images.float() / 255, train.labels
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(labels), (64,), generator=order)
        loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    save_weights(model.eval(), path, {"architecture": model.architecture}, fp16=False)
    return path


@pytest.fixture(scope="module")
def tiny(xray_train_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return {
        "classifier": train_tiny("student_cnn", xray_train_dir, folder / "student_cnn.safetensors", 0, widths=(8, 16, 16, 16)),
        "substitute": train_tiny("substitute", xray_train_dir, folder / "substitute.safetensors", 1, steps=100, widths=(4, 8, 8)),
    }


def _config(xray_train_dir, tiny, **changes) -> EvaluationConfig:
    base = dict(
        data=str(xray_train_dir), classifier="student_cnn", weights=str(tiny["classifier"]), split="val", limit=16,
        bootstrap=100, attack=AttackConfig(name="pgd", eps=0.03, steps=3), attack_batch_size=8,
        substitute_weights=str(tiny["substitute"]),
    )  # fmt: skip
    return EvaluationConfig(**{**base, **changes})


@pytest.mark.parametrize("threat", sorted(THREAT_MODELS))
def test_every_threat_model_reports_clean_and_robust_accuracy(xray_train_dir, tiny, threat):
    eot = THREAT_MODELS[threat].draws_per_step(2)
    result = evaluate(_config(xray_train_dir, tiny, threat=threat, eot=eot, purifier="noise", purifier_params={"t_star": 0.02}, redraws=2))
    assert result["n"] == 16 and result["threat_model"]["name"] == threat
    assert result["threat_model"]["description"] == THREAT_MODELS[threat].describe(result["threat_model"]["eot"])
    assert 0 <= result["robust_accuracy_worst_of_k"] <= result["robust_accuracy"] <= 1
    assert result["redraws"] == 2  # noise is stochastic: two test-time draws
    # two draws: a strict majority is both, so the vote is the worst case
    assert result["robust_accuracy_majority_of_k"] == result["robust_accuracy_worst_of_k"]
    assert result["clean_accuracy"] == result["accuracy"]
    assert result["budget"]["gradient_evaluations"] == 3 * eot
    assert result["nfe"] == 0 and result["peak_gpu_memory"] is None and result["seconds_per_image"] > 0
    assert set(result["robust"]) >= {"balanced_accuracy", "auroc", "sensitivity", "confidence_95"}
    json.dumps(result)


def test_attack_lowers_the_accuracy_of_an_undefended_model(xray_train_dir, tiny):
    result = evaluate(_config(xray_train_dir, tiny, limit=32, attack=AttackConfig(name="pgd", eps=0.05, steps=10)))
    assert result["clean_accuracy"] >= 0.6, "the tiny model must have learned something for this test to mean anything"
    assert result["robust_accuracy"] <= result["clean_accuracy"] - 0.3
    assert result["robust_accuracy_worst_of_k"] == result["robust_accuracy"]  # deterministic: one draw
    assert result["robust_accuracy_majority_of_k"] == result["robust_accuracy"]
    assert result["robust_balanced_accuracy_majority_of_k"] == pytest.approx(result["robust_balanced_accuracy"])


def test_majority_of_k_is_right_under_more_than_half_of_the_draws():
    """Five images, three draws, by hand: right 3/3, 2/3, 1/3, 0/3 and 2/3 times."""
    correct = np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 1], [1, 0, 0, 0, 1]], dtype=bool)
    labels = np.array([0, 0, 1, 1, 1])
    run = RobustRun(labels=labels, probabilities=np.full((5, 2), 0.5), correct=correct, seconds=1.0, peak_gpu_memory=None)
    assert majority_correct(correct).tolist() == [True, True, False, False, True]
    assert run.majority_accuracy == pytest.approx(3 / 5) and run.worst_case_accuracy == pytest.approx(1 / 5)
    metrics = run_metrics(run, bootstrap=10)
    assert metrics["majority_balanced_accuracy"] == pytest.approx((2 / 2 + 1 / 3) / 2)
    assert metrics["worst_case_balanced_accuracy"] == pytest.approx((1 / 2 + 0 / 3) / 2)


def test_same_seed_gives_identical_numbers(xray_train_dir, tiny):
    config = _config(xray_train_dir, tiny, threat="bpda", purifier="noise", redraws=2)
    first, again = evaluate(config), evaluate(config)
    for key in ("robust_accuracy", "robust_accuracy_worst_of_k", "clean_accuracy", "confidence_95", "robust"):
        assert first[key] == again[key]


def _app():
    from core.cli import classifier_commands

    app = typer.Typer()
    groups = {"train": typer.Typer()}
    app.add_typer(groups["train"], name="train")
    classifier_commands.register(app, groups)
    return app


def test_evaluate_command_with_attack_writes_json_and_config(xray_train_dir, tiny, tmp_path):
    out = tmp_path / "robust.json"
    result = CliRunner().invoke(_app(), [
        "evaluate", "--data", str(xray_train_dir), "--classifier", "student_cnn", "--weights", str(tiny["classifier"]),
        "--split", "val", "--limit", "8", "--attack", "fgsm", "--eps", "0.03", "--purifier", "blur:sigma=1.0",
        "--threat", "grey", "--json", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "robust_accuracy" in result.output and "attacker sees the classifier only" in result.output
    written = json.loads(out.read_text())
    assert written["purifier"]["purifier"] == "blur" and written["purifier"]["sigma"] == 1.0
    assert written["budget"]["eps"] == 0.03 and written["attack"]["name"] == "fgsm"
    config = json.loads((tmp_path / "robust.config.json").read_text())
    assert config["attack"]["name"] == "fgsm" and config["purifier_params"] == {"sigma": 1.0}


def test_evaluate_command_refuses_a_bad_threat_in_one_line(xray_train_dir, tiny):
    result = CliRunner().invoke(_app(), [
        "evaluate", "--data", str(xray_train_dir), "--classifier", "student_cnn", "--weights", str(tiny["classifier"]),
        "--attack", "pgd", "--threat", "psychic", "--limit", "4",
    ])  # fmt: skip
    assert isinstance(result.exception, PurifyLabError) and "psychic" in str(result.exception)


def test_attack_command_writes_an_adversarial_png_within_budget(xray_paths, tiny, tmp_path):
    out = tmp_path / "adv.png"
    result = CliRunner().invoke(_app(), [
        "attack", str(xray_paths["PNEUMONIA"][0]), "--classifier", "student_cnn", "--weights", str(tiny["classifier"]),
        "--attack", "pgd", "--eps", "0.03", "--steps", "5", "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(out.with_suffix(".json").read_text())
    assert out.is_file() and record["resized_to"] == [IMAGE_SIZE, IMAGE_SIZE]
    assert record["linf_distance"] <= 0.03 + 1e-6 and record["label"] in (0, 1)
    assert record["threat_model"]["name"] == "grey"


def test_purifier_spec_parsing():
    assert parse_purifier_spec("ddpm:t_star=0.04,steps=5") == ("ddpm", {"t_star": "0.04", "steps": "5"})
    assert parse_purifier_spec("none") == ("none", {})
    with pytest.raises(PurifyLabError, match="key=value"):
        parse_purifier_spec("ddpm:t_star")


def test_a_transfer_substitute_for_other_images_is_refused_before_the_clean_pass(xray_train_dir, tiny, tmp_path):
    """The X-ray substitute against a CIFAR-10 classifier failed after the whole clean pass, with a shape
    error that blamed the classifier; a substitute at another input size is the same mistake."""
    other = create_classifier("substitute", pretrained=False, image_size=IMAGE_SIZE // 2, widths=(4, 8, 8))
    path = tmp_path / "substitute.safetensors"
    save_weights(other, path, {"architecture": other.architecture}, fp16=False)
    refusal = rf"^substitute 'substitute' takes 1-channel {IMAGE_SIZE // 2} px images with 2 classes, the classifier 1-channel {IMAGE_SIZE} px"
    with pytest.raises(PurifyLabError, match=refusal):
        evaluate(_config(xray_train_dir, tiny, threat="transfer", substitute_weights=str(path)))


def test_evaluate_under_attack_returns_every_weights_file_it_loaded(xray_train_dir, tiny):
    """The classifier's and the transfer substitute's, from the networks the run used (none built again)."""
    from core.weights import read_card

    result = evaluate(_config(xray_train_dir, tiny, limit=4, threat="transfer", attack=AttackConfig(name="fgsm")))
    assert result["loaded_weights"] == {path.name: read_card(path)["sha256"] for path in (tiny["classifier"], tiny["substitute"])}


def test_eot_iter_and_restarts_reach_the_attack_and_its_record(xray_train_dir, xray_paths, tiny, tmp_path):
    """`--attack eotpgd` ran plain PGD: the CLI passed the attack neither eot_iter nor restarts."""
    attack = ["--classifier", "student_cnn", "--weights", str(tiny["classifier"]), "--attack", "eotpgd", "--steps", "2", "--eot-iter", "2", "--restarts", "2"]
    out = tmp_path / "e.json"
    result = CliRunner().invoke(_app(), ["evaluate", "--data", str(xray_train_dir), "--split", "val", "--limit", "4", *attack, "--json", str(out)])
    assert result.exit_code == 0, result.output
    written = json.loads(out.read_text())
    assert (written["attack"]["eot_iter"], written["attack"]["restarts"], written["budget"]["gradient_evaluations"]) == (2, 2, 8)
    adversarial = tmp_path / "a.png"
    result = CliRunner().invoke(_app(), ["attack", str(xray_paths["NORMAL"][0]), *attack, "--out", str(adversarial)])
    assert result.exit_code == 0, result.output
    record = json.loads(adversarial.with_suffix(".json").read_text())
    assert (record["attack"]["eot_iter"], record["attack"]["restarts"], record["budget"]["gradient_evaluations"]) == (2, 2, 8)


def test_attack_command_records_the_l2_distance_its_png_holds(xray_paths, tiny, tmp_path):
    """The record measured from the resized input, off the grey levels, and said L2 0.15 for an eps 0.1
    attack whose PNG held 0.04: it is measured from the grey-level image the budget holds from."""
    from core.io import load_image, on_grey_levels, to_model_input

    out = tmp_path / "adv.png"
    result = CliRunner().invoke(_app(), [
        "attack", str(xray_paths["PNEUMONIA"][0]), "--classifier", "student_cnn", "--weights", str(tiny["classifier"]),
        "--attack", "pgd", "--norm", "l2", "--eps", "0.1", "--steps", "5", "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(out.with_suffix(".json").read_text())
    clean = to_model_input(load_image(xray_paths["PNEUMONIA"][0]), IMAGE_SIZE)
    clean = on_grey_levels(clean, clean)
    saved = to_model_input(load_image(out), IMAGE_SIZE)
    assert record["l2_distance"] == pytest.approx(float((saved - clean).flatten().norm()), abs=1e-4)
    assert record["l2_distance"] <= 0.1 + 1e-4


def test_a_minimal_attack_reports_its_perturbation_and_whether_it_converged(xray_train_dir, tiny):
    """`evaluate --attack cw` printed a robust accuracy with no size, no success rate and no FLAG, so a
    CW stopped after 2 steps read as robustness; the table path flagged the same attack."""
    stalled = evaluate(_config(xray_train_dir, tiny, attack=AttackConfig(name="cw", norm="l2", steps=2)))
    assert 0 < stalled["perturbation"]["success_rate"] < 1
    assert "has not converged" in stalled["convergence_check"]["flag"]
    report = format_report(stalled).splitlines()
    assert f"FLAG: {stalled['convergence_check']['flag']}" in report
    assert any(row.startswith("perturbation before any purifier: success ") for row in report)
    assert any(row.startswith("attack cw l2 minimal perturbation steps=2 ") for row in report)
    converged = evaluate(_config(xray_train_dir, tiny, attack=AttackConfig(name="deepfool", norm="l2", steps=3)))
    assert converged["convergence_check"]["flag"] is None and "FLAG" not in format_report(converged)
    # behind a purifier the accuracy left is the defense's doing too: the size is reported, no check
    blurred = evaluate(_config(xray_train_dir, tiny, purifier="blur", purifier_params={"sigma": 1.0}, attack=AttackConfig(name="cw", norm="l2", steps=2)))
    assert "perturbation" in blurred and "convergence_check" not in blurred
    bounded = evaluate(_config(xray_train_dir, tiny, limit=4))
    assert not {"perturbation", "convergence_check"} & set(bounded) and "perturbation" not in format_report(bounded)


def test_perturbation_norms_are_over_the_images_the_attack_fooled(xray_train_dir, tiny):
    """The medians counted the images the attack failed on, which CW hands back unchanged: with under half
    fooled the L2 median read 0, a size no fooled image had, and with none fooled it still gave sizes."""
    model = create_classifier("student_cnn", pretrained=True, weights=str(tiny["classifier"]))
    data = load_split(xray_train_dir, "val", IMAGE_SIZE, limit=16)
    run = robust_run(model, create_purifier("none"), data.images, data.labels, AttackConfig(name="cw", norm="l2", steps=2), batch_size=8)
    found, fooled = run.perturbation.summary(), run.perturbation.fooled
    assert 0 < fooled.sum() < fooled.size / 2, "the test needs an attack that fooled some images, under half"
    assert found["l2_median"] == pytest.approx(float(np.median(run.perturbation.l2[fooled]))) and found["l2_median"] > 0
    assert found["l2_max"] == pytest.approx(float(run.perturbation.l2[fooled].max()))
    assert found["linf_median"] == pytest.approx(float(np.median(run.perturbation.linf[fooled])))
    assert found["linf_max"] == pytest.approx(float(run.perturbation.linf[fooled].max()))
    none_fooled = evaluate(_config(xray_train_dir, tiny, attack=AttackConfig(name="cw", norm="l2", steps=1)))
    sizes = {key: none_fooled["perturbation"][key] for key in ("l2_median", "l2_max", "linf_median", "linf_max")}
    assert none_fooled["perturbation"]["success_rate"] == 0 and set(sizes.values()) == {None}
    assert "L2 median n/a (max n/a), L-inf median n/a (max n/a)" in format_report(none_fooled)


def test_worst_and_majority_of_k_carry_their_95_intervals():
    """Exact binomial for accuracy and the Bonferroni mean of per-class bounds for balanced accuracy, as the
    one-draw figures; by hand on five images and three draws: right 3/3, 2/3, 1/3, 0/3 and 2/3 times."""
    correct = np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 1], [1, 0, 0, 0, 1]], dtype=bool)
    labels = np.array([0, 0, 1, 1, 1])
    run = RobustRun(labels=labels, probabilities=np.full((5, 2), 0.5), correct=correct, seconds=1.0, peak_gpu_memory=None)
    intervals = run_metrics(run, bootstrap=10)["confidence_95"]
    per_class_mean = lambda *bounds: np.mean(bounds, axis=0)  # noqa: E731
    assert intervals["worst_case_accuracy"] == pytest.approx(clopper_pearson(1, 5))
    assert intervals["majority_accuracy"] == pytest.approx(clopper_pearson(3, 5))
    assert intervals["worst_case_balanced_accuracy"] == pytest.approx(per_class_mean(clopper_pearson(1, 2, 0.975), clopper_pearson(0, 3, 0.975)))
    assert intervals["majority_balanced_accuracy"] == pytest.approx(per_class_mean(clopper_pearson(2, 2, 0.975), clopper_pearson(1, 3, 0.975)))


def test_evaluate_reports_and_prints_the_intervals_of_worst_and_majority_of_k(xray_train_dir, tiny):
    """`robust_worst_of_k 0.6667 (k=3)` was printed and stored with no interval, unlike every other figure."""
    result = evaluate(_config(xray_train_dir, tiny, purifier="noise", purifier_params={"t_star": 0.05}, redraws=3))
    report = format_report(result).splitlines()
    figures = {
        "worst_of_k": ("accuracy_worst_of_k", "worst_case_accuracy"),
        "balanced_worst_of_k": ("balanced_accuracy_worst_of_k", "worst_case_balanced_accuracy"),
        "majority_of_k": ("accuracy_majority_of_k", "majority_accuracy"),
        "balanced_majority_of_k": ("balanced_accuracy_majority_of_k", "majority_balanced_accuracy"),
    }
    for side, intervals in (("clean", result["confidence_95"]), ("robust", result["robust"]["confidence_95"])):
        for printed, (figure, interval) in figures.items():
            (low, high), value = intervals[interval], result[f"{side}_{figure}"]
            assert low <= value <= high
            assert any(row.split()[:2] == [f"{side}_{printed}", f"{value:.4f}"] and f"[{low:.4f}, {high:.4f}]  " in row for row in report), report
    json.dumps(result)


def test_the_evaluate_report_and_a_tables_line_print_one_perturbation_summary(xray_train_dir, tiny):
    """Two formatters printed the same attack's sizes, the report to 4 decimals and a table to 3. One does now,
    at the tables' 3 decimals (the committed tables are re-rendered from it), with n/a for what was not measured."""
    from core.attacks.config import perturbation_text
    from core.tables import preset_from_dict
    from core.tables.render import perturbation_lines

    result = evaluate(_config(xray_train_dir, tiny, attack=AttackConfig(name="cw", norm="l2", steps=2)))
    text = perturbation_text(result["perturbation"])
    assert f"perturbation before any purifier: {text} (success: of the images" in format_report(result)
    model = {"name": "student_cnn", "weights": str(tiny["classifier"]), "label": "tiny-cnn"}
    table = {
        "name": "minimal",
        "caption": "CW.",
        "classifiers": [model],
        "rows": [{"label": "CW", "name": "cw", "norm": "l2"}],
        "columns": [{"label": "Original"}],
    }
    table = preset_from_dict({"title": "one", "data": str(xray_train_dir), "split": "val", "tables": [table]}, "one").tables[0]
    metrics = {"perturbation": result["perturbation"]}
    record = {"table": "minimal", "classifier": "tiny-cnn", "row": "CW", "column": "Original", "threat": "grey", "metrics": metrics}
    assert f"- CW against Original [grey]: {text}" in perturbation_lines([record], table, "tiny-cnn")
    summary = {"success_rate": 0.5, "l2_median": 0.12345, "l2_max": 1.0, "linf_median": None, "linf_max": None}
    assert perturbation_text(summary) == "success 50.0 %, L2 median 0.123 (max 1.000), L-inf median n/a (max n/a)"
    assert perturbation_text({**summary, "success_rate": None}).startswith("success n/a, ")
