"""NoiseDefense (Ankile et al., ddpm_defense_pcam.md): the forward process q(x_t | x_0) alone.

A model-free baseline: if Gaussian noise at t* already washes out the attack, the diffusion
model's reverse chain is not what earns the robustness. Kept in every table beside `ddpm`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from core.errors import check_range
from core.purifiers.base import Purifier, PurifierConfig
from core.purifiers.diffusion import (
    DDPM_WEIGHTS_STEM,
    ddpm_scheduler,
    forward_noise,
    shipped_schedule,
    start_timestep,
    to_image_space,
)


@dataclass(frozen=True)
class NoiseConfig(PurifierConfig):
    t_star: float = 0.04  # noise depth as a fraction of T (the paper's t* = 0.04)

    def validate(self) -> None:
        check_range("t_star", self.t_star, 0.0, 1.0, low_open=True)


class NoisePurifier(Purifier):
    """x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps in [-1, 1], mapped back to [0, 1]; no denoiser."""

    name = "noise"
    display_name = "Noise"
    weights = DDPM_WEIGHTS_STEM  # its noise schedule
    sweeps = {"tstar": "t_star"}
    stochastic = True
    config_type = NoiseConfig

    def __init__(self, config: NoiseConfig | None = None, schedule: dict[str, Any] | None = None):
        super().__init__(config)
        self.schedule = dict(schedule or shipped_schedule())
        self.scheduler = ddpm_scheduler(self.schedule)
        self.timestep = start_timestep(self.config.t_star, int(self.schedule["num_train_timesteps"]))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return to_image_space(forward_noise(self.scheduler, x, self.timestep, generator))

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "timestep": self.timestep, "schedule": self.schedule}
