"""Cold-diffusion deblurring purifiers: the three variants of Defensive Diffusion (Imam et al.).

A restoration UNet R(x_t, t) predicts the clean image from D(x0, t), the blur of level t
(blur_degradation.py). Cold diffusion has no noise, so all three purifiers are deterministic:

* `cold_blur`   D(x, depth): the forward process only ("Blurred", the paper's most robust variant);
* `cold_direct` R(D(x, depth), depth): one restoration call ("Direct recon.");
* `cold_recon`  Bansal et al.'s improved sampling (their Algorithm 2) from depth down to 0,
  x_{t'} = x_t - D(R(x_t, t), t) + D(R(x_t, t), t'), which cancels R's errors at each level
  ("Reconstructed").

The UNet is trained by core/train/cold.py and shipped as weights/cold_unet.safetensors; its card
holds the blur schedule it was trained with, which the purifiers read back.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from core.errors import PurifyLabError, check_range
from core.purifiers.base import Purifier, PurifierConfig
from core.purifiers.blur_degradation import BlurDegradation, BlurSchedule
from core.purifiers.diffusion import shared_shipped_unet
from core.purifiers.unet import call_unet
from core.weights import WEIGHTS_DIR, read_card

if TYPE_CHECKING:
    from diffusers import UNet2DModel

COLD_WEIGHTS_STEM = "cold_unet"


def restore(unet: UNet2DModel, x_t: torch.Tensor, level: int | torch.Tensor) -> torch.Tensor:
    """R(x_t, t): the UNet's estimate of the clean image, in [0, 1] units (not clamped).

    The UNet sees [-1, 1]; the timestep is the blur level. Images whose side is not a multiple of
    the UNet's downsampling factor are mirror-padded for the call and cropped back.
    """
    timesteps = torch.as_tensor(level, device=x_t.device).reshape(-1).expand(x_t.shape[0])
    network = getattr(unet, "module", unet)  # under DistributedDataParallel the config sits on .module
    factor = 2 ** (len(network.config.block_out_channels) - 1)
    height, width = x_t.shape[-2:]
    if min(height, width) < factor:  # the reflection padding below needs padding < side
        raise PurifyLabError(f"the cold-diffusion UNet needs images of at least {factor} px a side; got {(height, width)}")
    pad_h, pad_w = -height % factor, -width % factor
    model_input = F.pad(x_t, (0, pad_w, 0, pad_h), mode="reflect") if pad_h or pad_w else x_t
    prediction = call_unet(unet, model_input * 2 - 1, timesteps)[..., :height, :width]
    return (prediction + 1) / 2


def shipped_blur_schedule() -> BlurSchedule:
    """The schedule the shipped UNet was trained with; the default one when no weights are shipped."""
    return _card_blur_schedule(str(WEIGHTS_DIR))


@functools.lru_cache(maxsize=4)
def _card_blur_schedule(weights_dir: str) -> BlurSchedule:
    """Read once per process: every ColdConfig checks its depth against it (the app builds one per slider move)."""
    card_file = Path(weights_dir) / f"{COLD_WEIGHTS_STEM}.json"
    if card_file.is_file():
        return BlurSchedule.from_dict(read_card(card_file)["blur_schedule"])
    return BlurSchedule()


@dataclass(frozen=True)
class ColdConfig(PurifierConfig):
    depth: int = 20  # blur level the input is degraded to; 1..T of the schedule (T = 20 shipped)

    def validate(self) -> None:
        # The shipped schedule's T, so a job is priced only at a depth the purifier will accept.
        check_range("depth", self.depth, 1, shipped_blur_schedule().levels)


@dataclass(frozen=True)
class ColdReconConfig(ColdConfig):
    steps: int | None = None  # restoration calls from depth to 0, evenly strided; None = every level

    def validate(self) -> None:
        super().validate()
        if self.steps is not None:
            check_range("steps", self.steps, 1, self.depth)


def check_shipped_size(purifier: ColdBlurPurifier | _ColdUNetPurifier, x: torch.Tensor) -> None:
    """The shipped blur schedule's sigmas are pixels of a 128 px X-ray, and its UNet learnt at that size:
    on a 28 px digit the same depth is a blur 4.6 times as wide, which left MNIST at chance with no word."""
    size = purifier.image_size
    if purifier.shipped and tuple(x.shape[-2:]) != (size, size):
        raise PurifyLabError(f"{purifier.name}: the shipped blur schedule is in pixels of {size} px images, got {tuple(x.shape[-2:])}; resize to {size}")


class ColdBlurPurifier(Purifier):
    """Blurred: D(x, depth), the forward process of the deblurring model only."""

    name = "cold_blur"
    display_name = "Blurred"
    weights = COLD_WEIGHTS_STEM  # its blur schedule
    sweeps = {"depth": "depth"}
    config_type = ColdConfig

    # The schedule's sigmas are pixels of the shipped model's 128-px input: resize to it first.
    image_size = 128

    def __init__(self, config: ColdConfig | None = None, schedule: BlurSchedule | None = None):
        super().__init__(config)
        self.shipped = schedule is None
        self.degrade = BlurDegradation(schedule if schedule is not None else shipped_blur_schedule())
        check_range("depth", self.config.depth, 1, self.degrade.schedule.levels)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_shipped_size(self, x)
        return self.degrade(x, self.config.depth)


class _ColdUNetPurifier(Purifier):
    """Shared set-up: the frozen restoration UNet (shipped, or given for tests) and its schedule."""

    weights = COLD_WEIGHTS_STEM
    sweeps = {"depth": "depth"}

    def __init__(
        self,
        config: ColdConfig | None = None,
        unet: UNet2DModel | None = None,
        schedule: BlurSchedule | None = None,
    ):
        super().__init__(config)
        self.shipped = unet is None
        if unet is None:
            unet, card = shared_shipped_unet(COLD_WEIGHTS_STEM, WEIGHTS_DIR)
            self.record_shipped_weights(COLD_WEIGHTS_STEM, card)
            schedule = BlurSchedule.from_dict(card["blur_schedule"])
        self.unet = unet.eval().requires_grad_(False)
        self.image_size = unet.config.sample_size  # the resolution it was trained at (CLI and benchmarks resize to it)
        self.degrade = BlurDegradation(schedule)
        check_range("depth", self.config.depth, 1, self.degrade.schedule.levels)

    def _restore(self, x_t: torch.Tensor, level: int) -> torch.Tensor:
        """R(x_t, level) clamped to [0, 1]; channels are restored one by one (the UNet is grey).

        With autograd on, a long chain's calls are checkpointed so a white-box attack through it
        stores one UNet's activations at a time.
        """
        batch, channels, height, width = x_t.shape
        grey = x_t.reshape(batch * channels, 1, height, width)
        if self.checkpoints(grey):
            restored = checkpoint(restore, self.unet, grey, level, use_reentrant=False)
        else:
            restored = restore(self.unet, grey, level)
        return restored.reshape(batch, channels, height, width).clamp(0, 1)


class ColdDirectPurifier(_ColdUNetPurifier):
    """Direct reconstruction: R(D(x, depth), depth) in one restoration call."""

    name = "cold_direct"
    display_name = "Direct recon."
    config_type = ColdConfig

    @classmethod
    def calls(cls, config: ColdConfig, num_train_timesteps: int) -> int:
        return 1

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_shipped_size(self, x)
        depth = self.config.depth
        return self._restore(self.degrade(x, depth), depth)


class ColdReconPurifier(_ColdUNetPurifier):
    """Reconstruction: cold-diffusion improved sampling from D(x, depth) down to level 0."""

    name = "cold_recon"
    display_name = "Reconstructed"
    config_type = ColdReconConfig

    @classmethod
    def calls(cls, config: ColdReconConfig, num_train_timesteps: int) -> int:
        return config.steps if config.steps is not None else config.depth

    def levels(self) -> list[int]:
        """depth, ..., 0 in `nfe()` even strides (distinct after rounding, since steps <= depth)."""
        return torch.linspace(self.config.depth, 0, self.nfe() + 1).round().long().tolist()

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        check_shipped_size(self, x)
        levels = self.levels()
        x_t = self.degrade(x, levels[0])
        for level, next_level in zip(levels[:-1], levels[1:], strict=True):
            x0_estimate = self._restore(x_t, level)
            x_t = x_t - self.degrade(x0_estimate, level) + self.degrade(x0_estimate, next_level)
        return x_t.clamp(0, 1)
