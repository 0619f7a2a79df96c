"""Classifier registry: construction and shapes of every model, input contract, weights safety."""

from __future__ import annotations

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
    score = model.detection_score(x)
    assert score.shape == (4,) and (score >= 0).all()


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


def test_sevit_heads_load_only_over_the_vit_they_were_trained_on(tmp_path):
    backbone_path = tmp_path / "vit.safetensors"
    backbone = create_classifier("vit", pretrained=False, **TINY["vit"])
    card = save_weights(backbone, backbone_path, {"architecture": backbone.architecture})
    sevit = SEViT(create_classifier("vit", weights=backbone_path), mlp_heads=2)
    heads_path = tmp_path / "sevit.safetensors"
    save_weights(sevit.heads, heads_path, {"architecture": sevit.architecture, "backbone_sha256": card["sha256"]})
    loaded = create_classifier("sevit", weights=heads_path, backbone_weights=backbone_path).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded(x), sevit.eval()(x), atol=1e-5)
    other = tmp_path / "other.safetensors"
    save_weights(create_classifier("vit", pretrained=False, **TINY["vit"]), other, {"architecture": backbone.architecture})
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
    path.with_suffix(".json").write_text('{"architecture": {}}')
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
