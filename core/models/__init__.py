"""Classifier registry: `create_classifier("vit")` and friends, named by string everywhere.

Every X-ray classifier takes float32 (N, 1, S, S) in [0, 1] and returns logits (N, 2) for
(0 = NORMAL, 1 = PNEUMONIA); `mnist_cnn*` and `cifar10_cnn` are the papers' own settings (10 digits,
10 CIFAR classes in RGB). Each exposes `image_size`, `in_channels`, `num_classes` and `card` (the
JSON model card, or None for an untrained network). `pretrained=True` rebuilds the architecture recorded in the card of
weights/<name>.safetensors and loads it after checking its SHA-256.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from core.errors import PurifyLabError
from core.models.base import XrayClassifier
from core.models.cnn import StudentCNN, SubstituteCNN
from core.models.convnet import GroupConvNet
from core.models.resnet import XrayResNet
from core.models.sevit import SEViT
from core.models.vit import XrayViT
from core.registry import Registry
from core.weights import WEIGHTS_DIR, load_weights, read_card

classifiers: Registry[XrayClassifier] = Registry("classifier")


def weights_path_for(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def _resolve_weights(name: str, weights: str | Path | None) -> Path:
    path = Path(weights) if weights is not None else weights_path_for(name)
    if not path.is_file():
        raise PurifyLabError(
            f"weights for classifier '{name}' are missing ({path}); train them with "
            f"`purifylab train classifier --model {name} --preset cpu` and copy runs/{name}/{name}.* into weights/"
        )
    return path


def _architecture(card: dict, name: str, overrides: dict[str, Any]) -> dict[str, Any]:
    architecture = dict(card.get("architecture") or {})
    clashes = sorted(key for key, value in overrides.items() if key in architecture and architecture[key] != value)
    if clashes:
        raise PurifyLabError(f"{', '.join(clashes)} differ from the trained '{name}' weights; pass pretrained=False to build a new network")
    return {**architecture, **overrides}


def _check_options(name: str, cls: type[XrayClassifier], overrides: dict) -> None:
    """An unknown option is one line naming those the network takes, not a TypeError from its __init__."""
    takes = [parameter for parameter in inspect.signature(cls).parameters if parameter != "self"]
    unknown = sorted(set(overrides) - set(takes))
    if unknown:
        raise PurifyLabError(f"classifier '{name}' has no option {', '.join(unknown)}; it takes: weights, pretrained, {', '.join(takes)}")


def _build(name: str, cls: type[XrayClassifier], pretrained: bool, weights: str | Path | None, overrides: dict, defaults: dict | None = None) -> XrayClassifier:
    """A new network from `defaults` + `overrides`, or the trained one its card describes (+ checked overrides)."""
    _check_options(name, cls, overrides)
    if not pretrained and weights is None:
        return cls(**{**(defaults or {}), **overrides})
    path = _resolve_weights(name, weights)
    card = read_card(path)
    if card.get("model_class", cls.__name__) != cls.__name__:
        raise PurifyLabError(f"{path.name} holds a {card['model_class']} (its card: '{card.get('name')}'), not the {cls.__name__} of '{name}'")
    model = cls(**_architecture(card, name, overrides))
    load_weights(model, path)
    return _with_card(model, card, path)


def _with_card(model: XrayClassifier, card: dict, path: Path) -> XrayClassifier:
    """The card's facts applied to the loaded network: the card itself and its calibration, if any."""
    model.card, model.weights_file = card, path
    calibration = card.get("calibration") or {}
    model.calibrate(calibration.get("temperature", 1.0), calibration.get("threshold"))
    return model.eval()


@classifiers.register("vit", "Vision Transformer (timm), 1-channel, trained from scratch on chest X-rays")
def vit(pretrained: bool = True, weights: str | Path | None = None, **overrides) -> XrayClassifier:
    return _build("vit", XrayViT, pretrained, weights, overrides)


@classifiers.register("resnet", "ResNet-18 layout (timm) at quarter width, 1-channel, trained from scratch on chest X-rays")
def resnet(pretrained: bool = True, weights: str | Path | None = None, **overrides) -> XrayClassifier:
    return _build("resnet", XrayResNet, pretrained, weights, overrides)


@classifiers.register("resnet_smooth", "the resnet fine-tuned under Gaussian noise (std 0.5, its card's smoothing_sigma) for randomized smoothing")
def resnet_smooth(pretrained: bool = True, weights: str | Path | None = None, **overrides) -> XrayClassifier:
    return _build("resnet_smooth", XrayResNet, pretrained, weights, overrides)


@classifiers.register("resnet_at", "the resnet's layout, PGD adversarially trained (L-inf, eps 0.03); shipped as a weight soup (its card)")
def resnet_at(pretrained: bool = True, weights: str | Path | None = None, **overrides) -> XrayClassifier:
    return _build("resnet_at", XrayResNet, pretrained, weights, overrides)


@classifiers.register("student_cnn", "4-layer CNN distilled from the ViT's soft targets")
def student_cnn(pretrained: bool = True, weights: str | Path | None = None, **overrides) -> XrayClassifier:
    return _build("student_cnn", StudentCNN, pretrained, weights, overrides)


@classifiers.register("substitute", "independent 3-layer CNN for black-box transfer attacks")
def substitute(pretrained: bool = True, weights: str | Path | None = None, **overrides) -> XrayClassifier:
    return _build("substitute", SubstituteCNN, pretrained, weights, overrides)


# The papers' own data sets, for our re-runs of their settings (not X-rays): DiffDefense's MNIST and
# Blau et al.'s CIFAR-10, each carved 80/10/10 from the 10,000 test images we have.
MNIST_CNN = dict(image_size=28, widths=(32, 64, 128), dropout=0.1, in_channels=1, num_classes=10)
CIFAR10_CNN = dict(image_size=32, widths=(32, 128, 128), stem_width=24, in_channels=3, num_classes=10)


def _paper_cnn(name: str, cls: type[XrayClassifier], defaults: dict):
    def factory(pretrained: bool = True, weights: str | Path | None = None, **overrides) -> XrayClassifier:
        return _build(name, cls, pretrained, weights, overrides, defaults)

    return factory


for _name, _cls, _defaults, _description in (
    ("mnist_cnn", StudentCNN, MNIST_CNN, "3-layer CNN on MNIST digits (28 px): DiffDefense's setting"),
    ("mnist_cnn_at", StudentCNN, MNIST_CNN, "the same MNIST CNN, PGD adversarially trained (L-inf, eps 0.3)"),
    ("cifar10_cnn", GroupConvNet, CIFAR10_CNN, "6-conv CNN (airbench layout) on CIFAR-10 (32 px RGB): Blau et al.'s data set"),
    ("cifar10_cnn_at", GroupConvNet, CIFAR10_CNN, "the same CIFAR-10 CNN, PGD adversarially trained (L-inf, eps 8/255)"),
):
    classifiers.register(_name, _description)(_paper_cnn(_name, _cls, _defaults))


@classifiers.register("sevit", "Self-Ensembling ViT: token-MLP heads on the first blocks of the frozen vit")
def sevit(
    pretrained: bool = True,
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    mlp_heads: int | None = None,
    combine: str = "average",
    token_dim: int | None = None,
    hidden: int | None = None,
    **vit_overrides,
) -> XrayClassifier:
    """The heads file must have been trained on the ViT it is loaded with (its card pins the ViT's SHA-256)."""
    head_options = {key: value for key, value in dict(mlp_heads=mlp_heads, token_dim=token_dim, hidden=hidden).items() if value is not None}
    if not pretrained and weights is None:
        return SEViT(XrayViT(**vit_overrides), combine=combine, **head_options)
    path = _resolve_weights("sevit", weights)
    card = read_card(path)
    backbone = create_classifier("vit", pretrained=True, weights=backbone_weights, **vit_overrides)
    if card.get("backbone_sha256") != backbone.card["sha256"]:
        raise PurifyLabError(
            f"{path.name} was trained on a different vit (sha256 {str(card.get('backbone_sha256'))[:12]}); "
            "retrain it with `purifylab train classifier --model sevit`"
        )
    architecture = _architecture(card, "sevit", head_options)
    model = SEViT(backbone, architecture["mlp_heads"], combine, architecture["token_dim"], architecture["hidden"])
    load_weights(model.heads, path)
    return _with_card(model, card, path)


def create_classifier(name: str, pretrained: bool = True, **overrides) -> XrayClassifier:
    """Build a registered classifier; `weights=PATH` loads a specific safetensors file instead of weights/<name>."""
    return classifiers.create(name, pretrained=pretrained, **overrides)


def list_classifiers() -> dict[str, str]:
    return classifiers.describe()


# The X-ray classifiers the apps offer: the papers' ViT first (the default), then `resnet`, which
# generalises best to new patients but reads blurred purifier outputs at chance (README).
XRAY_CLASSIFIERS = ("vit", "resnet", "resnet_smooth", "sevit", "student_cnn", "resnet_at", "substitute")


def shipped_xray_classifiers() -> list[str]:
    """The X-ray classifiers whose weights are in weights/, in XRAY_CLASSIFIERS order."""
    return [name for name in XRAY_CLASSIFIERS if weights_path_for(name).is_file()]


__all__ = [
    "XrayClassifier",
    "XrayViT",
    "XrayResNet",
    "SEViT",
    "StudentCNN",
    "GroupConvNet",
    "SubstituteCNN",
    "create_classifier",
    "list_classifiers",
    "shipped_xray_classifiers",
    "weights_path_for",
    "XRAY_CLASSIFIERS",
]
