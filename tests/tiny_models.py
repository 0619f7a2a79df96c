"""Tiny real models for the attack tests: a 2-layer CNN trained with a fixed seed on real
PneumoniaMNIST X-rays (28 px), so attacks, threat models and masking checks run on a model that has
actually learned something, in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.purifiers.base import Purifier


def pneumoniamnist(shared_data: Path, split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `count` images of a split as float (N, 1, 28, 28) in [0, 1], and their labels."""
    data = np.load(shared_data / "pneumoniamnist_28" / "pneumoniamnist.npz")
    images = torch.from_numpy(data[f"{split}_images"][:count]).float().div(255).unsqueeze(1)
    return images, torch.from_numpy(data[f"{split}_labels"][:count, 0]).long()


def tiny_cnn(images: torch.Tensor, labels: torch.Tensor, seed: int, width: int = 8, steps: int = 120, classes: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * 49, classes),
    )  # fmt: skip
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(0, len(images), (64,), generator=order)
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


class QuantisePurifier(Purifier):
    """8 grey levels with torch.round: zero gradient almost everywhere, the textbook masking defense
    the gradient-masking checks must flag."""

    name = "test-quantise"
    display_name = "Quantised (test)"

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.round(x * 7) / 7
