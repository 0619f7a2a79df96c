"""The naive reference: the straightforward way a peer writes each purifier and attack.

fp32, eager, `torch.no_grad()` where nothing needs gradients, and no other tricks; one image at a
time, and for an attack one EOT draw per forward with the EOT loop inside the attack (torchattacks'
`eot_iter`: a forward and a backward per draw). The diffusion purifiers are re-written by hand as a
plain Python loop of `scheduler.step` calls over the same timesteps, scheduler and weights as our
path, so the two can be compared pixel for pixel; model-free purifiers have no loop to re-write and
are simply called one image at a time.

A reference is a function of one image (1, C, H, W) in [0, 1] and a generator; it runs with
autograd when the caller records a graph (a white-box attack through the chain), without otherwise.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from functools import partial

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel
from torch import nn

from core.attacks import AttackConfig, create_attack
from core.purifiers import Purifier
from core.purifiers.blur_degradation import BlurDegradation
from core.purifiers.cold import ColdDirectPurifier, ColdReconPurifier
from core.purifiers.ddim import DDIMPurifier
from core.purifiers.ddpm import DDPMPurifier
from core.purifiers.diffdefense import STEP_DECAY, DiffDefenseConfig, DiffDefensePaperConfig, DiffDefensePaperPurifier, DiffDefensePurifier

Reference = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


def noised(scheduler: DDPMScheduler | DDIMScheduler, x: torch.Tensor, start: int, generator: torch.Generator | None) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=generator, device=x.device)
    return scheduler.add_noise(x * 2 - 1, noise, torch.tensor([start], device=x.device))


def ddpm_loop(unet: UNet2DModel, scheduler: DDPMScheduler, start: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    sample = noised(scheduler, x, start, generator)
    for t in scheduler.timesteps:
        noise_prediction = unet(sample, t).sample
        sample = scheduler.step(noise_prediction, t, sample, generator=generator).prev_sample
    return ((sample + 1) / 2).clamp(0, 1)


def ddim_loop(
    unet: UNet2DModel, scheduler: DDIMScheduler, start: int, timesteps: list[int], eta: float,
    x: torch.Tensor, generator: torch.Generator | None,
) -> torch.Tensor:  # fmt: skip
    sample = noised(scheduler, x, start, generator)
    for t in timesteps:
        noise_prediction = unet(sample, t).sample
        sample = scheduler.step(noise_prediction, t, sample, eta=eta, generator=generator).prev_sample
    return ((sample + 1) / 2).clamp(0, 1)


def restored(unet: UNet2DModel, x_t: torch.Tensor, level: int) -> torch.Tensor:
    return ((unet(x_t * 2 - 1, torch.tensor([level], device=x_t.device)).sample + 1) / 2).clamp(0, 1)


def cold_direct_loop(unet: UNet2DModel, degrade: BlurDegradation, depth: int, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return restored(unet, degrade(x, depth), depth)


def cold_recon_loop(unet: UNet2DModel, degrade: BlurDegradation, levels: list[int], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    x_t = degrade(x, levels[0])
    for level, next_level in itertools.pairwise(levels):
        estimate = restored(unet, x_t, level)
        x_t = x_t - degrade(estimate, level) + degrade(estimate, next_level)
    return x_t.clamp(0, 1)


def diffdefense_loop(
    unet: UNet2DModel, scheduler: DDIMScheduler, start: int, timesteps: list[int], config: DiffDefenseConfig,
    x: torch.Tensor, generator: torch.Generator | None,
) -> torch.Tensor:  # fmt: skip
    """Silva et al.'s Algorithm 1 as written: gradient descent on the noise z, R restarts, best kept."""
    best_error, best = math.inf, x
    with torch.enable_grad():
        for _ in range(config.R):
            z = noised(scheduler, x, start, generator).requires_grad_(True)
            optimizer = torch.optim.Adam([z], lr=config.lr) if config.optimizer == "adam" else torch.optim.SGD([z], lr=config.lr)
            for iteration in range(1, config.L + 1):
                sample = z
                for t in timesteps:
                    sample = scheduler.step(unet(sample, t).sample, t, sample, eta=0.0).prev_sample
                reconstruction = (sample + 1) / 2
                error = (reconstruction - x).pow(2).mean()
                if error.item() < best_error:
                    best_error, best = error.item(), reconstruction.detach().clamp(0, 1)
                if iteration == config.L:
                    break
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * STEP_DECAY ** (iteration / math.ceil(0.8 * config.L))
                optimizer.zero_grad()
                error.backward()
                optimizer.step()
    return best


def diffdefense_paper_loop(
    unet: UNet2DModel, scheduler: DDPMScheduler, timesteps: list[int], config: DiffDefensePaperConfig,
    x: torch.Tensor, generator: torch.Generator | None,
) -> torch.Tensor:  # fmt: skip
    """Algorithm 1 as published: z ~ N(0, I), the stochastic chain, plain gradient steps, each restart's
    last reconstruction, the best restart kept."""
    best_error, best = math.inf, x
    with torch.enable_grad():
        for _ in range(config.R):
            z = torch.randn(x.shape, generator=generator, device=x.device).requires_grad_(True)
            for iteration in range(1, config.L + 1):
                sample = z
                for t in timesteps:
                    sample = scheduler.step(unet(sample, t).sample, t, sample, generator=generator).prev_sample
                reconstruction = (sample + 1) / 2
                error = (reconstruction - x).pow(2).mean()
                if iteration == config.L:
                    if error.item() < best_error:
                        best_error, best = error.item(), reconstruction.detach().clamp(0, 1)
                    break
                error.backward()
                with torch.no_grad():
                    z -= config.lr * STEP_DECAY ** (iteration / math.ceil(0.8 * config.L)) * z.grad
                z.grad = None
    return best


def naive_reference(purifier: Purifier) -> Reference:
    """The hand-written loop for `purifier`'s setting, on `purifier`'s own denoiser (give it the naive copy)."""
    if isinstance(purifier, DDPMPurifier):
        return partial(ddpm_loop, purifier.unet, purifier.scheduler, purifier.start)
    if isinstance(purifier, DDIMPurifier):
        return partial(ddim_loop, purifier.unet, purifier.scheduler, purifier.start, purifier.timesteps, purifier.config.eta)
    if isinstance(purifier, DiffDefensePaperPurifier):  # before its parent class
        return partial(diffdefense_paper_loop, purifier.unet, purifier.scheduler, purifier.timesteps, purifier.config)
    if isinstance(purifier, DiffDefensePurifier):
        return partial(diffdefense_loop, purifier.unet, purifier.scheduler, purifier.start, purifier.timesteps, purifier.config)
    if isinstance(purifier, ColdReconPurifier):
        return partial(cold_recon_loop, purifier.unet, purifier.degrade, purifier.levels())
    if isinstance(purifier, ColdDirectPurifier):
        return partial(cold_direct_loop, purifier.unet, purifier.degrade, purifier.config.depth)
    return lambda x, generator: purifier(x, generator=generator).clamp(0, 1)


@torch.no_grad()
def naive_purify(reference: Reference, images: torch.Tensor, seed: int) -> torch.Tensor:
    """One image at a time, each with its own generator seeded `seed`: what our path does at batch 1."""
    outputs = []
    for image in images:
        generator = torch.Generator(device=images.device).manual_seed(seed)
        outputs.append(reference(image[None], generator))
    return torch.cat(outputs)


class NaiveDefended(nn.Module):
    """classifier(purifier(x)) with ONE purifier draw per forward; BPDA as the usual straight-through line."""

    def __init__(self, reference: Reference, classifier: nn.Module, bpda: bool, seed: int):
        super().__init__()
        self.reference = reference
        self.classifier = classifier
        self.bpda = bpda
        self.seed = seed
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.generator is None:
            self.generator = torch.Generator(device=x.device).manual_seed(self.seed)
        if self.bpda:
            with torch.no_grad():
                purified = self.reference(x.detach(), self.generator)
            purified = x + (purified - x).detach()  # forward: purified; backward: identity
        else:
            purified = self.reference(x, self.generator)
        return self.classifier(purified)


def naive_attack(
    model: nn.Module, attack: str, images: torch.Tensor, labels: torch.Tensor, *, eps: float, steps: int, eot: int, seed: int,
) -> torch.Tensor:  # fmt: skip
    """PGD (as torchattacks' EOTPGD) or APGD with `eot_iter=eot` draws per step, one image at a time."""
    config = AttackConfig(name="eotpgd" if attack == "pgd" else attack, eps=eps, steps=steps, eot_iter=eot, seed=seed)
    run = create_attack(model, config)
    return torch.cat([run(image[None], label[None]) for image, label in zip(images, labels, strict=True)])
