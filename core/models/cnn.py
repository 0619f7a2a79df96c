"""Small CNNs: the distilled student of the Defensive Diffusion paper and an independent substitute.

The two differ on purpose (kernel sizes, downsampling, activation, width): a transfer attack crafted
on `substitute` tells how well perturbations travel between model families, which is only
meaningful if the substitute is not a copy of the model it attacks.
"""

from __future__ import annotations

import torch
from torch import nn

from core.models.base import NUM_CLASSES, XrayClassifier


class StudentCNN(XrayClassifier):
    """Four stride-2 3x3 conv blocks (conv-BN-ReLU), global average pool, linear: ~60 k parameters.

    Strided convolutions instead of pooling keep a training epoch on one CPU core to about a minute."""

    def __init__(
        self,
        image_size: int = 128,
        widths: tuple[int, ...] = (16, 32, 64, 64),
        dropout: float = 0.2,
        in_channels: int = 1,
        num_classes: int = NUM_CLASSES,
    ):
        super().__init__(image_size, dict(image_size=image_size, widths=list(widths), dropout=dropout), in_channels, num_classes)
        layers: list[nn.Module] = []
        for width in widths:
            layers += [
                nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_channels, num_classes))

    def logits(self, x_normalised: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x_normalised))


class SubstituteCNN(XrayClassifier):
    """Three 5x5 strided conv blocks with GELU and group norm, max pool head: the black-box 'classifier B'."""

    def __init__(
        self,
        image_size: int = 128,
        widths: tuple[int, ...] = (16, 32, 64),
        dropout: float = 0.3,
        in_channels: int = 1,
        num_classes: int = NUM_CLASSES,
    ):
        super().__init__(image_size, dict(image_size=image_size, widths=list(widths), dropout=dropout), in_channels, num_classes)
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Conv2d(in_channels, width, 5, stride=2, padding=2), nn.GroupNorm(4, width), nn.GELU()]
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_channels, num_classes))

    def logits(self, x_normalised: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x_normalised))
