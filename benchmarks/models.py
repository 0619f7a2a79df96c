"""The networks and X-rays a run measures: the shipped weights, or tiny seeded models for the smoke test.

All purifiers of a run share one bundle's denoisers, as in the app; the naive reference gets its own
deep copy of the bundle (same weights) so that our path's in-place GPU optimisations never reach it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel
from torch import nn

from core.data import XRAY_TRAIN_DIR, load_dataset
from core.models import create_classifier
from core.purifiers import PURIFIERS, Purifier
from core.purifiers.base import parse_params
from core.purifiers.blur_degradation import BlurSchedule
from core.purifiers.cold import COLD_WEIGHTS_STEM, ColdBlurPurifier, ColdDirectPurifier, ColdReconPurifier
from core.purifiers.diffusion import DDPM_WEIGHTS_STEM, DEFAULT_SCHEDULE, DiffusionPurifier
from core.purifiers.noise import NoisePurifier
from core.purifiers.unet import build_unet, load_shipped_unet

CLASSIFIER = "vit"
TINY_SIZE = 16
TINY_VIT = dict(patch_size=8, embed_dim=32, depth=2, num_heads=2)


@dataclass
class Models:
    """The classifier and both denoisers (with the schedules they were trained with)."""

    classifier: nn.Module
    ddpm_unet: UNet2DModel
    ddpm_schedule: dict[str, Any]
    cold_unet: UNet2DModel
    blur_schedule: BlurSchedule
    kind: str

    @property
    def image_size(self) -> int:
        return int(self.classifier.image_size)

    def networks(self) -> tuple[nn.Module, ...]:
        return self.classifier, self.ddpm_unet, self.cold_unet

    def to(self, device: torch.device) -> Models:
        for network in self.networks():
            network.to(device)
        return self


def shipped_models() -> Models:
    """Fresh copies of the shipped weights (not the purifiers' per-process cache, which a run modifies)."""
    ddpm_unet, ddpm_card = load_shipped_unet(DDPM_WEIGHTS_STEM)
    cold_unet, cold_card = load_shipped_unet(COLD_WEIGHTS_STEM)
    return Models(
        classifier=create_classifier(CLASSIFIER).eval(),
        ddpm_unet=ddpm_unet,
        ddpm_schedule=dict(ddpm_card.get("scheduler", DEFAULT_SCHEDULE)),
        cold_unet=cold_unet,
        blur_schedule=BlurSchedule.from_dict(cold_card["blur_schedule"]),
        kind=f"shipped weights ({CLASSIFIER}, {DDPM_WEIGHTS_STEM}, {COLD_WEIGHTS_STEM})",
    )


def tiny_models(seed: int = 0) -> Models:
    """Untrained networks of the shipped architectures' families at 16 px: every code path in seconds."""
    torch.manual_seed(seed)
    classifier = create_classifier(CLASSIFIER, pretrained=False, image_size=TINY_SIZE, **TINY_VIT).eval()
    ddpm_unet = build_unet("tiny", sample_size=TINY_SIZE).eval().requires_grad_(False)
    cold_unet = build_unet("tiny", sample_size=TINY_SIZE).eval().requires_grad_(False)
    return Models(classifier, ddpm_unet, dict(DEFAULT_SCHEDULE), cold_unet, BlurSchedule(), kind=f"tiny seeded untrained ({TINY_SIZE} px)")


def load_models(tiny: bool, seed: int = 0) -> Models:
    return tiny_models(seed) if tiny else shipped_models()


def build_purifier(name: str, models: Models, **params: Any) -> Purifier:
    """A registered purifier (default setting unless `params`) running on the bundle's denoisers."""
    cls = PURIFIERS.get(name)
    config = parse_params(cls.config_type, params)
    if issubclass(cls, DiffusionPurifier):
        return cls(config, unet=models.ddpm_unet, schedule=models.ddpm_schedule)
    if issubclass(cls, (ColdDirectPurifier, ColdReconPurifier)):
        return cls(config, unet=models.cold_unet, schedule=models.blur_schedule)
    if issubclass(cls, ColdBlurPurifier):
        return cls(config, schedule=models.blur_schedule)
    if issubclass(cls, NoisePurifier):
        return cls(config, schedule=models.ddpm_schedule)
    return cls(config)


@dataclass(frozen=True)
class Images:
    pixels: torch.Tensor  # float32 (N, 1, S, S) in [0, 1]
    labels: torch.Tensor  # int64 (N,)
    source: str


def benchmark_images(count: int, size: int, data: Path = XRAY_TRAIN_DIR, seed: int = 0) -> Images:
    """`count` real X-rays spread over the classes when the data set is there, else fixed random images."""
    if data.exists():
        loaded = load_dataset(data, size=size, channels=1, limit=count)
        if len(loaded) >= count:
            return Images(loaded.images.float().div(255.0), loaded.labels, f"{data} (first {count}, round-robin over classes)")
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand(count, 1, size, size, generator=generator)
    return Images(pixels, torch.arange(count) % 2, f"fixed random images (seed {seed}; no data at {data})")
