"""What every classifier shares: the [0, 1] input contract, normalisation inside, a model card."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import PurifyLabError
from core.micro_batch import in_micro_batches

# Grey-level statistics of the Kermany X-rays (mean ~0.48, std ~0.24), rounded: normalising inside the
# model keeps every public boundary in [0, 1], where attack budgets such as eps = 0.03 are defined.
PIXEL_MEAN = 0.5
PIXEL_STD = 0.25
NUM_CLASSES = 2


class XrayClassifier(nn.Module):
    """Base for the registered classifiers: float32 (N, C, S, S) in [0, 1] -> logits (N, K).

    The X-ray models take C = 1 and answer K = 2 (NORMAL, PNEUMONIA); the MNIST and CIFAR-10 models
    of the papers' own settings take 1 or 3 channels and answer 10 classes. `architecture` holds the
    constructor keywords, so a model card can rebuild the exact network.
    """

    def __init__(self, image_size: int, architecture: dict[str, Any], in_channels: int = 1, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.image_size = int(image_size)
        self.in_channels = int(in_channels)
        self.num_classes = int(num_classes)
        self.architecture = dict(architecture, in_channels=self.in_channels, num_classes=self.num_classes)
        self.card: dict | None = None
        self.weights_file: Path | None = None
        self.temperature = 1.0
        self.threshold: float | None = None

    def provenance(self) -> dict[str, Any]:
        """What a result records of the model that produced it: the weights file and its SHA-256, and the
        calibration applied, which lives in the card (not hashed), so an edited card is visible here."""
        from core.data.locations import portable_path

        return {
            "classifier_sha256": (self.card or {}).get("sha256"),
            "classifier_weights": None if self.weights_file is None else portable_path(self.weights_file),
            "classifier_calibration": {"temperature": self.temperature, "threshold": self.threshold},
        }

    def loaded_weights(self) -> dict[str, str]:
        """File name -> SHA-256 of every weights file in this network: its own and any classifier's
        inside it (sevit's vit backbone), each from the card that file was checked against at load."""
        return {
            module.weights_file.name: module.card["sha256"]
            for module in self.modules()
            if isinstance(module, XrayClassifier) and module.weights_file is not None and module.card is not None
        }

    def check_classes(self, classes: tuple[str, ...] | list[str], where: str) -> None:
        """Refuse data whose classes are not the ones this model answers (names from its card, else the
        count), before any inference: labels index the data's classes, so any mismatch scores nonsense."""
        name = (self.card or {}).get("name", type(self).__name__)
        known = (self.card or {}).get("classes")
        same = [c.casefold() for c in known] == [c.casefold() for c in classes] if known else len(classes) == self.num_classes
        if not same:
            answers = f"{self.num_classes} classes ({', '.join(known)})" if known else f"{self.num_classes} classes"
            raise PurifyLabError(f"classifier {name} answers {answers}, but {where} has {len(classes)} ({', '.join(classes)})")

    def calibrate(self, temperature: float = 1.0, threshold: float | None = None) -> None:
        """Post-hoc calibration chosen on validation, applied inside `forward` so that every consumer
        (attacks, purifier evaluation, the app) reads the same decision: logits are divided by
        `temperature`, and for two classes class 1's logit is shifted so that argmax answers class 1
        exactly when its temperature-scaled probability exceeds `threshold`."""
        if not temperature > 0:
            raise PurifyLabError(f"temperature must be > 0, got {temperature}")
        if threshold is not None and (self.num_classes != 2 or not 0 < threshold < 1):
            raise PurifyLabError(f"a decision threshold needs two classes and a value in (0, 1), got {threshold}")
        self.temperature, self.threshold = float(temperature), None if threshold is None else float(threshold)

    def calibrated(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits / self.temperature
        if self.threshold is None:
            return logits
        shift = torch.zeros(self.num_classes, dtype=logits.dtype, device=logits.device)
        shift[1] = math.log(self.threshold / (1 - self.threshold))
        return logits - shift

    def check_input(self, x: torch.Tensor) -> None:
        """Type, shape, dtype and finiteness, one line each, on every forward (cheap next to the network).
        The [0, 1] range is checked where a user's images enter (`core.io.validate_image_tensor`), not
        here: randomized smoothing and noise-augmented training feed noisy images outside it on purpose."""
        if not isinstance(x, torch.Tensor):
            raise PurifyLabError(f"input must be a torch.Tensor; got {type(x).__name__}")
        expected = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise PurifyLabError(
                f"input of shape {tuple(x.shape)} does not fit: this classifier takes (N, {expected[0]}, "
                f"{expected[1]}, {expected[2]}) in [0, 1]; resize explicitly first"
            )
        # Under autocast a purifier in front hands over its lower-precision output; the network casts it anyway.
        autocast = torch.is_autocast_enabled(x.device.type) and x.dtype == torch.get_autocast_dtype(x.device.type)
        if x.dtype != torch.float32 and not autocast:
            raise PurifyLabError(f"input dtype is {x.dtype}; this classifier takes float32 in [0, 1] (divide 8-bit images by 255)")
        if not torch.isfinite(x).all():
            raise PurifyLabError("input contains NaN or Inf values; this classifier takes float32 in [0, 1]")

    @staticmethod
    def normalise(x: torch.Tensor) -> torch.Tensor:
        return (x - PIXEL_MEAN) / PIXEL_STD

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.normalise(x)
        # In training mode BatchNorm's batch statistics need the whole batch in one call.
        logits = self.logits(x) if self.training else in_micro_batches(self.logits, "classifier", x)
        return self.calibrated(logits)

    def logits(self, x_normalised: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
