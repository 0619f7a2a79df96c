"""Classifier registry: `create_classifier("vit")` and friends, named by string everywhere.

Every X-ray classifier takes float32 (N, 1, S, S) in [0, 1] and returns logits (N, 2) for
(0 = NORMAL, 1 = PNEUMONIA); `mnist_cnn*` and `cifar10_cnn` are the papers' own settings (10 digits,
10 CIFAR classes in RGB). Each exposes `image_size`, `in_channels`, `num_classes` and `card` (the
JSON model card, or None for an untrained network). `pretrained=True` rebuilds the architecture recorded in the card of
weights/<name>.safetensors and loads it after checking its SHA-256.

The registry, its descriptions and the cards are read without torch or timm: the network classes are
imported when a classifier is built, so naming or listing one costs no import of the ML stack.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.errors import PurifyLabError, typed
from core.lazy_import import lazy_import
from core.registry import Registry
from core.weights import WEIGHTS_DIR, card_path, load_weights, plain_training, read_card

if TYPE_CHECKING:
    from core.models.base import XrayClassifier

# Each network class by the submodule that defines it (all import torch).
_NETWORK_MODULES = {
    "XrayClassifier": "core.models.base",
    "XrayViT": "core.models.vit",
    "XrayResNet": "core.models.resnet",
    "SEViT": "core.models.sevit",
    "StudentCNN": "core.models.cnn",
    "SubstituteCNN": "core.models.cnn",
    "GroupConvNet": "core.models.convnet",
}


def _network_class(name: str) -> type:
    return lazy_import(_NETWORK_MODULES[name], name)


def __getattr__(name: str) -> Any:
    """`from core.models import XrayViT` still works: the class is imported on first use (PEP 562)."""
    if name in _NETWORK_MODULES:
        return _network_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


classifiers: Registry[XrayClassifier] = Registry("classifier")


def weights_path_for(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def _resolve_weights(name: str, weights: str | Path | None) -> Path:
    path = Path(weights) if weights is not None else weights_path_for(name)
    if not path.is_file():
        raise PurifyLabError(
            f"weights for classifier '{name}' are missing ({path}); train them with "
            f"`purifylab train classifier --model {name} --preset cpu --ship` (--ship copies the finished run into weights/)"
        )
    return path


def _read_card(name: str, path: Path, shipped: bool) -> dict:
    """`path`'s card, refused when it cannot be `name`'s: a shipped file whose card names another model
    (swapped files), or an architecture that contradicts the card's own image size. A hand-edited
    layout that still fits the tensors (num_heads) is not detectable here: only the tensors are hashed."""
    card = read_card(path)
    if shipped and card.get("name") != name:
        raise PurifyLabError(f"{path} holds the card of '{card.get('name')}', not of '{name}': the shipped weights were swapped or renamed")
    architecture = card.get("architecture") or {}
    if not isinstance(architecture, dict):
        raise PurifyLabError(f"model card {card_path(path).name}: architecture must be a mapping; got {architecture!r}")
    if "image_size" in card and "image_size" in architecture and architecture["image_size"] != card["image_size"]:
        raise PurifyLabError(
            f"model card {card_path(path).name} contradicts itself: architecture.image_size {architecture['image_size']}, image_size {card['image_size']}"
        )
    return card


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


def _build(name: str, network: str, pretrained: bool, weights: str | Path | None, overrides: dict, defaults: dict | None = None) -> XrayClassifier:
    """A new `network` (class name) from `defaults` + `overrides`, or the trained one its card describes (+ checked overrides)."""
    cls = _network_class(network)
    typed("pretrained", pretrained, bool)  # "no" would load the shipped weights
    _check_options(name, cls, overrides)
    if not pretrained and weights is None:
        return cls(**{**(defaults or {}), **overrides})
    path = _resolve_weights(name, weights)
    card = _read_card(name, path, shipped=weights is None)
    if "model_class" not in card:
        raise PurifyLabError(f"{path.name} is not a classifier's weights file: its card names no model_class")
    if card["model_class"] != cls.__name__:
        raise PurifyLabError(f"{path.name} holds a {card['model_class']} (its card: '{card.get('name')}'), not the {cls.__name__} of '{name}'")
    try:
        model = cls(**_architecture(card, name, overrides))
    except PurifyLabError:
        raise
    except (TypeError, ValueError) as error:  # a hand-edited key or value fails deep in the constructor
        raise PurifyLabError(f"model card {card_path(path).name}: its architecture does not build a {cls.__name__} ({error})") from None
    load_weights(model, path)
    return _with_card(model, card, path)


def _with_card(model: XrayClassifier, card: dict, path: Path) -> XrayClassifier:
    """The card's facts applied to the loaded network: the card itself and its calibration, if any."""
    model.card, model.weights_file = card, path
    calibration = card.get("calibration") or {}
    try:
        if not isinstance(calibration, dict):
            raise PurifyLabError(f"calibration must be a mapping of temperature and threshold; got {calibration!r}")
        temperature = typed("calibration.temperature", calibration.get("temperature", 1.0), float)
        threshold = typed("calibration.threshold", calibration.get("threshold"), float | None)
        model.calibrate(temperature, threshold)
    except PurifyLabError as error:
        raise PurifyLabError(f"model card {card_path(path).name}: {error}") from None
    return model.eval()


@classifiers.register("vit", "Vision Transformer (timm), 1-channel, for chest X-rays")
def vit(pretrained: bool = True, weights: str | Path | None = None, **overrides) -> XrayClassifier:
    return _build("vit", "XrayViT", pretrained, weights, overrides)


@classifiers.register("resnet", "ResNet-18 layout (timm) at quarter width, 1-channel, for chest X-rays")
def resnet(pretrained: bool = True, weights: str | Path | None = None, **overrides) -> XrayClassifier:
    return _build("resnet", "XrayResNet", pretrained, weights, overrides)


@classifiers.register("resnet_smooth", "the resnet's layout, the base classifier of randomized smoothing")
def resnet_smooth(pretrained: bool = True, weights: str | Path | None = None, **overrides) -> XrayClassifier:
    return _build("resnet_smooth", "XrayResNet", pretrained, weights, overrides)


@classifiers.register("resnet_at", "the resnet's layout, the adversarially trained baseline")
def resnet_at(pretrained: bool = True, weights: str | Path | None = None, **overrides) -> XrayClassifier:
    return _build("resnet_at", "XrayResNet", pretrained, weights, overrides)


@classifiers.register("student_cnn", "4-layer CNN, the distilled student")
def student_cnn(pretrained: bool = True, weights: str | Path | None = None, **overrides) -> XrayClassifier:
    return _build("student_cnn", "StudentCNN", pretrained, weights, overrides)


@classifiers.register("substitute", "independent 3-layer CNN for black-box transfer attacks")
def substitute(pretrained: bool = True, weights: str | Path | None = None, **overrides) -> XrayClassifier:
    return _build("substitute", "SubstituteCNN", pretrained, weights, overrides)


# The papers' own data sets, for our re-runs of their settings (not X-rays): DiffDefense's MNIST and
# Blau et al.'s CIFAR-10, each carved 80/10/10 from the 10,000 test images we have.
MNIST_CNN = dict(image_size=28, widths=(32, 64, 128), dropout=0.1, in_channels=1, num_classes=10)
CIFAR10_CNN = dict(image_size=32, widths=(32, 128, 128), stem_width=24, in_channels=3, num_classes=10)


def _paper_cnn(name: str, network: str, defaults: dict):
    def factory(pretrained: bool = True, weights: str | Path | None = None, **overrides) -> XrayClassifier:
        return _build(name, network, pretrained, weights, overrides, defaults)

    return factory


for _name, _network, _defaults, _description in (
    ("mnist_cnn", "StudentCNN", MNIST_CNN, "3-layer CNN on MNIST digits (28 px): DiffDefense's setting"),
    ("mnist_cnn_at", "StudentCNN", MNIST_CNN, "the same MNIST CNN, the adversarially trained baseline"),
    ("cifar10_cnn", "GroupConvNet", CIFAR10_CNN, "6-conv CNN (airbench layout) on CIFAR-10 (32 px RGB): Blau et al.'s data set"),
    ("cifar10_cnn_at", "GroupConvNet", CIFAR10_CNN, "the same CIFAR-10 CNN, the adversarially trained baseline"),
):
    classifiers.register(_name, _description)(_paper_cnn(_name, _network, _defaults))


@classifiers.register("sevit", "Self-Ensembling ViT: token-MLP heads on the first blocks of the frozen vit")
def sevit(
    pretrained: bool = True,
    weights: str | Path | None = None,
    backbone_weights: str | Path | None = None,
    mlp_heads: int | None = None,
    combine: str | None = None,
    token_dim: int | None = None,
    hidden: int | None = None,
    **vit_overrides,
) -> XrayClassifier:
    """The heads file must have been trained on the ViT it is loaded with (its card pins the ViT's SHA-256),
    under its card's `combine` rule: the calibration on the card was fitted on that rule's scores."""
    options = dict(mlp_heads=mlp_heads, combine=combine, token_dim=token_dim, hidden=hidden)
    head_options = {key: value for key, value in options.items() if value is not None}
    sevit_class = _network_class("SEViT")
    if not pretrained and weights is None:
        return sevit_class(_network_class("XrayViT")(**vit_overrides), **head_options)
    path = _resolve_weights("sevit", weights)
    card = _read_card("sevit", path, shipped=weights is None)
    backbone = create_classifier("vit", pretrained=True, weights=backbone_weights, **vit_overrides)
    if card.get("backbone_sha256") != backbone.card["sha256"]:
        raise PurifyLabError(
            f"{path.name} was trained on a different vit (sha256 {str(card.get('backbone_sha256'))[:12]}); "
            "retrain it with `purifylab train classifier --model sevit`"
        )
    architecture = _architecture(card, "sevit", head_options)
    model = sevit_class(backbone, **{key: architecture[key] for key in options if key in architecture})
    load_weights(model.heads, path)
    return _with_card(model, card, path)


def create_classifier(name: str, pretrained: bool = True, **overrides) -> XrayClassifier:
    """Build a registered classifier; `weights=PATH` loads a specific safetensors file instead of weights/<name>."""
    return classifiers.create(name, pretrained=pretrained, **overrides)


def list_classifiers() -> dict[str, str]:
    """Each classifier's layout and role (registered), then, where its weights are shipped, how they
    were trained in its card's own words, so the listing cannot drift from the cards."""
    listing = {}
    for name, layout in classifiers.describe().items():
        path = weights_path_for(name)
        training = _training_words(read_card(path)) if card_path(path).is_file() else ""
        listing[name] = f"{layout}; {training}" if training else layout
    return listing


def _training_words(card: dict) -> str:
    """`plain_training` and where training started: `init_from`, else from scratch (a soup's members
    started in several places: `plain_training` names the soup, its card the members)."""
    kind = plain_training(card)
    if not kind or card.get("soup_of"):
        return kind or ""
    start = (card.get("training_config") or {}).get("init_from")
    earlier = "an earlier " if start == card.get("name") else ""
    return f"{kind}, {f'fine-tuned from {earlier}{start}' if start else 'from scratch'}"


# The X-ray classifiers the apps offer: the papers' ViT first (the default), then `resnet`, which
# generalises best to new patients but reads blurred purifier outputs at chance (README).
XRAY_CLASSIFIERS = ("vit", "resnet", "resnet_smooth", "sevit", "student_cnn", "resnet_at", "substitute")


def shipped_xray_classifiers() -> list[str]:
    """The X-ray classifiers whose weights are in weights/, in XRAY_CLASSIFIERS order."""
    return [name for name in XRAY_CLASSIFIERS if weights_path_for(name).is_file()]


__all__ = [
    *_NETWORK_MODULES,
    "create_classifier",
    "list_classifiers",
    "shipped_xray_classifiers",
    "weights_path_for",
    "XRAY_CLASSIFIERS",
]
