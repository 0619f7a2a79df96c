"""A narrow ResNet-18 for 1-channel X-rays, built by timm: the CNN family beside the papers' ViT.

ResNet-18's layout (BasicBlock, 2-2-2-2) at a quarter of its width (16-32-64-128): about 0.7 M
parameters, 1.4 MB in fp16, so it fits the 20 MB weights budget and trains on 2 CPU cores in
minutes. Convolutions share weights across positions, which suits 5k training images better than
a ViT's learned patch mixing.
"""

from __future__ import annotations

import torch
from timm.models.resnet import BasicBlock, ResNet

from core.models.base import NUM_CLASSES, XrayClassifier


class XrayResNet(XrayClassifier):
    def __init__(
        self,
        image_size: int = 128,
        widths: tuple[int, ...] = (16, 32, 64, 128),
        layers: tuple[int, ...] = (2, 2, 2, 2),
        drop_rate: float = 0.2,
        drop_path_rate: float = 0.05,
        in_channels: int = 1,
        num_classes: int = NUM_CLASSES,
    ):
        super().__init__(
            image_size,
            dict(
                image_size=image_size,
                widths=list(widths),
                layers=list(layers),
                drop_rate=drop_rate,
                drop_path_rate=drop_path_rate,
            ),
            in_channels,
            num_classes,
        )
        self.resnet = ResNet(
            BasicBlock,
            tuple(layers),
            num_classes=num_classes,
            in_chans=in_channels,
            channels=tuple(widths),
            stem_width=widths[0],
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
        )

    def logits(self, x_normalised: torch.Tensor) -> torch.Tensor:
        return self.resnet(x_normalised)
