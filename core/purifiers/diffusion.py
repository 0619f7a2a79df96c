"""What the DDPM-family purifiers share: the noise schedule, the shipped denoiser, and its calls.

The schedule (T, betas) is part of the trained model, so it is read from the weights card and every
purifier builds its diffusers scheduler from that one dict. Images cross into the model as [-1, 1]
(the range the UNet was trained on) and come back as [0, 1]. In differentiable mode a long chain
checkpoints each denoiser call (`Purifier.checkpoints`), so an attack through a whole reverse chain
keeps one UNet's activations at a time instead of all of them.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.checkpoint import checkpoint

from core.errors import PurifyLabError, check_range
from core.purifiers.base import Purifier, PurifierConfig
from core.purifiers.unet import call_unet, load_shipped_unet
from core.weights import WEIGHTS_DIR, card_path, read_card

if TYPE_CHECKING:  # diffusers costs seconds to import (torch._dynamo, its transformers): only the purifiers that run a UNet pay for it.
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

DDPM_WEIGHTS_STEM = "ddpm_unet"

# Ho et al. (2020): T = 1000, betas linear from 1e-4 to 0.02; the training default too.
DEFAULT_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
}


@dataclass(frozen=True)
class DiffusionConfig(PurifierConfig):
    """Parameters every denoiser-driven purifier shares: which shipped UNet it runs.

    The X-ray model is the default; `ddpm_unet_mnist` / `ddpm_unet_cifar10` are the papers' own data
    sets' models. Result cells identify the network by its SHA-256, not by this name.
    """

    denoiser: str = DDPM_WEIGHTS_STEM  # weights/<denoiser>.safetensors

    def validate(self) -> None:
        if not re.fullmatch(r"[a-z0-9_]+", self.denoiser):
            raise PurifyLabError(f"denoiser='{self.denoiser}' must be a file stem in weights/ (letters, digits, _)")


@dataclass(frozen=True)
class NoiseDepthConfig(DiffusionConfig):
    """A denoiser-driven purifier that first noises its input to depth t*."""

    t_star: float = 0.04  # depth as a fraction of T

    def validate(self) -> None:
        super().validate()
        check_range("t_star", self.t_star, 0.0, 1.0, low_open=True)


def shipped_denoiser(stem: str = DDPM_WEIGHTS_STEM) -> tuple[UNet2DModel, dict]:
    """A shipped noise-prediction UNet and its card (from this module's WEIGHTS_DIR), loaded once per process."""
    weights = WEIGHTS_DIR / f"{stem}.safetensors"
    if card_path(weights).is_file():  # checked before loading; a missing file is reported by the loader
        _check_noise_predictor(stem, read_card(weights), WEIGHTS_DIR)
    return shared_shipped_unet(stem, WEIGHTS_DIR)


@functools.lru_cache(maxsize=8)
def shared_shipped_unet(stem: str, weights_dir: Path) -> tuple[UNet2DModel, dict]:
    """weights_dir/<stem>.safetensors, loaded and SHA-checked once per process for the DDPM-family and
    cold-diffusion purifiers alike: each setting of a sweep, or of the app's purifier cache, runs this
    one copy instead of reloading and holding its own. Sharing is safe because it is frozen (eval mode,
    no parameter gradients; attacks restore any mode they switch). `.to(device)` on one purifier moves
    it for all: a process runs its purifiers on one device."""
    return load_shipped_unet(stem, weights_dir)


def is_noise_predictor(card: dict) -> bool:
    return card.get("kind") == "ddpm-denoiser" and card.get("prediction_type") == "epsilon"


def _check_noise_predictor(stem: str, card: dict, weights_dir: Path) -> None:
    """Refuse a classifier or the cold (clean-image) UNet as `denoiser`: either would run silently as a noise predictor."""
    if not is_noise_predictor(card):
        shipped = sorted(path.stem for path in weights_dir.glob("*.json") if is_noise_predictor(read_card(path.with_suffix(".safetensors"))))
        raise PurifyLabError(f"denoiser='{stem}' is not a DDPM noise-prediction network; shipped ones: {', '.join(shipped) or 'none'}")


def shipped_schedule(stem: str = DDPM_WEIGHTS_STEM) -> dict[str, Any]:
    """The schedule the shipped model was trained with; the default when no weights are present."""
    return dict(_card_schedule(stem, str(WEIGHTS_DIR)))


@functools.lru_cache(maxsize=8)
def _card_schedule(stem: str, weights_dir: str) -> dict[str, Any]:
    """Read once per process: the app prices every purifier from it on every page run."""
    weights = Path(weights_dir) / f"{stem}.safetensors"
    if not card_path(weights).is_file():
        return DEFAULT_SCHEDULE
    return read_card(weights).get("scheduler", DEFAULT_SCHEDULE)


def ddpm_scheduler(schedule: dict[str, Any], **options: Any) -> DDPMScheduler:
    """The shipped schedule, with DDPMScheduler `options` (e.g. its variance type) on top."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**schedule, **options)


def ddim_scheduler(schedule: dict[str, Any], stride: int) -> DDIMScheduler:
    """A DDIM scheduler whose step goes from t to t - stride (diffusers derives it from T // n)."""
    from diffusers import DDIMScheduler

    total = schedule["num_train_timesteps"]
    scheduler = DDIMScheduler(**schedule)
    scheduler.set_timesteps(max(1, total // stride))
    if total // scheduler.num_inference_steps != stride:
        raise PurifyLabError(f"skip={stride} is not a DDIM stride for T={total}; use a value with T // (T // skip) == skip, e.g. a divisor of T")
    return scheduler


def start_timestep(fraction: float, total: int) -> int:
    """The 0-based diffusers timestep for a depth given as a fraction of T (t* = 1 is pure noise)."""
    return min(total - 1, max(0, round(fraction * total) - 1))


def achievable_stride(start: int, steps: int, total: int) -> int:
    """The smallest DDIM stride that reaches below t = 0 from `start` in at most `steps` steps."""
    wanted = math.ceil((start + 1) / steps)
    return total // max(1, total // wanted)


def to_model_space(x: torch.Tensor) -> torch.Tensor:
    return x * 2.0 - 1.0


def to_image_space(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def forward_noise(scheduler: DDPMScheduler | DDIMScheduler, x: torch.Tensor, timestep: int, generator: torch.Generator | None) -> torch.Tensor:
    """A draw of q(x_t | x_0) for images in [0, 1], returned in the model's [-1, 1] space.

    Every DDPM-family purifier starts here; all randomness comes from `generator`, never the global RNG.
    """
    from diffusers.utils.torch_utils import randn_tensor

    noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    timesteps = torch.full((x.shape[0],), timestep, device=x.device, dtype=torch.long)
    return scheduler.add_noise(to_model_space(x), noise, timesteps)


class DiffusionPurifier(Purifier):
    """A purifier that runs the shipped (or a given) noise-prediction UNet under a schedule.

    Pass `unet` and `schedule` to use another model (tests use a tiny random UNet); otherwise the
    shipped weights/<config.denoiser>.safetensors and the schedule in its card are used.
    """

    stochastic = True
    weights = DDPM_WEIGHTS_STEM

    def __init__(
        self,
        config: PurifierConfig | None = None,
        unet: UNet2DModel | None = None,
        schedule: dict[str, Any] | None = None,
    ):
        super().__init__(config)
        self.shipped = unet is None  # a shipped network runs only at the size it was trained at
        self.max_t_fraction: float | None = None  # the deepest t / T a shipped denoiser was trained at
        if unet is None:
            unet, card = shipped_denoiser(self.config.denoiser)
            self.record_shipped_weights(self.config.denoiser, card)
            schedule = schedule or card.get("scheduler", DEFAULT_SCHEDULE)
            self.max_t_fraction = card.get("max_t_fraction")
            field = self.sweeps.get("tstar")
            if field:
                self.warn_beyond_training(getattr(self.config, field), f"{field}={getattr(self.config, field)}")
        self.unet = unet.eval().requires_grad_(False)
        self.schedule = dict(schedule or DEFAULT_SCHEDULE)
        self.num_train_timesteps = int(self.schedule["num_train_timesteps"])

    @classmethod
    def chain(cls, config: DiffusionConfig, num_train_timesteps: int) -> list[int]:
        """The timesteps the reverse chain visits, one denoiser call each."""
        return []

    @classmethod
    def calls(cls, config: DiffusionConfig, num_train_timesteps: int) -> int:
        return len(cls.chain(config, num_train_timesteps))

    @classmethod
    def shipped_timesteps(cls, config: DiffusionConfig) -> int:
        return int(shipped_schedule(config.denoiser)["num_train_timesteps"])

    @property
    def image_size(self) -> int:
        """The side length the denoiser was trained at; callers resize to it explicitly."""
        return int(self.unet.config.sample_size)

    @property
    def input_channels(self) -> tuple[int, ...]:
        return (int(self.unet.config.in_channels),)

    def warn_beyond_training(self, fraction: float, setting: str) -> None:
        """Warn, not refuse: the t* sweeps of the presets (ddpm-defense, blau) go past it on purpose."""
        if self.max_t_fraction is not None and fraction > self.max_t_fraction:
            warnings.warn(
                f"{self.name}: {setting} is deeper than denoiser '{self.config.denoiser}' was trained for "
                f"(t <= {self.max_t_fraction} T, its card's max_t_fraction); its output there is untested",
                stacklevel=3,
            )

    def check_input(self, x: torch.Tensor) -> None:
        channels = self.unet.config.in_channels
        if x.ndim != 4 or x.shape[1] != channels:
            raise PurifyLabError(f"{self.name} expects images of shape (N, {channels}, H, W), got {tuple(x.shape)}")
        if self.shipped and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            raise PurifyLabError(
                f"denoiser '{self.config.denoiser}' was trained on {self.image_size} px images, got {tuple(x.shape[-2:])}; "
                f"resize to {self.image_size} or name a denoiser of that size"
            )
        multiple = 2 ** (len(self.unet.config.block_out_channels) - 1)
        if x.shape[-1] % multiple or x.shape[-2] % multiple:
            raise PurifyLabError(f"{self.name} needs H and W divisible by {multiple}, got {tuple(x.shape[-2:])}; resize to {self.image_size}")

    def predict_noise(self, sample: torch.Tensor, timestep: int) -> torch.Tensor:
        """One denoiser call; checkpointed when a large graph is being recorded."""
        t = torch.tensor(timestep, device=sample.device)
        if sample.requires_grad and self.checkpoints(sample):
            return checkpoint(self._unet_call, sample, t, use_reentrant=False)
        return self._unet_call(sample, t)

    def _unet_call(self, sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return call_unet(self.unet, sample, t)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "image_size": self.image_size, "schedule": self.schedule}
