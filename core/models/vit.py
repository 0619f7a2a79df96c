"""A small Vision Transformer for 1-channel X-rays, built by timm.

Sized for training from scratch on ~4k images on a CPU: 128 px, 16 px patches (64 tokens), width
128, depth 6, 4 heads -> ~1.2 M parameters, ~2.5 MB in fp16.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer

from core.models.base import NUM_CLASSES, XrayClassifier


class XrayViT(XrayClassifier):
    def __init__(
        self,
        image_size: int = 128,
        patch_size: int = 16,
        embed_dim: int = 128,
        depth: int = 6,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.1,
        drop_path_rate: float = 0.1,
        in_channels: int = 1,
        num_classes: int = NUM_CLASSES,
    ):
        super().__init__(
            image_size,
            dict(
                image_size=image_size,
                patch_size=patch_size,
                embed_dim=embed_dim,
                depth=depth,
                num_heads=num_heads,
                mlp_ratio=mlp_ratio,
                drop_rate=drop_rate,
                drop_path_rate=drop_path_rate,
            ),
            in_channels,
            num_classes,
        )
        self.vit = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            in_chans=in_channels,
            num_classes=num_classes,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,
        )

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    def logits(self, x_normalised: torch.Tensor) -> torch.Tensor:
        return self.vit(x_normalised)

    def logits_and_block_tokens(self, x: torch.Tensor, blocks: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Final logits and the patch tokens (N, L, D) after each of the first `blocks` blocks, in one pass."""
        self.check_input(x)
        final, intermediates = self.vit.forward_intermediates(
            self.normalise(x),
            indices=list(range(blocks)),
            output_fmt="NLC",
        )
        return self.vit.forward_head(final), intermediates
