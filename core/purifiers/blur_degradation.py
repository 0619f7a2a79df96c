"""Cold diffusion's degradation D(x0, t): Gaussian blur to level t (Bansal et al., "Cold Diffusion").

Level i blurs level i - 1 with a Gaussian of standard deviation sigma_i = sigma_step * i, growing
with i like Bansal et al.'s "incremental" blur routine, so early levels remove fine texture (and
adversarial noise) and late ones remove structure. Gaussian blurs compose by adding variances:
D(x0, t) = G_t * ... * G_1 * x0 is ONE Gaussian blur of variance sum_{i<=t} sigma_i^2, so any level
costs one separable convolution, not t of them.

The kernel is the discrete Gaussian e^{-s} I_n(s) (Lindeberg's scale-space kernel, s = variance)
rather than a sampled exp(-n^2 / 2s): the discrete kernel composes exactly (T(s1) * T(s2) = T(s1+s2))
even at the sub-pixel sigmas of the first levels, where a sampled Gaussian's variance is far off.
Reflect padding keeps the composition exact at the borders (blurring the mirror extension of an
image with a symmetric kernel gives the mirror extension of the blurred image).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import ive
from torch import nn

from core.errors import PurifyLabError, check_range

# Kernel radius in standard deviations: the discrete Gaussian's mass beyond 5 sigma is < 1e-6.
_RADIUS_IN_SIGMAS = 5.0


@dataclass(frozen=True)
class BlurSchedule:
    """T blur levels; sigmas are in pixels at the model's resolution (128 px by default).

    The defaults give D(x, 20) a total sigma of 3.2 px at 128 px (5.6 px at 224): lung fields,
    heart and diaphragm stay visible while ribs and fine texture are gone.
    """

    levels: int = 20
    sigma_step: float = 0.06

    def validate(self) -> None:
        check_range("blur levels", self.levels, 1, 1000)
        check_range("blur sigma_step", self.sigma_step, 0.0, 10.0, low_open=True)

    def step_sigma(self, level: int) -> float:
        """Standard deviation of the blur that takes level - 1 to level."""
        return self.sigma_step * level

    def variance(self, level: int) -> float:
        """Total variance of D(., level): the sum of the per-step variances, closed form."""
        return self.sigma_step**2 * level * (level + 1) * (2 * level + 1) / 6

    def to_dict(self) -> dict:
        return asdict(self) | {"total_sigma_px": [round(math.sqrt(self.variance(t)), 4) for t in range(self.levels + 1)]}

    @classmethod
    def from_dict(cls, values: dict) -> BlurSchedule:
        schedule = cls(levels=int(values["levels"]), sigma_step=float(values["sigma_step"]))
        schedule.validate()
        return schedule


@lru_cache(maxsize=256)
def _discrete_gaussian(variance: float, radius: int) -> np.ndarray:
    """1-D discrete Gaussian of the given variance on [-radius, radius], normalised to sum 1.

    Cached as a NumPy array, not a tensor: a tensor first built under inference_mode (fast mode)
    could not be reused later in differentiable mode.
    """
    weights = ive(np.abs(np.arange(-radius, radius + 1)), variance)
    return (weights / weights.sum()).astype(np.float32)


def gaussian_blur_variance(x: torch.Tensor, variance: float) -> torch.Tensor:
    """Blur (N, C, H, W) with a separable discrete Gaussian of `variance` px^2 (differentiable).

    Reflect padding needs the radius below the image side; on images that small the kernel is
    truncated there and renormalised (only tiny test images reach this).
    """
    if variance <= 0:
        return x
    height, width = x.shape[-2:]
    radius = min(math.ceil(_RADIUS_IN_SIGMAS * math.sqrt(variance)) + 1, height - 1, width - 1)
    if radius < 1:
        return x
    kernel = torch.from_numpy(_discrete_gaussian(float(variance), radius)).to(device=x.device, dtype=x.dtype)
    channels = x.shape[1]
    padded = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


class BlurDegradation(nn.Module):
    """D(x0, t) for a whole batch at one level (int) or per-image levels ((N,) integer tensor)."""

    def __init__(self, schedule: BlurSchedule | None = None):
        super().__init__()
        self.schedule = schedule if schedule is not None else BlurSchedule()
        self.schedule.validate()

    def forward(self, x: torch.Tensor, level: int | torch.Tensor) -> torch.Tensor:
        if isinstance(level, torch.Tensor) and level.ndim > 0:
            if level.shape != (x.shape[0],):
                raise PurifyLabError(f"per-image blur levels must have shape ({x.shape[0]},), got {tuple(level.shape)}")
            out = torch.empty_like(x)
            for value in level.unique().tolist():
                chosen = level == value
                out[chosen] = self(x[chosen], int(value))
            return out
        level = int(level)
        check_range("blur level", level, 0, self.schedule.levels)
        return gaussian_blur_variance(x, self.schedule.variance(level))
