"""Self-Ensembling ViT (Almalik et al., MICCAI 2022), as used by the Defensive Diffusion paper.

Early ViT blocks are less touched by adversarial perturbations than the last one, so small MLP
classifiers read the patch tokens after each of the first K blocks of the (frozen) trained ViT and
vote with the ViT's own head. Their disagreement with the final head flags adversarial inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import PurifyLabError
from core.models.base import NUM_CLASSES, XrayClassifier
from core.models.vit import XrayViT

COMBINE_RULES = ("average", "vote")


class TokenMLPHead(nn.Module):
    """Classifier on all patch tokens of one block: a per-token projection keeps where things are,
    so the head is ~70 k parameters instead of the paper's flattened 625 M."""

    def __init__(
        self,
        num_tokens: int,
        embed_dim: int,
        token_dim: int = 16,
        hidden: int = 64,
        dropout: float = 0.2,
        num_classes: int = NUM_CLASSES,
    ):
        super().__init__()
        self.norm = nn.LayerNorm(embed_dim)
        self.project = nn.Linear(embed_dim, token_dim)
        self.classify = nn.Sequential(
            nn.GELU(),
            nn.Flatten(),
            nn.Linear(num_tokens * token_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classify(self.project(self.norm(tokens)))


class SEViT(XrayClassifier):
    """Ensemble of `mlp_heads` token-MLP heads on blocks 1..K and the ViT's head.

    `combine="average"` returns the log of the averaged probabilities (differentiable, so white-box
    attacks see the whole ensemble); `"vote"` returns the log of the normalised vote counts, with the
    averaged probabilities (< 1) added only to break ties.
    """

    def __init__(self, vit: XrayViT, mlp_heads: int = 3, combine: str = "average", token_dim: int = 16, hidden: int = 64):
        if combine not in COMBINE_RULES:
            raise PurifyLabError(f"combine='{combine}' is not a SEViT rule; choose one of: {', '.join(COMBINE_RULES)}")
        if not 1 <= mlp_heads <= vit.depth:
            raise PurifyLabError(f"mlp_heads={mlp_heads} must be between 1 and the ViT depth {vit.depth}")
        super().__init__(
            vit.image_size,
            dict(
                mlp_heads=mlp_heads,
                combine=combine,
                token_dim=token_dim,
                hidden=hidden,
                vit=vit.architecture,
            ),
            vit.in_channels,
            vit.num_classes,
        )
        self.combine = combine
        self.vit = vit
        self.vit.requires_grad_(False)
        num_tokens = self.vit.vit.patch_embed.num_patches
        embed_dim = self.vit.vit.embed_dim
        # Named by the block they read ("block1.project.weight", ...), so a weights file says what it holds.
        self.heads = nn.ModuleDict(
            {f"block{index + 1}": TokenMLPHead(num_tokens, embed_dim, token_dim, hidden, num_classes=vit.num_classes) for index in range(mlp_heads)}
        )

    def train(self, mode: bool = True) -> SEViT:
        """Only the heads ever train: the ViT stays in eval mode (no dropout) under them."""
        super().train(mode)
        self.vit.eval()
        return self

    def member_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every member: the K block heads first, the ViT's own head last."""
        final, tokens = self.vit.logits_and_block_tokens(x, len(self.heads))
        return [head(block_tokens) for head, block_tokens in zip(self.heads.values(), tokens, strict=True)] + [final]

    def forward(self, x: torch.Tensor, members: bool = False) -> torch.Tensor:
        """Ensemble logits (N, K); members=True gives every member's logits (M+1, N, K) for training the heads."""
        if members:
            return torch.stack(self.member_logits(x))
        probabilities = torch.stack([F.softmax(z, dim=1) for z in self.member_logits(x)])  # (M+1, N, K)
        mean = probabilities.mean(0)
        if self.combine == "average":
            return self.calibrated(torch.log(mean.clamp_min(1e-12)))
        votes = F.one_hot(probabilities.argmax(2), self.num_classes).sum(0).to(mean.dtype)
        score = votes + mean
        return self.calibrated(torch.log(score / score.sum(1, keepdim=True)))

    @torch.no_grad()
    def detection_score(self, x: torch.Tensor) -> torch.Tensor:
        """Per image, the mean KL(final head || block head): large when the members disagree (ROC-ready)."""
        members = self.member_logits(x)
        final = F.log_softmax(members[-1], dim=1)
        divergences = [F.kl_div(F.log_softmax(z, dim=1), final, log_target=True, reduction="none").sum(1) for z in members[:-1]]
        return torch.stack(divergences).mean(0)
