"""Denoised smoothing's CERTIFY against hand-computed cases, and the certify command end to end."""

from __future__ import annotations

import json
import re
import warnings
from statistics import NormalDist

import numpy as np
import pytest
import torch

from core.certify import (
    ABSTAIN,
    CertifyConfig,
    certified_accuracy,
    certified_balanced_accuracy,
    certified_curve,
    certify_images,
    lower_confidence_bound,
)
from core.errors import PurifyLabError
from core.models import create_classifier
from core.purifiers.diffusion import DEFAULT_SCHEDULE
from core.purifiers.one_shot import OneShotPurifier
from core.purifiers.unet import build_unet

SIZE = 16


def _always(label: int):
    """A real (tiny) classifier whose weights are zero and whose bias makes `label` win on every input."""
    model = create_classifier("student_cnn", pretrained=False, image_size=SIZE, widths=(4, 4, 4, 4))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.head[-1].bias[label] = 1.0
    return model.eval()


def test_lower_confidence_bound_by_hand():
    # all n draws agree: the one-sided bound solves p^n = alpha
    assert lower_confidence_bound(100, 100, 0.001) == pytest.approx(0.001 ** (1 / 100))
    assert lower_confidence_bound(0, 100, 0.001) == 0.0


def test_a_unanimous_classifier_is_certified_at_the_hand_computed_radius():
    torch.manual_seed(0)
    denoiser = OneShotPurifier(unet=build_unet("tiny", sample_size=SIZE), schedule=DEFAULT_SCHEDULE)
    images = torch.rand(4, 1, SIZE, SIZE)
    labels = torch.tensor([1, 1, 0, 0])
    config = CertifyConfig(sigma=0.25, n0=10, n=100, alpha=0.001, batch_size=40)
    result = certify_images(_always(1), denoiser, images, labels, config)
    radius = 0.25 * NormalDist().inv_cdf(0.001 ** (1 / 100))  # 0.375
    assert [row["prediction"] for row in result["per_image"]] == [1, 1, 1, 1]
    assert all(row["radius"] == pytest.approx(radius, abs=1e-6) for row in result["per_image"])
    assert result["certified_accuracy"]["0.25"] == 0.5 and result["certified_accuracy"]["0.5"] == 0.0
    assert result["certified_balanced_accuracy"]["0.25"] == 0.5  # class 1 fully, class 0 not at all
    # one draw can never certify at alpha 0.001: abstain
    single = certify_images(_always(1), denoiser, images[:1], labels[:1], CertifyConfig(sigma=0.25, n0=1, n=1))
    assert single["per_image"][0] == {"label": 1, "prediction": ABSTAIN, "radius": None} and single["abstained"] == 1


def test_certified_accuracy_counts_abstentions_as_wrong():
    predictions, radii, labels = np.array([1, 0, ABSTAIN, 1]), np.array([0.6, 0.3, -1.0, 0.1]), np.array([1, 0, 0, 0])
    assert certified_accuracy(predictions, radii, labels, 0.0) == 0.5
    assert certified_accuracy(predictions, radii, labels, 0.5) == 0.25
    assert certified_balanced_accuracy(predictions, radii, labels, 0.25) == pytest.approx((1.0 + 1 / 3) / 2)


@pytest.mark.parametrize("params, message", [(dict(sigma=0.0), "sigma"), (dict(n=0), "n must be"), (dict(alpha=0.7), "alpha")])
def test_bad_settings_are_refused(params, message):
    with pytest.raises(PurifyLabError, match=message):
        CertifyConfig(**params).validate()


def test_certify_command_refuses_bad_input_before_loading_anything(tmp_path, xray_test_dir, capsys):
    from core.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["certify", "--data", str(tmp_path / "nowhere"), "--sigma", "0.25"])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["certify", "--data", str(tmp_path), "--sigma", "0.25"])  # an empty folder: no data set
    assert exit_info.value.code == 2 and "unknown data layout" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["certify", "--data", str(xray_test_dir), "--sigma", "-1"])
    assert exit_info.value.code == 2 and "sigma" in capsys.readouterr().err


def test_certify_command_on_real_test_xrays(xray_test_dir, tmp_path, capsys):
    from core.cli import main

    out = tmp_path / "certify.json"
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "certify",
                "--data",
                str(xray_test_dir),
                "--classifier",
                "student_cnn",
                "--n",
                "8",
                "--n0",
                "2",
                "--alpha",
                "0.1",
                "--limit",
                "2",
                "--batch-size",
                "8",
                "--json",
                str(out),
            ]
        )
    assert exit_info.value.code == 0
    result = json.loads(out.read_text())
    assert result["n"] == 8 and result["sigma"] == 0.25 and result["data"]["split"] == "all" and len(result["per_image"]) == 2
    assert set(result["certified_accuracy"]) >= {"0.25", "0.5", "1.0"} and "radius_units" in result
    assert json.loads(out.with_name("certify.config.json").read_text())["classifier"] == "student_cnn"
    assert "certified balanced accuracy" in (tmp_path / "certified_curve.html").read_text()


def test_certify_command_certifies_a_given_weights_file(xray_test_dir, tmp_path):
    """--weights: a candidate is certified before it ships; the result names the file it measured."""
    from core.cli import main
    from core.models import create_classifier
    from core.weights import save_weights

    model = create_classifier("student_cnn")
    with torch.no_grad():
        next(model.parameters()).mul_(0.5)  # another network than the shipped one
    candidate = tmp_path / "candidate" / "student_cnn.safetensors"
    card = save_weights(model, candidate, {key: value for key, value in model.card.items() if key != "sha256"})
    assert card["sha256"] != model.card["sha256"]
    out = tmp_path / "certify.json"
    args = ["certify", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--weights", str(candidate)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--n", "8", "--n0", "2", "--alpha", "0.1", "--limit", "1", "--denoiser", "none", "--json", str(out)])
    assert exit_info.value.code == 0
    assert json.loads(out.read_text())["classifier_sha256"] == card["sha256"]
    assert json.loads(out.with_name("certify.config.json").read_text())["weights"].endswith("candidate/student_cnn.safetensors")


def test_without_a_denoiser_the_noisy_copies_go_straight_to_the_noise_trained_classifier():
    images = torch.rand(2, 1, SIZE, SIZE)
    config = CertifyConfig(sigma=0.5, n0=10, n=100, alpha=0.001, batch_size=64)
    result = certify_images(_always(0), None, images, torch.tensor([0, 1]), config)
    radius = 0.5 * NormalDist().inv_cdf(0.001 ** (1 / 100))  # 0.75: twice the sigma-0.25 case above
    assert [row["prediction"] for row in result["per_image"]] == [0, 0]
    assert result["per_image"][0]["radius"] == pytest.approx(radius, abs=1e-6)
    assert result["certified_accuracy"]["0.5"] == 0.5 and result["certified_balanced_accuracy"]["0.5"] == 0.5
    curve = certified_curve(result, np.array([0.0, 0.7, 0.8]))
    assert curve["certified_accuracy"] == [0.5, 0.5, 0.0] and curve["certified_balanced_accuracy"] == [0.5, 0.5, 0.0]


@pytest.mark.parametrize(
    "scale, labels, message",
    [
        (255.0, torch.tensor([0, 1]), r"image values span \[.*\]; expected \[0, 1\]"),
        (float("nan"), torch.tensor([0, 1]), "image contains NaN or Inf pixels"),
        (1.0, torch.tensor([0]), r"labels of shape \(1,\) do not fit 2 images"),
        (1.0, torch.tensor([0, 2]), r"labels span \[0, 2\]"),
    ],
)
def test_bad_images_and_labels_are_refused_before_any_draw(scale, labels, message):
    """A 0-255 or NaN image was certified at the largest radius; a missing label surfaced after all the draws."""
    images = torch.rand(2, 1, SIZE, SIZE) * scale
    with pytest.raises(PurifyLabError, match=f"^{message}"):
        certify_images(_always(0), None, images, labels, CertifyConfig(n0=1, n=1))


def test_an_image_of_the_wrong_size_is_refused():
    with pytest.raises(PurifyLabError, match="^[^\n]*$"):
        certify_images(_always(0), None, torch.rand(1, 1, SIZE * 2, SIZE * 2), torch.tensor([0]), CertifyConfig(n0=1, n=1))


@pytest.mark.parametrize("field, value", [("n0", 2.5), ("n", "10"), ("sigma", None)])
def test_settings_of_the_wrong_type_are_refused_in_one_line(field, value):
    with pytest.raises(PurifyLabError, match=f"^{field} must be"):
        CertifyConfig(**{field: value})


def test_resnet_smooth_is_described_with_its_cards_noise():
    from core.models import list_classifiers
    from core.weights import WEIGHTS_DIR, read_card

    sigma = read_card(WEIGHTS_DIR / "resnet_smooth.safetensors")["reads_through"]["params"]["sigma"]
    assert f"std {sigma}" in list_classifiers()["resnet_smooth"]


def test_a_sigma_deeper_than_the_denoiser_was_trained_for_is_warned_before_any_draw():
    """sigma 0.5 maps to t = 258 of 1000 on the default schedule; the shipped X-ray denoiser learnt t <= 250."""
    denoiser = OneShotPurifier(unet=build_unet("tiny", sample_size=SIZE), schedule=DEFAULT_SCHEDULE)
    denoiser.max_t_fraction = 0.25  # the shipped ddpm_unet card's
    images, labels = torch.rand(1, 1, SIZE, SIZE), torch.tensor([0])
    with pytest.warns(UserWarning, match=r"sigma=0.5 \(t=258\) is deeper than denoiser .* \(t <= 0.25 T"):
        certify_images(_always(0), denoiser, images, labels, CertifyConfig(sigma=0.5, n0=1, n=1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        certify_images(_always(0), denoiser, images, labels, CertifyConfig(sigma=0.25, n0=1, n=1))


def test_the_first_timestep_past_the_denoisers_training_is_warned_as_the_purifiers_warn_it():
    """Timestep 249 (0-based) is t* 0.25, the deepest the shipped denoiser learnt; sigma 0.478 maps to
    timestep 250, which certify let pass while the purifiers warn at t* 0.251."""
    denoiser = OneShotPurifier(unet=build_unet("tiny", sample_size=SIZE), schedule=DEFAULT_SCHEDULE)
    denoiser.max_t_fraction = 0.25
    assert denoiser.timestep_for_sigma(0.478) == 250
    with pytest.warns(UserWarning, match=r"sigma=0.478 \(t=250\) is deeper"):
        certify_images(_always(0), denoiser, torch.rand(1, 1, SIZE, SIZE), torch.tensor([0]), CertifyConfig(sigma=0.478, n0=1, n=1))


def test_the_certified_curve_names_its_input_size_data_and_split():
    """The curve said "128 px" and "X-rays" for any classifier, and never named the split."""
    from core.tables.render import certified_figure

    result = certify_images(_always(0), None, torch.rand(2, 1, SIZE, SIZE), torch.tensor([0, 1]), CertifyConfig(sigma=0.25, n0=1, n=10))
    result.update(classifier="tiny", data={"folder": "../shared/data/mnist/t10k", "split": "val"})
    assert result["image_size"] == SIZE
    figure = certified_figure([result]).to_dict()
    assert figure["layout"]["xaxis"]["title"]["text"] == f"L2 radius ([0, 1] pixels at the classifier's {SIZE} px input)"
    assert figure["data"][0]["name"] == "tiny, sigma 0.25, denoiser not recorded (n = 10 noise draws on cpu, alpha 0.001; 2 images of mnist/t10k, split 'val')"
    older = {key: value for key, value in result.items() if key != "image_size"} | {"classifier": "resnet_smooth"}
    assert "128 px input" in certified_figure([older]).to_dict()["layout"]["xaxis"]["title"]["text"]  # its card's size


@pytest.mark.parametrize(
    "classifier, denoiser, message",
    [
        ("student_cnn", "ddpm_unet_mnist", "takes 1-channel 28 px images; the classifier reads 1-channel 128 px images; name one that does: ddpm_unet$"),
        ("student_cnn", "cold_unet", "is not a shipped noise-prediction network .*; name one that does: ddpm_unet$"),
        ("cifar10_cnn", "ddpm_unet_mnist", "takes 1-channel 28 px images; the classifier reads 3-channel 32 px images; name one that does: ddpm_unet_cifar10$"),
        ("mnist_cnn", "ddpm_unet", "takes 1-channel 128 px images; the classifier reads 1-channel 28 px images; name one that does: ddpm_unet_mnist$"),
    ],
)
def test_certify_refuses_a_denoiser_of_another_input_before_reading_any_image(classifier, denoiser, message, tmp_path, capsys):
    """The first noise draw refused it, after the whole split had loaded, and advised a resize certify cannot do.
    The X-ray files here do not decode: reading them first would answer with a data error instead."""
    from core.cli import main

    for name in ("NORMAL", "PNEUMONIA"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "1.jpeg").write_bytes(b"not an image")
    with pytest.raises(SystemExit) as exit_info:
        main(["certify", "--data", str(tmp_path), "--classifier", classifier, "--denoiser", denoiser])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert re.search(f"^error: denoiser '{denoiser}' {message}", err.strip()) and "resize" not in err


def test_a_classifier_no_shipped_denoiser_fits_is_told_to_train_one():
    from core.certify import check_denoiser_fits

    with pytest.raises(PurifyLabError, match="^denoiser 'ddpm_unet' takes 1-channel 128 px images; the classifier reads 1-channel 16 px images; none is"):
        check_denoiser_fits("ddpm_unet", _always(0))


def test_certified_intervals_by_hand_3_of_4_certified():
    """Certify reported 1.0000 on 4 images with no interval; these are the exact 95 % intervals by hand."""
    from scipy.stats import beta

    from core.certify import certified_confidence_95

    # at radius 0.25: images 0, 1 (class 0) and 2 (class 1) certified correct; 3 certified too small
    predictions, radii, labels = np.array([0, 0, 1, 1]), np.array([0.5, 0.3, 0.4, 0.1]), np.array([0, 0, 1, 1])
    intervals = certified_confidence_95(predictions, radii, labels, 0.25)
    # Clopper-Pearson, 3 of 4: [Beta(3, 2) at 2.5 %, Beta(4, 1) at 97.5 % = 0.975 ** (1 / 4)]
    assert intervals["certified_accuracy"] == pytest.approx([beta.ppf(0.025, 3, 2), 0.975**0.25])
    # Bonferroni: each class's CP bounds at 97.5 % (tails 1.25 %), averaged; 2 of 2 -> [0.0125 ** (1 / 2), 1],
    # 1 of 2 -> [1 - 0.9875 ** (1 / 2), 0.9875 ** (1 / 2)]
    low, high = (0.0125**0.5 + 1 - 0.9875**0.5) / 2, (1 + 0.9875**0.5) / 2
    assert intervals["certified_balanced_accuracy"] == pytest.approx([low, high])
    assert certified_balanced_accuracy(predictions, radii, labels, 0.25) == 0.75  # inside it


def test_certify_results_carry_the_intervals_beside_unchanged_figures():
    images = torch.rand(2, 1, SIZE, SIZE)
    config = CertifyConfig(sigma=0.5, n0=10, n=100, alpha=0.001, batch_size=64)
    result = certify_images(_always(0), None, images, torch.tensor([0, 1]), config)
    assert result["certified_accuracy"]["0.5"] == 0.5 and result["certified_balanced_accuracy"]["0.5"] == 0.5
    # 1 of 2 certified: CP [1 - 0.975 ** (1 / 2), 0.975 ** (1 / 2)]; by class 1 of 1 -> [0.0125, 1] and 0 of 1 -> [0, 0.9875]
    assert result["confidence_95"]["certified_accuracy"]["0.5"] == pytest.approx([1 - 0.975**0.5, 0.975**0.5])
    assert result["confidence_95"]["certified_balanced_accuracy"]["0.5"] == pytest.approx([0.0125 / 2, (1 + 0.9875) / 2])
    assert result["confidence_95"]["certified_accuracy"]["1.0"] == pytest.approx([0.0, 1 - 0.025**0.5])  # 0 of 2 at 1.0 > 0.75


def test_the_certified_curve_legend_names_the_denoiser_alpha_and_noise_draws():
    """Runs with --denoiser none and ddpm_unet got one label, and its "n" (noise draws) read as images."""
    from core.tables.render import certified_figure

    torch.manual_seed(0)
    denoiser = OneShotPurifier(unet=build_unet("tiny", sample_size=SIZE), schedule=DEFAULT_SCHEDULE)
    images, labels = torch.rand(2, 1, SIZE, SIZE), torch.tensor([0, 1])
    plain = certify_images(_always(0), None, images, labels, CertifyConfig(sigma=0.25, n0=1, n=10, alpha=0.01))
    denoised = certify_images(_always(0), denoiser, images, labels, CertifyConfig(sigma=0.25, n0=1, n=10, alpha=0.01))
    where = {"classifier": "tiny", "data": {"folder": "../shared/data/mnist/t10k", "split": "val"}}
    plain.update(where, denoiser="none")  # as certify records its --denoiser
    denoised.update(where, denoiser="ddpm_unet")
    names = [trace["name"] for trace in certified_figure([plain, denoised]).to_dict()["data"]]
    assert names == [
        f"tiny, sigma 0.25, denoiser {name} (n = 10 noise draws on cpu, alpha 0.01; 2 images of mnist/t10k, split 'val')" for name in ("none", "ddpm_unet")
    ]
    older = {key: value for key, value in plain.items() if key not in ("denoiser", "config", "device")}  # written before these were recorded
    name = certified_figure([older]).to_dict()["data"][0]["name"]
    assert name.startswith("tiny, sigma 0.25, denoiser not recorded (n = 10 noise draws on a device not recorded, alpha not recorded;")


def test_a_denoiser_that_is_not_the_one_shot_purifier_is_refused_in_one_line():
    """Any other purifier failed as an AttributeError ('timestep_for_sigma') after the boundary checks."""
    from core.purifiers import create_purifier

    message = r"^denoiser must be the one_shot purifier or None \(create_purifier\('one_shot', \.\.\.\) builds it\), got "
    for denoiser, shown in ((create_purifier("blur"), "GaussianBlurPurifier 'blur'$"), ("one_shot", "str 'one_shot'$")):
        with pytest.raises(PurifyLabError, match=message + shown):
            certify_images(_always(0), denoiser, torch.rand(1, 1, SIZE, SIZE), torch.tensor([0]), CertifyConfig(n0=1, n=1))


def test_certify_hands_the_classifier_back_in_the_mode_it_came_in():
    """It switched a caller's model (mid-training, say) to eval mode for good; craft and evaluate_defended restore it."""
    classifier = _always(0).train()
    certify_images(classifier, None, torch.rand(2, 1, SIZE, SIZE), torch.tensor([0, 1]), CertifyConfig(n0=2, n=4))
    assert classifier.training and all(module.training for module in classifier.modules())
    assert all(parameter.requires_grad for parameter in classifier.parameters())


def test_a_certificate_names_the_device_its_noise_was_drawn_on(xray_test_dir, tmp_path, capsys):
    """A CUDA generator draws other noise than a CPU one for the same seed, and the result did not say which drew it."""
    from core.cli import main

    assert certify_images(_always(0), None, torch.rand(1, 1, SIZE, SIZE), torch.tensor([0]), CertifyConfig(n0=1, n=2))["device"] == "cpu"
    out = tmp_path / "c.json"
    args = ["certify", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--n", "4", "--n0", "2", "--limit", "1", "--threads", "1"]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--json", str(out)])
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert json.loads(out.read_text())["device"] == "cpu"
