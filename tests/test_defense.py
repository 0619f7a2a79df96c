"""Named defenses: the committed recommended file, its CLI form, and refusals in one line."""

from __future__ import annotations

import json

import pytest

from core.defense import Defense, list_defenses, load_defense
from core.errors import PurifyLabError
from core.models import list_classifiers
from core.purifiers import create_purifier


def test_the_recommended_defense_names_a_registered_classifier_and_a_buildable_purifier():
    defense = load_defense("recommended")
    assert "recommended" in list_defenses() and defense.classifier in list_classifiers()
    purifier = create_purifier(defense.purifier, **defense.params)
    assert purifier.name == defense.purifier and defense.chosen_on and defense.description


def test_purifier_spec_is_the_cli_form():
    assert Defense("d", "resnet", "gaussian", {"sigma": 0.25}).purifier_spec == "gaussian:sigma=0.25"
    assert Defense("d", "resnet", "none").purifier_spec == "none"


def test_unknown_and_malformed_defenses_are_refused_in_one_line(tmp_path):
    with pytest.raises(PurifyLabError, match="^defense 'nope' not found; choose one of: none$"):
        load_defense("nope", tmp_path)
    (tmp_path / "bad.yaml").write_text("classifier: resnet\nweights: x\n")
    with pytest.raises(PurifyLabError, match="^bad.yaml must be a mapping with classifier, purifier"):
        load_defense("bad", tmp_path)


def test_certify_refuses_a_defense_that_is_not_smoothing_noise(tmp_path, capsys, monkeypatch):
    import core.defense
    from core.cli import main

    (tmp_path / "blurry.yaml").write_text("classifier: resnet\npurifier: blur\n")
    (tmp_path / "smooth.yaml").write_text("classifier: resnet_smooth\npurifier: gaussian\nparams: {sigma: 0.25}\n")
    monkeypatch.setattr(core.defense, "DEFENSES_DIR", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["certify", "--data", str(tmp_path), "--defense", "blurry"])
    assert exit_info.value.code == 2 and "certify needs a gaussian-noise defense (smooth)" in capsys.readouterr().err


def test_the_committed_smoothing_defense_is_the_certifiable_one():
    smoothing = load_defense("smoothing")
    assert smoothing.purifier == "gaussian" and 0 < smoothing.params["sigma"] <= 0.5 and smoothing.classifier in list_classifiers()


def test_a_defended_classifier_refuses_an_image_outside_unit_range_in_one_line():
    """A 0-255 image came out of clamp_to_unit white and read as pneumonia with P 0.98."""
    import torch

    from core.defended import DefendedClassifier
    from core.models import create_classifier

    torch.manual_seed(0)
    classifier = create_classifier("student_cnn", pretrained=False, image_size=32, widths=(4, 8, 8, 8)).eval()
    defended = DefendedClassifier(create_purifier("gaussian", sigma=0.5), classifier)
    x = torch.rand(2, 1, 32, 32, requires_grad=True)
    defended(x).sum().backward()  # an image in [0, 1] passes, with its gradient
    assert x.grad is not None and x.grad.abs().sum() > 0
    for bad, message in ((x.detach() * 255, r"values span .*expected \[0, 1\]"), (x.detach() - 0.5, r"expected \[0, 1\]")):
        with pytest.raises(PurifyLabError, match=message):
            defended(bad)


@pytest.mark.parametrize(
    "text, message",
    [
        ("classifier: resnet\npurifier: ddpm\nparams: t_star=0.1\n", "^bad.yaml: params must be a dict; got 't_star=0.1'$"),
        ("classifier: [resnet]\npurifier: none\n", r"^bad.yaml: classifier must be a string; got \['resnet'\]$"),
        ("classifier: resnet\npurifier: gaussian\nparams:\n", "^bad.yaml: params must be a dict; got None$"),
        ("classifier: resnet\npurifier: gaussian\nparams: {1: 2}\n", "^bad.yaml: params keys must be purifier parameter names; got 1$"),
        ("classifier: resnet\npurifier: none\nchosen_on: 2024-05-01\n", "^bad.yaml: chosen_on must be a string; got datetime.date"),
        ("classifier: resnet\npurifier: [none\n", "^bad.yaml is not readable YAML: "),
    ],
)
def test_a_defense_file_with_a_field_of_the_wrong_type_is_refused_naming_the_file_and_field(tmp_path, text, message):
    """`params: t_star=0.1` loaded and failed later as AttributeError; `classifier: [resnet]` loaded as a list."""
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(PurifyLabError, match=message) as error:
        load_defense("bad", tmp_path)
    assert "\n" not in str(error.value)


def test_a_defended_classifier_reads_float64_and_float16_as_purify_does():
    """It checked a float32 copy and threw it away: float64 reached the network as a raw RuntimeError."""
    import torch

    from core.defended import DefendedClassifier
    from core.models import create_classifier

    torch.manual_seed(0)
    classifier = create_classifier("student_cnn", pretrained=False, image_size=32, widths=(4, 8, 8, 8)).eval()
    defended = DefendedClassifier(create_purifier("gaussian", sigma=0.5), classifier, seed=3)
    x = torch.rand(2, 1, 32, 32)
    for other in (x.double(), x.half()):
        defended.reset()
        expected = defended(other.float())
        defended.reset()
        wide = other.clone().requires_grad_(True)
        logits = defended(wide)
        assert logits.dtype == torch.float32 and torch.equal(logits, expected)
        logits.sum().backward()
        assert wide.grad is not None and wide.grad.dtype == other.dtype


def test_a_defended_classifier_refuses_names_in_place_of_built_networks():
    from core.defended import DefendedClassifier
    from core.models import create_classifier

    classifier = create_classifier("student_cnn", pretrained=False, image_size=32, widths=(4, 8, 8, 8))
    with pytest.raises(PurifyLabError, match=r"^purifier must be a built purifier \(create_purifier\(name, \.\.\.\) returns one\), got str 'blur'$"):
        DefendedClassifier("blur", classifier)
    with pytest.raises(PurifyLabError, match=r"^classifier must be a built network \(create_classifier\(name\) returns one\), got dict \{'name': 'resnet'\}$"):
        DefendedClassifier(create_purifier("blur"), {"name": "resnet"})


SMOOTHING = "classifier: resnet_smooth\npurifier: gaussian\nparams: {sigma: 0.25}\n"


@pytest.fixture
def defenses_dir(tmp_path, monkeypatch):
    """An empty folder read as configs/defenses/, so a test writes the files it needs and never the repository's."""
    import core.defense

    folder = tmp_path / "defenses"
    folder.mkdir()
    monkeypatch.setattr(core.defense, "DEFENSES_DIR", folder)
    return folder


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from core.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def test_certify_refuses_weights_beside_a_defense(defenses_dir, tmp_path, capsys):
    """It certified the given weights and labelled the certificate and its curve with the defense's name."""
    (defenses_dir / "smooth.yaml").write_text(SMOOTHING)
    args = ["certify", "--data", str(tmp_path), "--defense", "smooth", "--weights", str(tmp_path / "resnet.safetensors")]
    code, _, err = _run_cli(args, capsys)
    assert code == 2 and err.strip() == "error: --defense smooth fixes its classifier, but --weights was given; drop one of them"


@pytest.mark.parametrize(
    "params, message",
    [
        ("{sigma: abc}", "parameter sigma='abc' is not a valid float"),
        ("{sigma: [0.5]}", "sigma must be a number; got [0.5]"),
        ("{sigma: true}", "sigma must be a number; got True"),
        ("{sigma: 0.25, sigmaa: 0.25}", "unknown parameter 'sigmaa' for this purifier; allowed: sigma"),
        ("{sigma: 2.0}", "sigma"),
    ],
)
def test_certify_reads_a_defenses_sigma_through_the_purifiers_typed_config(defenses_dir, tmp_path, capsys, params, message):
    """A bare float(): 'abc' and [0.5] were tracebacks, `true` certified at sigma 1.0, `sigmaa` was ignored."""
    (defenses_dir / "smooth.yaml").write_text(f"classifier: resnet_smooth\npurifier: gaussian\nparams: {params}\n")
    code, _, err = _run_cli(["certify", "--data", str(tmp_path), "--defense", "smooth"], capsys)
    assert code == 2 and err.startswith("error: smooth.yaml: ") and message in err and len(err.strip().splitlines()) == 1, err


def test_a_broken_defense_file_neither_hijacks_another_refusal_nor_empties_the_listing(defenses_dir, tmp_path, capsys):
    """Certify's hint loaded every file and `purifylab defenses` stopped at the first bad one, both
    answering with the draft's error."""
    (defenses_dir / "blurry.yaml").write_text("classifier: resnet\npurifier: blur\n")
    (defenses_dir / "smooth.yaml").write_text(SMOOTHING)
    (defenses_dir / "draft.yaml").write_text("classifier: resnet\npurifier: gaussian\nparams:\n")
    code, _, err = _run_cli(["certify", "--data", str(tmp_path), "--defense", "blurry"], capsys)
    assert code == 2 and err.strip() == "error: defense 'blurry' purifies with 'blur'; certify needs a gaussian-noise defense (smooth)"
    code, out, err = _run_cli(["defenses", "--json"], capsys)
    assert code == 0, err
    rows = {row["name"]: row for row in json.loads(out)}
    assert sorted(rows) == ["blurry", "draft", "smooth"] and rows["smooth"]["purifier"] == "gaussian:sigma=0.25" and "error" not in rows["smooth"]
    assert rows["draft"] == {"name": "draft", "error": "draft.yaml: params must be a dict; got None"}
    code, out, err = _run_cli(["defenses"], capsys)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3 and "error: draft.yaml: params must be a dict; got None" in lines[1] and "gaussian:sigma=0.25" in lines[2]


def test_evaluate_compares_a_defenses_purifier_as_settings_not_as_text(defenses_dir, xray_test_dir, tmp_path, capsys):
    """`--purifier blur:sigma=0.50` was refused against the file's blur:sigma=0.5, as the same text differently spelled."""
    (defenses_dir / "blurred.yaml").write_text("classifier: resnet\npurifier: blur\nparams: {sigma: 0.5}\n")
    evaluate = ["evaluate", "--data", str(xray_test_dir), "--defense", "blurred", "--limit", "2", "--threads", "1"]
    code, _, err = _run_cli([*evaluate, "--purifier", "blur:sigma=0.6"], capsys)
    assert code == 2 and err.strip() == "error: --defense blurred sets --purifier blur:sigma=0.5, but --purifier blur:sigma=0.6 was given; drop one of them"
    for spelling in ("blur:sigma=0.50", "blur:sigma=.5"):
        out = tmp_path / "blurred.json"
        code, _, err = _run_cli([*evaluate, "--purifier", spelling, "--json", str(out), "--overwrite"], capsys)
        assert code == 0, err
        config = json.loads((tmp_path / "blurred.config.json").read_text())
        assert config["defense"] == "blurred" and config["purifier"] == "blur" and config["purifier_params"] == {"sigma": 0.5}
