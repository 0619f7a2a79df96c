"""Classifier registry: construction and shapes of every model, input contract, weights safety."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import core.micro_batch as micro_batch
from core.errors import PurifyLabError
from core.models import SEViT, create_classifier, list_classifiers
from core.weights import save_weights

TINY = {
    "vit": dict(image_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2),
    "resnet_at": dict(image_size=32, widths=(4, 8, 8, 8), layers=(1, 1, 1, 1)),
    "resnet": dict(image_size=32, widths=(4, 8, 8, 8), layers=(1, 1, 1, 1)),
    "resnet_smooth": dict(image_size=32, widths=(4, 8, 8, 8), layers=(1, 1, 1, 1)),
    "sevit": dict(image_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_heads=2),
    "student_cnn": dict(image_size=32, widths=(4, 8, 8, 8)),
    "substitute": dict(image_size=32, widths=(4, 8, 8)),
}
# The papers' own data sets: (channels, classes, side) of each model's input and output.
OTHER_DATA = {"mnist_cnn": (1, 10, 28), "mnist_cnn_at": (1, 10, 28), "cifar10_cnn": (3, 10, 32), "cifar10_cnn_at": (3, 10, 32)}


def test_registry_lists_the_xray_and_paper_dataset_classifiers():
    assert set(list_classifiers()) == set(TINY) | set(OTHER_DATA)


@pytest.mark.parametrize("name", sorted(OTHER_DATA))
def test_mnist_and_cifar_models_take_their_channels_and_answer_ten_classes(name):
    channels, classes, side = OTHER_DATA[name]
    model = create_classifier(name, pretrained=False).eval()
    assert (model.in_channels, model.num_classes, model.image_size) == (channels, classes, side)
    assert model(torch.rand(2, channels, side, side)).shape == (2, classes)
    with pytest.raises(PurifyLabError, match=f"takes \\(N, {channels}, {side}, {side}\\)"):
        model(torch.rand(2, 4 - channels, side, side))


def test_every_name_maps_to_its_data_set():
    from core.data.locations import CIFAR10_FILE, MNIST_FILE, XRAY_TRAIN_DIR, default_data_for

    assert default_data_for("mnist_cnn_at") == default_data_for("ddpm_unet_mnist") == MNIST_FILE
    assert default_data_for("cifar10") == default_data_for("cifar10_cnn") == CIFAR10_FILE
    assert default_data_for("vit") == default_data_for("cpu") == XRAY_TRAIN_DIR


def test_channels_and_classes_travel_in_the_card(tmp_path):
    model = create_classifier("cifar10_cnn", pretrained=False, widths=(4, 8))
    save_weights(model, tmp_path / "c.safetensors", {"architecture": model.architecture})
    rebuilt = create_classifier("cifar10_cnn", weights=tmp_path / "c.safetensors")
    assert rebuilt.architecture == model.architecture
    assert (rebuilt.in_channels, rebuilt.num_classes) == (3, 10)


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_classifier_maps_unit_images_to_two_logits(name):
    model = create_classifier(name, pretrained=False, **TINY[name]).eval()
    x = torch.rand(3, 1, 32, 32)
    logits = model(x)
    assert logits.shape == (3, 2)
    assert torch.isfinite(logits).all()
    assert model.image_size == 32 and model.card is None


@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_eval_calls_run_in_micro_batches_on_a_cpu_with_the_logits_and_gradient_of_one_call(name, monkeypatch):
    """Past `micro_batch.PIXELS` an eval-mode call is cut into chunks; in training mode it is not,
    since BatchNorm's statistics are the whole batch's."""
    torch.manual_seed(0)
    model = create_classifier(name, pretrained=False, **TINY[name]).eval()
    x = torch.rand(7, 1, 32, 32)

    def logits_and_gradient() -> tuple[torch.Tensor, torch.Tensor]:
        rows = x.clone().requires_grad_(True)
        logits = model(rows)
        logits[:, 1].sum().backward()
        return logits.detach(), rows.grad

    whole = logits_and_gradient()
    monkeypatch.setitem(micro_batch.PIXELS, "classifier", 3 * 32 * 32)
    sizes: list[int] = []
    model_logits = model.logits
    monkeypatch.setattr(model, "logits", lambda rows: sizes.append(rows.shape[0]) or model_logits(rows))
    chunked = logits_and_gradient()
    model.train()
    model(x)
    assert sizes == [3, 3, 1, 7]
    for one_call, in_chunks in zip(whole, chunked, strict=True):
        torch.testing.assert_close(in_chunks, one_call, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 64, 64), (1, 32, 32)])
def test_wrong_input_shape_is_refused_with_a_message(shape):
    model = create_classifier("vit", pretrained=False, **TINY["vit"])
    with pytest.raises(PurifyLabError, match="resize explicitly"):
        model(torch.rand(*shape))


def test_default_sizes_fit_the_budgets():
    vit = create_classifier("vit", pretrained=False)
    student = create_classifier("student_cnn", pretrained=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert vit.image_size == 128
    assert count(vit) * 2 <= 3e6  # <= 3 MB in fp16
    assert count(student) * 10 <= count(vit)  # a tenth of the teacher or less


def test_sevit_freezes_the_vit_and_combines_probabilities():
    model = create_classifier("sevit", pretrained=False, **TINY["sevit"]).train()
    assert isinstance(model, SEViT)
    assert not any(p.requires_grad for p in model.vit.parameters())
    assert all(p.requires_grad for p in model.heads.parameters())
    assert not model.vit.training  # the frozen backbone never uses dropout
    model.eval()
    x = torch.rand(4, 1, 32, 32)
    members = model.member_logits(x)
    assert len(members) == 3  # two block heads + the ViT head
    expected = torch.stack([m.softmax(1) for m in members]).mean(0)
    assert torch.allclose(model(x).exp(), expected, atol=1e-6)
    # the detector's score as its docstring defines it: per image, the mean over block heads of KL(final || head)
    log_final = members[-1].log_softmax(1)
    divergences = [(log_final.exp() * (log_final - head.log_softmax(1))).sum(1) for head in members[:-1]]
    score = model.detection_score(x)
    assert torch.allclose(score, torch.stack(divergences).mean(0), atol=1e-9)
    assert score.shape == (4,) and (score >= 0).all() and score.sum() > 0  # random heads disagree with the ViT's


def test_sevit_vote_follows_the_majority():
    model = create_classifier("sevit", pretrained=False, combine="vote", **TINY["sevit"]).eval()
    x = torch.rand(5, 1, 32, 32)
    votes = torch.stack([m.argmax(1) for m in model.member_logits(x)])  # (3, N)
    majority = (votes.sum(0) >= 2).long()
    probabilities = model(x).exp()
    assert torch.allclose(probabilities.sum(1), torch.ones(5))
    assert torch.equal(probabilities.argmax(1), majority)


def test_sevit_options_are_checked():
    with pytest.raises(PurifyLabError, match="combine"):
        create_classifier("sevit", pretrained=False, combine="max", **TINY["vit"])
    with pytest.raises(PurifyLabError, match="mlp_heads"):
        create_classifier("sevit", pretrained=False, mlp_heads=5, **TINY["vit"])


def test_unknown_classifier_names_the_choices():
    with pytest.raises(PurifyLabError, match="choose one of"):
        create_classifier("resnet1000")


def test_missing_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(PurifyLabError, match="purifylab train classifier --model vit"):
        create_classifier("vit", weights=tmp_path / "absent.safetensors")


@pytest.mark.parametrize("name", ["vit", "student_cnn", "substitute"])
def test_safetensors_round_trip_keeps_the_logits(tmp_path, name):
    model = create_classifier(name, pretrained=False, **TINY[name]).eval()
    path = tmp_path / f"{name}.safetensors"
    save_weights(model, path, {"architecture": model.architecture}, fp16=True)
    loaded = create_classifier(name, weights=path)
    assert loaded.card["sha256"] and not loaded.training
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=2e-2, rtol=1e-2)
        # what remains is only fp16 rounding: the same model rounded to fp16 matches to float precision
        assert torch.allclose(loaded(x), model.half().float()(x), atol=1e-5)


def _tiny_sevit_files(tmp_path) -> tuple[SEViT, Path, Path]:
    """A tiny sevit (2 heads) saved as a heads file over its own saved vit: (model, heads, backbone)."""
    backbone_path = tmp_path / "vit.safetensors"
    backbone = create_classifier("vit", pretrained=False, **TINY["vit"])
    card = save_weights(backbone, backbone_path, {"architecture": backbone.architecture})
    sevit = SEViT(create_classifier("vit", weights=backbone_path), mlp_heads=2)
    heads_path = tmp_path / "sevit.safetensors"
    save_weights(sevit.heads, heads_path, {"architecture": sevit.architecture, "backbone_sha256": card["sha256"]})
    return sevit, heads_path, backbone_path


def test_sevit_heads_load_only_over_the_vit_they_were_trained_on(tmp_path):
    sevit, heads_path, backbone_path = _tiny_sevit_files(tmp_path)
    loaded = create_classifier("sevit", weights=heads_path, backbone_weights=backbone_path).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), sevit.eval()(x), atol=1e-5)
    other = tmp_path / "other.safetensors"
    other_vit = create_classifier("vit", pretrained=False, **TINY["vit"])
    save_weights(other_vit, other, {"architecture": other_vit.architecture})
    with pytest.raises(PurifyLabError, match="different vit"):
        create_classifier("sevit", weights=heads_path, backbone_weights=other)


def test_trained_architecture_cannot_be_overridden(tmp_path):
    model = create_classifier("vit", pretrained=False, **TINY["vit"])
    path = tmp_path / "vit.safetensors"
    save_weights(model, path, {"architecture": model.architecture})
    with pytest.raises(PurifyLabError, match="embed_dim"):
        create_classifier("vit", weights=path, embed_dim=32)


@pytest.mark.parametrize("filename", ["vit.pt", "vit.safetensors"])
def test_pickled_weights_are_refused(tmp_path, filename):
    model = create_classifier("vit", pretrained=False, **TINY["vit"])
    path = tmp_path / filename
    torch.save(model.state_dict(), path)  # a pickle, whatever its name says
    path.with_suffix(".json").write_text('{"architecture": {}, "model_class": "XrayViT"}')  # a card that would pass
    with pytest.raises(PurifyLabError, match="refusing"):
        create_classifier("vit", weights=path)


def test_calibration_divides_by_the_temperature_and_moves_the_decision_to_the_threshold(tmp_path):
    torch.manual_seed(0)
    model = create_classifier("student_cnn", pretrained=False, **TINY["student_cnn"]).eval()
    x = torch.rand(64, 1, 32, 32)
    raw = model(x)
    model.calibrate(2.0, 0.8)
    calibrated = model(x)
    scaled = torch.softmax(raw / 2.0, dim=1)[:, 1]
    assert torch.equal(calibrated.argmax(1), (scaled > 0.8).long())
    assert torch.allclose(calibrated[:, 1] - calibrated[:, 0], (raw[:, 1] - raw[:, 0]) / 2.0 - torch.log(torch.tensor(4.0)), atol=1e-5)
    save_weights(model, tmp_path / "s.safetensors", {"architecture": model.architecture, "calibration": {"temperature": 2.0, "threshold": 0.8}})
    reloaded = create_classifier("student_cnn", weights=tmp_path / "s.safetensors")
    assert (reloaded.temperature, reloaded.threshold) == (2.0, 0.8)
    with pytest.raises(PurifyLabError, match="temperature must be > 0"):
        model.calibrate(0.0)
    with pytest.raises(PurifyLabError, match="threshold"):
        create_classifier("mnist_cnn", pretrained=False).calibrate(1.0, 0.5)


def test_an_unknown_option_names_the_ones_the_network_takes():
    for pretrained in (False, True):
        with pytest.raises(PurifyLabError, match="classifier 'resnet' has no option depth; it takes: .*widths"):
            create_classifier("resnet", pretrained=pretrained, depth=3)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (lambda x: x.numpy(), "input must be a torch.Tensor; got ndarray"),
        (lambda x: (x * 255).to(torch.uint8), "dtype is torch.uint8; .*divide 8-bit images by 255"),
        (lambda x: x.double(), "dtype is torch.float64"),
        (lambda x: x.half(), "dtype is torch.float16"),
        (lambda x: x * float("nan"), "NaN or Inf"),
    ],
)
@pytest.mark.parametrize("name", ["resnet", "sevit"])
def test_a_forward_refuses_what_is_not_a_float32_image_in_one_line(name, bad, message):
    """A uint8 or NaN image read as confident garbage; float64 and arrays failed deep inside torch."""
    torch.manual_seed(0)
    model = create_classifier(name, pretrained=False, **TINY[name]).eval()
    with pytest.raises(PurifyLabError, match=message) as error:
        model(bad(torch.rand(2, 1, 32, 32)))
    assert "\n" not in str(error.value)


def test_a_forward_reads_noisy_images_outside_unit_range():
    """Smoothing and noise-augmented training feed images outside [0, 1] on purpose: no range check in forward."""
    torch.manual_seed(0)
    model = create_classifier("resnet", pretrained=False, **TINY["resnet"]).eval()
    noisy = torch.rand(2, 1, 32, 32) + 0.5 * torch.randn(2, 1, 32, 32)
    assert noisy.min() < 0 < 1 < noisy.max() and torch.isfinite(model(noisy)).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a purifier in front hands over its autocast output
        assert model(torch.rand(2, 1, 32, 32).bfloat16()).shape == (2, 2)


def _shipped_folder(tmp_path, monkeypatch, name: str, card: dict) -> None:
    """weights/<name>.* written by save_weights into a folder that stands for weights/."""
    import core.models

    model = create_classifier(name, pretrained=False, **TINY[name])
    save_weights(model, tmp_path / f"{name}.safetensors", {"architecture": model.architecture, **card})
    monkeypatch.setattr(core.models, "WEIGHTS_DIR", tmp_path)


def test_a_shipped_file_whose_card_names_another_model_is_refused(tmp_path, monkeypatch):
    """resnet_smooth's files copied over resnet's loaded silently as 'resnet'."""
    _shipped_folder(tmp_path, monkeypatch, "resnet", {"name": "resnet_smooth"})
    with pytest.raises(PurifyLabError, match="holds the card of 'resnet_smooth', not of 'resnet'"):
        create_classifier("resnet")
    assert create_classifier("resnet_smooth", weights=tmp_path / "resnet.safetensors").card["name"] == "resnet_smooth"  # a file named on purpose


def test_a_card_whose_architecture_contradicts_its_image_size_is_refused(tmp_path, monkeypatch):
    _shipped_folder(tmp_path, monkeypatch, "resnet", {"name": "resnet", "image_size": 64})
    with pytest.raises(PurifyLabError, match="contradicts itself: architecture.image_size 32, image_size 64"):
        create_classifier("resnet")


def test_the_listing_says_how_each_shipped_model_was_trained_from_its_card(tmp_path, monkeypatch):
    """student_cnn was listed as distilled from the ViT, resnet_smooth as fine-tuned: their cards say resnet, from scratch."""
    config = {"model": "student_cnn", "distill_from": "resnet", "init_from": None}
    _shipped_folder(tmp_path, monkeypatch, "student_cnn", {"name": "student_cnn", "classes": ["NORMAL", "PNEUMONIA"], "training_config": config})
    listing = list_classifiers()
    assert listing["student_cnn"].endswith("; distilled from resnet, from scratch")
    assert "trained" not in listing["resnet_smooth"] and "distilled" not in listing["vit"]  # nothing shipped: the layout only


def test_a_trained_sevit_keeps_the_combine_rule_its_calibration_was_fitted_on(tmp_path):
    """combine='vote' over the 'average' card applied a threshold fitted on averages: it overruled 3-1 majorities."""
    sevit, heads_path, backbone_path = _tiny_sevit_files(tmp_path)
    with pytest.raises(PurifyLabError, match="combine differ from the trained 'sevit' weights"):
        create_classifier("sevit", weights=heads_path, backbone_weights=backbone_path, combine="vote")
    assert create_classifier("sevit", weights=heads_path, backbone_weights=backbone_path, combine="average").combine == "average"
    assert create_classifier("sevit", pretrained=False, combine="vote", **TINY["sevit"]).combine == "vote"


def test_a_file_or_card_that_is_not_a_classifiers_is_refused_in_one_line(tmp_path):
    """A purifier's file, another layout, an unknown architecture key and malformed calibrations ended in tracebacks."""
    import json

    model = create_classifier("resnet", pretrained=False, **TINY["resnet"])
    path = tmp_path / "resnet.safetensors"
    card = save_weights(model, path, {"architecture": model.architecture})
    assert card["model_class"] == "XrayResNet"  # save_weights names the class it saved

    def refused(edit: dict, message: str) -> None:
        path.with_suffix(".json").write_text(json.dumps({**card, **edit}))
        with pytest.raises(PurifyLabError, match=message) as error:
            create_classifier("resnet", weights=path)
        assert "\n" not in str(error.value)

    without_class = {key: value for key, value in card.items() if key != "model_class"}
    path.with_suffix(".json").write_text(json.dumps(without_class))
    with pytest.raises(PurifyLabError, match="resnet.safetensors is not a classifier's weights file"):
        create_classifier("resnet", weights=path)
    refused({"architecture": {**model.architecture, "widths": [4, 8, 8, 16]}}, r"does not fit XrayResNet: '.*' is \(8, .*\), the network's \(16, ")
    refused({"architecture": {**model.architecture, "layers": [1, 1, 1, 2]}}, r"does not fit XrayResNet: missing \d+ tensors \(first 'resnet.layer4.1")
    refused({"architecture": {**model.architecture, "bogus": 1}}, "model card resnet.json: its architecture does not build a XrayResNet .*'bogus'")
    refused({"calibration": {"temperature": None}}, "model card resnet.json: calibration.temperature must be a number; got None")
    refused({"calibration": {"temperature": "0.7"}}, "calibration.temperature must be a number; got '0.7'")
    refused({"calibration": {"temperature": 1.0, "threshold": 1.0}}, "model card resnet.json: a decision threshold needs")
    refused({"calibration": [0.7, 0.2]}, "calibration must be a mapping of temperature and threshold")


def test_the_shipped_listing_agrees_with_the_shipped_cards():
    listing = list_classifiers()
    assert "distilled from resnet, from scratch" in listing["student_cnn"] and "ViT" not in listing["student_cnn"]
    assert "trained under Gaussian noise (std 0.5) for randomized smoothing, from scratch" in listing["resnet_smooth"]
    assert "fine-tuned" not in listing["resnet_smooth"]


# Two threads of a fresh process build at once, as the apps' warm-up thread and a page do.
_BUILD_ON_TWO_THREADS = """
import sys, threading, traceback
from core.models import create_classifier
from core.purifiers import create_purifier

start = threading.Barrier(2)
built, failures = [], []

def build(name):
    start.wait()
    try:
        (create_purifier if name in ("one_shot", "ddpm") else create_classifier)(name)
        built.append(name)
    except BaseException:
        failures.append(traceback.format_exc())

threads = [threading.Thread(target=build, args=(name,)) for name in sys.argv[1:]]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(*sorted(built))
sys.exit("".join(failures) or None)
"""


@pytest.mark.parametrize("names", [("one_shot", "ddpm"), ("vit", "resnet_at")])
def test_two_threads_building_models_at_once_on_a_fresh_process_both_succeed(names):
    """Their first lazy imports of diffusers / timm raced (ImportError, _DeadlockError) before core.lazy_import."""
    import os
    import subprocess
    import sys

    for _ in range(3):
        done = subprocess.run(
            [sys.executable, "-c", _BUILD_ON_TWO_THREADS, *names],
            cwd=Path(__file__).parents[1],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.split() == sorted(names)
