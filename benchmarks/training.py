"""Training: images/s of one optimiser step of the DDPM UNet and of the ViT, at batch 1 and the large batch.

Each step is the body of the engine's training loop with its own losses (the DDPM UNet:
`core.train.diffusion.denoising_loss`, AdamW; the ViT: the shipped augmentation, cross-entropy,
AdamW), on 128-px images (the diffusion CPU preset's 64-px crops are not used). Ours and naive start
from identical copies of the weights; ours is the same step with the GPU optimisations switched on,
so on a CPU the two are the same code and the speedup is ~1 by construction. The check compares both
paths' loss on one fixed batch in eval mode (no dropout draws) before any step.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.context import Context
from benchmarks.models import CLASSIFIER
from benchmarks.optimise import optimise
from benchmarks.timing import compare, count_flops, utilisation
from core.purifiers.diffusion import ddpm_scheduler
from core.train.classifier import TrainConfig, augment_batch
from core.train.diffusion import denoising_loss

# The engine's gpu-preset learning rates; only throughput is measured here, not convergence.
UNET_LR, VIT_LR = 2e-4, 1e-3
MAX_T_FRACTION = 0.25  # the shipped denoiser was trained on t <= 0.25 T

Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def unet_loss(schedule: dict[str, Any], seed: int) -> Loss:
    scheduler = ddpm_scheduler(schedule)
    max_t = max(1, round(MAX_T_FRACTION * scheduler.config.num_train_timesteps))

    def loss(unet: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return denoising_loss(unet, scheduler, images, max_t, torch.Generator(device=images.device).manual_seed(seed))

    return loss


def vit_loss(seed: int) -> Loss:
    config = TrainConfig()

    def loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        augmented = augment_batch(images, config, torch.Generator().manual_seed(seed))
        return F.cross_entropy(model(augmented), labels)

    return loss


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Loss, images: torch.Tensor, labels: torch.Tensor,
               precision: contextlib.AbstractContextManager) -> float:  # fmt: skip
    with precision:
        loss = loss_fn(model, images, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())  # the engine's loops read the loss every step too


def trainable(base: nn.Module, lr: float) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A training copy of `base` (which stays frozen for the other sections) and its AdamW."""
    model = copy.deepcopy(base).train().requires_grad_(True)
    return model, torch.optim.AdamW(model.parameters(), lr=lr)


def step_flops(base: nn.Module, lr: float, loss_fn: Loss, images: torch.Tensor, labels: torch.Tensor) -> int:
    """FLOPs of one fp32 eager step (forward and backward) on a throw-away copy."""
    model, optimizer = trainable(base, lr)
    return count_flops(lambda: train_step(model, optimizer, loss_fn, images, labels, contextlib.nullcontext()))


def eval_loss(model: nn.Module, loss_fn: Loss, images: torch.Tensor, labels: torch.Tensor,
              precision: contextlib.AbstractContextManager) -> float:  # fmt: skip
    """The loss on a fixed batch in eval mode (no dropout draws), without a step: the paths' check."""
    model.eval()
    with torch.no_grad(), precision:
        loss = float(loss_fn(model, images, labels))
    model.train()
    return loss


def run(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    seed = ctx.settings.seed
    for name, base, loss_fn, lr in (
        ("ddpm_unet", ctx.naive.ddpm_unet, unet_loss(ctx.naive.ddpm_schedule, seed), UNET_LR),
        (CLASSIFIER, ctx.naive.classifier, vit_loss(seed), VIT_LR),
    ):
        flops = step_flops(base, lr, loss_fn, ctx.images[:1], ctx.labels[:1])
        for batch in ctx.batches(ctx.settings.train_batch):
            row = measure(ctx, name, base, loss_fn, lr, batch, flops)
            ctx.log(
                f"train  {name:<12} batch {batch:<3} ours {row['ours']['images_per_s']:.3f} img/s, "
                f"naive {row['naive']['images_per_s']:.3f} img/s, speedup {row['speedup']}"
            )
            rows.append(row)
    return rows


def measure(ctx: Context, name: str, base: nn.Module, loss_fn: Loss, lr: float, batch: int, flops: int) -> dict[str, Any]:
    images, labels = ctx.images[:batch], ctx.labels[:batch]
    ours_model, ours_optimizer = trainable(base, lr)
    optimise([ours_model], ctx.settings.optimisations, ctx.device)
    naive_model, naive_optimizer = trainable(base, lr)
    ours_loss = eval_loss(ours_model, loss_fn, images, labels, ctx.precision())
    naive_loss = eval_loss(naive_model, loss_fn, images, labels, contextlib.nullcontext())
    ours_timing, _ = ctx.time(lambda: train_step(ours_model, ours_optimizer, loss_fn, images, labels, ctx.precision()), batch)
    naive_timing, _ = ctx.time(lambda: train_step(naive_model, naive_optimizer, loss_fn, images, labels, contextlib.nullcontext()), batch)
    return {
        "section": "train",
        "name": name,
        "batch": batch,
        "image_size": int(images.shape[-1]),
        "optimizer": "AdamW",
        **compare(ours_timing, naive_timing),
        **utilisation(flops, ours_timing.images_per_s, ctx.peak_tflops),
        "check": {"loss_ours": round(ours_loss, 6), "loss_naive": round(naive_loss, 6), "loss_abs_diff": abs(ours_loss - naive_loss)},
    }
