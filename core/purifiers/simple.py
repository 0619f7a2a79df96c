"""Model-free purifiers: the identity (no defense) and a Gaussian blur baseline.

Blur stays in every table as a baseline so that gains are not credited to diffusion when plain
low-pass filtering would have done as well.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms.functional import gaussian_blur

from core.errors import PurifyLabError, check_range
from core.purifiers.base import Purifier, PurifierConfig


class IdentityPurifier(Purifier):
    name = "none"
    display_name = "No purification"
    keeps_saturated_pixels = True
    changes_image = False

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x


@dataclass(frozen=True)
class BlurConfig(PurifierConfig):
    sigma: float = 1.5  # pixels at the model's resolution

    def validate(self) -> None:
        check_range("sigma", self.sigma, 0.0, 20.0, low_open=True)


class GaussianBlurPurifier(Purifier):
    name = "blur"
    display_name = "Gaussian blur"
    config_type = BlurConfig
    keeps_saturated_pixels = True

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        sigma = self.config.sigma
        kernel = 2 * int(3 * sigma + 0.5) + 1
        smallest = kernel // 2 + 1  # torchvision pads by reflection, which needs padding < side
        if min(x.shape[-2:]) < smallest:
            raise PurifyLabError(f"blur sigma={sigma:g} needs images of at least {smallest} px a side; got {tuple(x.shape[-2:])}")
        return gaussian_blur(x, kernel_size=[kernel, kernel], sigma=[sigma, sigma])


def gaussian_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """x + N(0, sigma^2) per pixel, clamped to [0, 1]: randomized smoothing's noise, shared by the
    purifier, the noise-trained classifier's training loop and the certificate."""
    noise = torch.randn(x.shape, generator=generator, device=x.device if generator is None else generator.device)
    return (x + sigma * noise.to(x.device)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class GaussianNoiseConfig(PurifierConfig):
    sigma: float = 0.25  # std in [0, 1] pixels

    def validate(self) -> None:
        check_range("sigma", self.sigma, 0.0, 1.0, low_open=True)


class GaussianNoisePurifier(Purifier):
    """Randomized smoothing's input noise (Cohen et al. 2019): a classifier trained under the same
    noise (`resnet_smooth`) reads the result. The gradient through it is the identity where the noisy
    pixel stays inside [0, 1] and zero where the clamp cuts it (16 % of X-ray pixels at sigma 0.25),
    as in the smoothed classifier the certificate is about."""

    name = "gaussian"
    display_name = "Smoothing noise"
    stochastic = True
    config_type = GaussianNoiseConfig

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return gaussian_noise(x, self.config.sigma, generator)
