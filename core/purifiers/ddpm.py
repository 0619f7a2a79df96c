"""DDPM purification (Ankile et al., ddpm_defense_pcam.md; DiffPure's DDPM variant).

Noise the input to t* with q(x_t* | x) and run the reverse DDPM chain back to t = 0, so the added
Gaussian noise drowns the adversarial perturbation and the model removes both. The paper runs every
step from t* = 0.04 (40 denoiser calls); `steps` strides the chain with diffusers' custom timesteps
(the DDPM posterior between non-adjacent steps) so a CPU can afford it; `steps=None` runs every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.errors import PurifyLabError
from core.purifiers.diffusion import (
    DiffusionPurifier,
    NoiseDepthConfig,
    ddpm_scheduler,
    forward_noise,
    start_timestep,
    to_image_space,
)


@dataclass(frozen=True)
class DDPMConfig(NoiseDepthConfig):
    steps: int | None = 10  # reverse steps, evenly spaced from t* to 0; None = every timestep

    def validate(self) -> None:
        super().validate()
        if self.steps is not None and self.steps < 1:
            raise PurifyLabError(f"steps={self.steps} must be >= 1 (or None for every timestep)")


class DDPMPurifier(DiffusionPurifier):
    name = "ddpm"
    display_name = "DDPM"
    sweeps = {"tstar": "t_star"}
    config_type = DDPMConfig

    def __init__(self, config: DDPMConfig | None = None, unet=None, schedule: dict[str, Any] | None = None):
        super().__init__(config, unet=unet, schedule=schedule)
        self.start = start_timestep(self.config.t_star, self.num_train_timesteps)
        self.timesteps = self.chain(self.config, self.num_train_timesteps)
        self.scheduler = ddpm_scheduler(self.schedule)
        self.scheduler.set_timesteps(timesteps=self.timesteps)

    @classmethod
    def chain(cls, config: DDPMConfig, num_train_timesteps: int) -> list[int]:
        return reverse_timesteps(start_timestep(config.t_star, num_train_timesteps), config.steps)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        self.check_input(x)
        sample = forward_noise(self.scheduler, x, self.start, generator)
        for t in self.timesteps:
            noise_prediction = self.predict_noise(sample, t)
            sample = self.scheduler.step(noise_prediction, t, sample, generator=generator).prev_sample
        return to_image_space(sample)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "timesteps": self.timesteps}


def reverse_timesteps(start: int, steps: int | None) -> list[int]:
    """Descending timesteps from `start` to 0: every one, or `steps` evenly spaced (at most one per t)."""
    if steps is None or steps >= start + 1:
        return list(range(start, -1, -1))
    return sorted({int(t) for t in np.linspace(start, 0, steps).round()}, reverse=True)
