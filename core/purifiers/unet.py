"""The denoising / restoration networks: diffusers' UNet2DModel at a few named sizes.

Both the DDPM-family purifiers (noise prediction) and the cold-diffusion purifiers (deblurring,
clean-image prediction) use this one builder, so sizes and shipped files are named in one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from core.errors import PurifyLabError
from core.lazy_import import lazy_import
from core.micro_batch import in_micro_batches
from core.weights import WEIGHTS_DIR, load_weights, read_card

if TYPE_CHECKING:  # diffusers costs seconds to import (torch._dynamo, its transformers): only the purifiers that run a UNet pay for it.
    from diffusers import UNet2DModel


@dataclass(frozen=True)
class UNetSpec:
    sample_size: int
    block_out_channels: tuple[int, ...]
    down_block_types: tuple[str, ...]
    up_block_types: tuple[str, ...]
    layers_per_block: int = 1
    norm_num_groups: int = 8
    in_channels: int = 1
    out_channels: int = 1


UNET_SPECS: dict[str, UNetSpec] = {
    # Tests: a few thousand parameters, diffusers-style.
    "tiny": UNetSpec(8, (4, 8), ("DownBlock2D", "AttnDownBlock2D"), ("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4),
    # Shipped: 128 px X-rays, attention only at the coarsest level to stay fast on a CPU.
    "small": UNetSpec(
        128,
        (32, 48, 64, 96),
        ("DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"),
    ),
    # The papers' own data sets (DiffDefense's MNIST, Blau et al.'s CIFAR-10): 28 / 32 px, attention
    # at the coarsest of three levels; small, so that DiffDefense (L x R x steps UNet passes with
    # gradients per image) runs its tables on a CPU, and all shipped weights stay within 20 MB.
    "mnist": UNetSpec(28, (16, 32, 32), ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"), ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D")),
    "cifar10": UNetSpec(
        32,
        (16, 32, 32),
        ("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        ("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        in_channels=3,
        out_channels=3,
    ),
}


def build_unet(size: str = "small", **overrides) -> UNet2DModel:
    """A fresh UNet2DModel from a named spec; `overrides` replace spec fields (e.g. sample_size)."""
    if size not in UNET_SPECS:
        raise PurifyLabError(f"unknown UNet size '{size}'; choose one of: {', '.join(UNET_SPECS)}")
    spec = asdict(UNET_SPECS[size]) | overrides
    return lazy_import("diffusers", "UNet2DModel")(**spec)


def call_unet(unet: UNet2DModel, sample: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """`unet(sample, timesteps).sample`, in micro-batches when `sample` is on a CPU (`core.micro_batch`)."""
    per_row = timesteps.reshape(-1).expand(sample.shape[0])
    return in_micro_batches(lambda part, steps: unet(part, steps).sample, "unet", sample, per_row)


def load_shipped_unet(file_stem: str, weights_dir: Path = WEIGHTS_DIR) -> tuple[UNet2DModel, dict]:
    """Load weights/<file_stem>.safetensors into the UNet its card describes (sha256-verified)."""
    path = weights_dir / f"{file_stem}.safetensors"
    if not path.is_file():
        raise PurifyLabError(f"purifier weights {path.name} are missing; train them with 'purifylab train' (see docs/TRAINING.md)")
    card = read_card(path)
    unet = build_unet(card["unet_size"], **card.get("unet_overrides", {}))
    load_weights(unet, path)
    return unet.eval().requires_grad_(False), card
