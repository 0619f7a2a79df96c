"""DiffDefense (Silva et al., diffdefense.md, Algorithm 1): reconstruct the input by optimising noise.

Find the z whose reverse diffusion G(z) reproduces the (possibly attacked) input, by L steps of
gradient descent on MSE(G(z), x) with a step size decayed by Delta = 0.1 over ceil(0.8 L) steps,
from R random starts; return the reconstruction with the lowest error. A model trained on clean
images reproduces clean images more easily than attacked ones, so the error is also an attack-
detection score (`purify_with_score`).

Two variants. `diffdefense_paper` is Algorithm 1 as published: z_T* ~ N(0, I), the stochastic
reverse chain of Eq. 2 (sigma_t = sqrt(beta_t), fresh noise every step and iteration, no
clipping), plain gradient steps, the last iteration's reconstruction of each restart and the best
restart per image. `diffdefense` is the affordable one: G is a short deterministic DDIM chain
(eta = 0) from depth t_start, z starts from q(z | x) at that depth (the paper's N(0, I) is the same
draw at t_start = T, where the prior no longer depends on x), Adam, and the best iteration is kept.

Gradients: differentiating through L inner optimisation steps is not affordable, so `forward`
returns the reconstruction with a straight-through (BPDA, identity) gradient to the input; attacks
on this purifier are BPDA attacks (`exact_gradients = False`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from core.errors import PurifyLabError, check_range
from core.purifiers.ddpm import reverse_timesteps
from core.purifiers.diffusion import (
    DiffusionConfig,
    DiffusionPurifier,
    achievable_stride,
    ddim_scheduler,
    ddpm_scheduler,
    forward_noise,
    start_timestep,
)

if TYPE_CHECKING:
    from diffusers import DDIMScheduler, DDPMScheduler

OPTIMIZERS = ("adam", "sgd")
STEP_DECAY = 0.1  # the paper's Delta


@dataclass(frozen=True)
class DiffDefenseConfig(DiffusionConfig):
    t_start: float = 0.1  # depth of the optimised noise z, as a fraction of T
    steps: int = 2  # deterministic DDIM steps from t_start to 0 per reconstruction
    L: int = 5  # gradient-descent iterations (the paper's L)
    R: int = 1  # random restarts, the best one kept per image (the paper's R)
    lr: float = 0.05  # initial step size eta^0
    optimizer: str = "adam"

    def validate(self) -> None:
        super().validate()
        check_range("t_start", self.t_start, 0.0, 1.0, low_open=True)
        check_range("lr", self.lr, 0.0, 10.0, low_open=True)
        for name, value in (("steps", self.steps), ("L", self.L), ("R", self.R)):
            if value < 1:
                raise PurifyLabError(f"{name}={value} must be >= 1")
        if self.optimizer not in OPTIMIZERS:
            raise PurifyLabError(f"optimizer='{self.optimizer}' is not one of: {', '.join(OPTIMIZERS)}")


@dataclass(frozen=True)
class DiffDefensePaperConfig(DiffusionConfig):
    t_start: float = 0.1  # T*, the depth z is drawn at, as a fraction of T
    steps: int | None = None  # reverse steps from T* to 0; None = every one, as the paper
    L: int = 5
    R: int = 1
    lr: float = 100.0  # eta^0, not given in the paper; on MSE (a mean over pixels) a step needs a large one

    def validate(self) -> None:
        super().validate()
        check_range("t_start", self.t_start, 0.0, 1.0, low_open=True)
        check_range("lr", self.lr, 0.0, 1e6, low_open=True)
        for name, value in (("L", self.L), ("R", self.R), ("steps", 1 if self.steps is None else self.steps)):
            if value < 1:
                raise PurifyLabError(f"{name}={value} must be >= 1")


@dataclass
class Reconstruction:
    images: torch.Tensor  # best reconstruction per image, [0, 1]
    mse: torch.Tensor  # per-image MSE of the unclamped reconstruction to the input (the paper's score), [0, 1] pixel units
    loss_history: list[float] = field(default_factory=list)  # mean MSE per iteration, restarts in order


class DiffDefensePurifier(DiffusionPurifier):
    name = "diffdefense"
    display_name = "DiffDefense"
    sweeps = {"tstar": "t_start"}
    config_type = DiffDefenseConfig
    exact_gradients: ClassVar[bool] = False
    keep_best_iteration: ClassVar[bool] = True  # the paper keeps the last iteration of each restart

    def __init__(self, config: DiffDefenseConfig | None = None, unet=None, schedule: dict[str, Any] | None = None):
        super().__init__(config, unet=unet, schedule=schedule)
        self.start = start_timestep(self.config.t_start, self.num_train_timesteps)
        self.scheduler, self.timesteps = self._chain()

    @classmethod
    def stride(cls, config: DiffDefenseConfig, num_train_timesteps: int) -> int:
        return achievable_stride(start_timestep(config.t_start, num_train_timesteps), config.steps, num_train_timesteps)

    @classmethod
    def chain(cls, config: DiffDefenseConfig, num_train_timesteps: int) -> list[int]:
        """G's timesteps: deterministic DDIM from t_start in `steps` strides."""
        start = start_timestep(config.t_start, num_train_timesteps)
        return list(range(start, -1, -cls.stride(config, num_train_timesteps)))

    @classmethod
    def calls(cls, config: DiffDefenseConfig, num_train_timesteps: int) -> int:
        """Forward denoiser calls per image (each but the last iteration's also runs one backward)."""
        return config.R * config.L * len(cls.chain(config, num_train_timesteps))

    def graph_calls(self) -> int:
        """One reconstruction's chain: each iteration's graph is freed by its own backward."""
        return len(self.timesteps)

    def _chain(self) -> tuple[DDIMScheduler, list[int]]:
        """G's scheduler and timesteps."""
        stride = self.stride(self.config, self.num_train_timesteps)
        return ddim_scheduler(self.schedule, stride), self.chain(self.config, self.num_train_timesteps)

    def generate(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """G(z): the deterministic DDIM chain from t_start, in [-1, 1]."""
        sample = z
        for t in self.timesteps:
            sample = self.scheduler.step(self.predict_noise(sample, t), t, sample, eta=0.0).prev_sample
        return sample

    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Reconstruction:
        """Algorithm 1 with R restarts; runs with autograd on even under inference_mode."""
        self.check_input(x)
        with torch.inference_mode(False), torch.enable_grad():
            target = x.detach().clone()
            best_images = target.clone()
            best_mse = torch.full((x.shape[0],), math.inf, device=x.device)
            history: list[float] = []
            for _ in range(self.config.R):
                z = self._initial_noise(target, generator).requires_grad_(True)
                optimizer = self._optimizer(z)
                for iteration in range(1, self.config.L + 1):
                    last = iteration == self.config.L
                    with torch.set_grad_enabled(not last):  # the last iteration takes no step: no graph to record
                        unclamped = (self.generate(z, generator) + 1.0) / 2.0  # unclamped for the gradient at black borders (DDIM clips x0 per step)
                    mse = (unclamped - target).pow(2).flatten(1).mean(1)
                    history.append(float(mse.detach().mean()))
                    if self.keep_best_iteration or last:
                        improved = mse.detach() < best_mse
                        best_mse = torch.where(improved, mse.detach(), best_mse)
                        best_images = torch.where(improved[:, None, None, None], unclamped.detach().clamp(0.0, 1.0), best_images)
                    if last:
                        break
                    for group in optimizer.param_groups:
                        group["lr"] = self.config.lr * STEP_DECAY ** (iteration / math.ceil(0.8 * self.config.L))
                    optimizer.zero_grad(set_to_none=True)
                    mse.sum().backward()
                    optimizer.step()
        diverged = int((~torch.isfinite(best_mse)).sum())
        if diverged:  # never hand back the attacked input as if it had been purified
            raise PurifyLabError(
                f"{self.name}: the reconstruction diverged (not finite) on {diverged} of {x.shape[0]} images at lr={self.config.lr:g}, "
                f"t_start={self.config.t_start:g}: lower lr or t_start"
            )
        return Reconstruction(best_images, best_mse, history)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        images = self.reconstruct(x, generator).images
        return images.detach() + (x - x.detach())  # BPDA: identity gradient, value exactly `images`

    def purify_with_score(self, x: torch.Tensor, seed: int | None = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstructions, per-image MSE): the MSE is DiffDefense's attack-detection score.

        Checked like `purify`: a 0-255 image would otherwise score as a blatant attack."""
        from core.io import validate_image_tensor

        x = validate_image_tensor(x, channels=self.input_channels)
        generator = None if seed is None else torch.Generator(device=x.device).manual_seed(seed)
        result = self.reconstruct(x, generator)
        return result.images, result.mse

    def _initial_noise(self, target: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return forward_noise(self.scheduler, target, self.start, generator)

    def _optimizer(self, z: torch.Tensor) -> torch.optim.Optimizer:
        if self.config.optimizer == "adam":
            return torch.optim.Adam([z], lr=self.config.lr)
        return torch.optim.SGD([z], lr=self.config.lr)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "timesteps": self.timesteps, "gradients": "bpda"}


class DiffDefensePaperPurifier(DiffDefensePurifier):
    """Algorithm 1 as published (see the module docstring); `steps` strides the chain for a CPU."""

    name = "diffdefense_paper"
    display_name = "DiffDefense (as published)"
    config_type = DiffDefensePaperConfig
    keep_best_iteration = False

    def _chain(self) -> tuple[DDPMScheduler, list[int]]:
        """Eq. 2: the DDPM posterior mean without clipping x0, plus sigma_t n, at every step from T*.

        sigma_t = sqrt(beta_t) as published when every step is run. Over a stride its analogue, the
        stride's beta, would leave noise of that size in the last step's output (sqrt(0.2) for a
        100-step stride), so a strided chain takes the stride's posterior variance instead.
        """
        timesteps = self.chain(self.config, self.num_train_timesteps)
        variance = "fixed_large" if len(timesteps) == self.start + 1 else "fixed_small"
        scheduler = ddpm_scheduler(self.schedule, variance_type=variance, clip_sample=False)
        scheduler.set_timesteps(timesteps=timesteps)
        return scheduler, timesteps

    @classmethod
    def chain(cls, config: DiffDefensePaperConfig, num_train_timesteps: int) -> list[int]:
        return reverse_timesteps(start_timestep(config.t_start, num_train_timesteps), config.steps)

    def generate(self, z: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """G(z): the stochastic reverse chain from T*, a fresh noise draw at every step, in [-1, 1]."""
        sample = z
        for t in self.timesteps:
            sample = self.scheduler.step(self.predict_noise(sample, t), t, sample, generator=generator).prev_sample
        return sample

    def _initial_noise(self, target: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        return randn_tensor(target.shape, generator=generator, device=target.device, dtype=target.dtype)

    def _optimizer(self, z: torch.Tensor) -> torch.optim.Optimizer:
        return torch.optim.SGD([z], lr=self.config.lr)  # z <- z - eta^i grad, line 10
