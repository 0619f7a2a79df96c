"""A small CNN for 32-px photographs (CIFAR-10), in the layout of Keller Jordan's CIFAR-10 speed runs.

Three stride-2 convolutions (the first CIFAR-10 CNN here) reached 65 % on our 8,000 training images;
this layout gets the most accuracy per FLOP known at this scale: a 2x2 stem, then per group a 3x3
conv, a 2x2 max pool, BN, GELU, a second 3x3 conv, BN, GELU; a global max pool and a linear read-out.
At widths 32-128-128 it has 0.5 M parameters (1 MB in fp16) and an epoch over 8,000 images takes
about 30 s on one CPU core.
"""

from __future__ import annotations

import torch
from torch import nn

from core.models.base import XrayClassifier


def _group(in_width: int, width: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_width, width, 3, padding=1, bias=False),
        nn.MaxPool2d(2),
        nn.BatchNorm2d(width),
        nn.GELU(),
        nn.Conv2d(width, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.GELU(),
    )


class GroupConvNet(XrayClassifier):
    def __init__(
        self,
        image_size: int = 32,
        widths: tuple[int, ...] = (32, 128, 128),
        stem_width: int = 24,
        in_channels: int = 3,
        num_classes: int = 10,
    ):
        super().__init__(image_size, dict(image_size=image_size, widths=list(widths), stem_width=stem_width), in_channels, num_classes)
        # A 2x2 stem without padding sees every 2x2 patch (31 x 31 outputs at 32 px), as airbench's whitening layer does.
        layers: list[nn.Module] = [nn.Conv2d(in_channels, stem_width, 2), nn.GELU()]
        in_width = stem_width
        for width in widths:
            layers.append(_group(in_width, width))
            in_width = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(widths[-1], num_classes, bias=False))

    def logits(self, x_normalised: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x_normalised))
