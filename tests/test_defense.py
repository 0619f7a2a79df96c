"""Named defenses: the committed recommended file, its CLI form, and refusals in one line."""

from __future__ import annotations

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
