"""Train the DDPM denoiser that the `noise`/`ddpm`/`ddim`/`diffdefense` purifiers use.

Epsilon-prediction training (Ho et al. 2020) of diffusers' UNet2DModel with DDPMScheduler's forward
process on the train part of the seed-0 split, EMA weights (diffusers EMAModel), HF Accelerate (so
`accelerate launch -m core train diffusion ...` spreads it over GPUs unchanged), safetensors
checkpoints that resume at the next epoch, a PNG grid of validation reconstructions every epoch,
and a card whose quality figures are what the shipped `ddpm` purifier actually does to validation
images at its default setting (PSNR / SSIM).

Two CPU economies, both recorded in the card:
* `max_t_fraction` caps the sampled timesteps: purification only starts at t* <= ~0.2 T, so a model
  with little compute spends it all on the noise levels it will be asked to remove;
* `crop_size` trains on random crops of the `image_size` images: the UNet is convolutional and
  low-noise denoising is local, so a 64-px crop teaches the same task at a quarter of the cost.
  Quality figures are always measured on whole `image_size` images.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from tqdm import tqdm

from core.data.locations import XRAY_TRAIN_DIR
from core.errors import PurifyLabError
from core.purifiers.ddpm import DDPMPurifier
from core.purifiers.diffusion import DDPM_WEIGHTS_STEM, ddpm_scheduler
from core.purifiers.unet import UNET_SPECS, build_unet
from core.train.checkpoint import (
    check_resumed_data,
    ema_copy,
    load_ema_checkpoint,
    only_publish_left,
    publishing_note,
    reporting_write_failures,
    resume_state,
    save_ema_checkpoint,
)
from core.train.layout import DIFFUSION_PRESETS, check_not_reporting_cohort, check_preset, diffusion_run_dir
from core.train.runs import (
    card_data,
    check_finite_loss,
    completed_epochs,
    load_training_splits,
    open_run_folder,
    start_accelerator,
    stopped_by_time_budget,
    training_device,
)
from core.weights import save_weights

GRID_IMAGES = 8


@dataclass(frozen=True)
class DiffusionTrainConfig:
    unet_size: str = "small"
    image_size: int = 128
    crop_size: int | None = None  # train on random crops of this side (None: whole images)
    epochs: int = 50
    max_minutes: float | None = None  # stop after the batch that crosses this wall-clock budget
    max_steps: int | None = None  # stop after this many optimizer steps (tests)
    batch_size: int = 64
    lr: float = 2e-4
    warmup_steps: int = 200
    ema_decay: float = 0.999
    seed: int = 0
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 0.0001
    beta_end: float = 0.02
    max_t_fraction: float | None = None  # sample t only below this fraction of T
    eval_images: int = 64  # validation images for the card's PSNR / SSIM
    limit: int | None = None  # images per split (tests)
    threads: int | None = None  # torch CPU threads (None: torch's default)
    resume: bool = False
    weights_stem: str = DDPM_WEIGHTS_STEM  # the file's name, in the run folder and in weights/ when shipped
    preset: str = "custom"

    def validate(self) -> None:
        if self.unet_size not in UNET_SPECS:
            raise PurifyLabError(f"unknown UNet size '{self.unet_size}'; choose one of: {', '.join(UNET_SPECS)}")
        for name in ("image_size", "epochs", "batch_size", "num_train_timesteps", "eval_images"):
            if getattr(self, name) < 1:
                raise PurifyLabError(f"{name}={getattr(self, name)} must be >= 1")
        if self.crop_size is not None and not 8 <= self.crop_size <= self.image_size:
            raise PurifyLabError(f"crop_size={self.crop_size} is outside the allowed range [8, {self.image_size}]")
        if not self.lr > 0:
            raise PurifyLabError(f"lr={self.lr} must be > 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise PurifyLabError(f"ema_decay={self.ema_decay} is outside the allowed range [0, 1)")
        if self.max_t_fraction is not None and not 0.0 < self.max_t_fraction <= 1.0:
            raise PurifyLabError(f"max_t_fraction={self.max_t_fraction} is outside the allowed range (0, 1]")
        for name in ("max_minutes", "max_steps", "limit", "threads"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise PurifyLabError(f"{name}={value} must be > 0 (or unset)")

    @property
    def schedule(self) -> dict[str, Any]:
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
        }

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> DiffusionTrainConfig:
        """tiny: seconds, for tests; cpu: the shipped CPU run (~1 h on one core); gpu: the full run;
        mnist / cifar10: the denoisers of the DiffDefense and Blau et al. re-runs on those data sets."""
        presets = {
            "tiny": dict(unet_size="tiny", image_size=32, epochs=1, max_steps=8, batch_size=8, lr=1e-3, warmup_steps=0, ema_decay=0.9, eval_images=4, limit=32),
            "cpu": dict(
                unet_size="small",
                image_size=128,
                crop_size=64,
                epochs=20,
                max_minutes=60.0,
                batch_size=16,
                lr=5e-4,
                warmup_steps=100,
                ema_decay=0.999,
                max_t_fraction=0.25,
                threads=1,
            ),
            "gpu": dict(unet_size="small", image_size=128, epochs=200, batch_size=64, lr=2e-4, warmup_steps=500, ema_decay=0.9995, eval_images=256),
            # Whole images (they are small) over the whole schedule: DiffDefense as published draws
            # z at T* from N(0, I), which needs a denoiser for every t up to T.
            "mnist": dict(
                unet_size="mnist",
                image_size=28,
                epochs=100,
                max_minutes=40.0,
                batch_size=64,
                lr=1e-3,
                warmup_steps=100,
                ema_decay=0.995,
                max_t_fraction=1.0,
                weights_stem="ddpm_unet_mnist",
                threads=1,
            ),
            "cifar10": dict(
                unet_size="cifar10",
                image_size=32,
                epochs=40,
                max_minutes=80.0,
                batch_size=64,
                lr=1e-3,
                warmup_steps=100,
                ema_decay=0.995,
                max_t_fraction=0.3,
                weights_stem="ddpm_unet_cifar10",
                threads=1,
            ),
        }
        check_preset(name, DIFFUSION_PRESETS)
        settings = presets[name] | {k: v for k, v in overrides.items() if v is not None}
        config = replace(cls(), preset=name, **settings)
        config.validate()
        return config


# ------------------------------------------------------------------------------------ image quality


def psnr(reference: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for [0, 1] images."""
    mse = (reference - image).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return 10.0 * torch.log10(1.0 / mse)


def ssim(reference: torch.Tensor, image: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004: 11 x 11 Gaussian window, sigma 1.5, K = 0.01, 0.03) for [0, 1]."""
    coords = torch.arange(window, dtype=reference.dtype, device=reference.device) - (window - 1) / 2
    gauss = torch.exp(-(coords**2) / (2 * sigma**2))
    gauss = gauss / gauss.sum()
    kernel = (gauss[:, None] * gauss[None, :]).expand(reference.shape[1], 1, window, window)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=reference.shape[1])

    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = blur(reference), blur(image)
    var_x = blur(reference * reference) - mu_x**2
    var_y = blur(image * image) - mu_y**2
    cov = blur(reference * image) - mu_x * mu_y
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return score.flatten(1).mean(1)


# ------------------------------------------------------------------------------------ training


def denoising_loss(unet, scheduler, images: torch.Tensor, max_t: int, generator: torch.Generator) -> torch.Tensor:
    """The DDPM objective on [0, 1] images: MSE between the noise added by q(x_t | x_0) at a uniform
    t < max_t and the UNet's prediction of it (epsilon parameterisation, model space [-1, 1])."""
    x = images * 2.0 - 1.0
    noise = torch.randn(x.shape, generator=generator, device=x.device)
    timesteps = torch.randint(0, max_t, (x.shape[0],), generator=generator, device=x.device)
    return F.mse_loss(unet(scheduler.add_noise(x, noise, timesteps), timesteps).sample, noise)


def _random_crops(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    side = images.shape[-1]
    offsets = torch.randint(0, side - size + 1, (images.shape[0], 2), generator=generator).tolist()
    return torch.stack([img[:, top : top + size, left : left + size] for img, (top, left) in zip(images, offsets, strict=True)])


@torch.inference_mode()
def reconstruction_quality(unet, schedule: dict, images: torch.Tensor, seed: int = 0, batch_size: int = 16) -> dict:
    """What the default `ddpm` purifier does to clean images: PSNR / SSIM of its output vs the input,
    beside the same figures for the noised input at t* (what the model has to undo)."""
    purifier = DDPMPurifier(unet=unet, schedule=schedule)
    noiser = ddpm_scheduler(schedule)
    generator = torch.Generator().manual_seed(seed)
    scores: dict[str, list[torch.Tensor]] = {"psnr": [], "ssim": [], "noisy_psnr": [], "noisy_ssim": []}
    for batch in images.split(batch_size):
        x = batch.float().div(255.0) if batch.dtype == torch.uint8 else batch
        purified = purifier(x, generator=generator)
        noise = torch.randn(x.shape, generator=generator)
        start = torch.full((x.shape[0],), purifier.start, dtype=torch.long)
        noisy = ((noiser.add_noise(x * 2 - 1, noise, start) + 1) / 2).clamp(0, 1)
        scores["psnr"].append(psnr(x, purified))
        scores["ssim"].append(ssim(x, purified))
        scores["noisy_psnr"].append(psnr(x, noisy))
        scores["noisy_ssim"].append(ssim(x, noisy))
    result = {key: round(float(torch.cat(values).mean()), 4) for key, values in scores.items()}
    return result | {"t_star": purifier.config.t_star, "steps": purifier.config.steps, "nfe": purifier.nfe(), "images": len(images), "seed": seed}


@torch.inference_mode()
def _save_grid(unet, schedule: dict, images: torch.Tensor, path: Path, seed: int) -> float:
    """Rows: validation images, their noised version at t*, their `ddpm` purification; returns PSNR."""
    from torchvision.utils import save_image

    purifier = DDPMPurifier(unet=unet, schedule=schedule)
    x = images.float().div(255.0)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=generator)
    start = torch.full((x.shape[0],), purifier.start, dtype=torch.long)
    noisy = ((purifier.scheduler.add_noise(x * 2 - 1, noise, start) + 1) / 2).clamp(0, 1)
    purified = purifier(x, generator=generator)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.cat([x, noisy, purified]), str(path), nrow=len(x))
    return float(psnr(x, purified).mean())


def run_weights_path(out_dir: Path, stem: str) -> Path:
    """Where a denoiser run writes its weights when not told: its run folder, whatever the preset, as a
    classifier run does; only `--ship` copies them into weights/, so no run replaces a shipped model unasked."""
    return out_dir / f"{stem}.safetensors"


def train_diffusion(
    config: DiffusionTrainConfig,
    data_dir: str | Path = XRAY_TRAIN_DIR,
    out_dir: str | Path | None = None,
    progress: bool = True,
    weights_path: str | Path | None = None,
) -> dict:
    """Train, then write `weights_path` (default out_dir/<weights_stem>.safetensors; fp16 EMA weights)
    with its card; returns the card. `out_dir` (default RUNS_DIR/ddpm[_<preset>]) holds the checkpoint,
    per-epoch grids and config."""
    from diffusers.training_utils import EMAModel

    config.validate()
    check_not_reporting_cohort(config.preset, data_dir)
    out_dir = Path(out_dir) if out_dir is not None else diffusion_run_dir(config.preset)
    weights_path = Path(weights_path) if weights_path is not None else run_weights_path(out_dir, config.weights_stem)
    checkpoint_dir = out_dir / "checkpoint"
    resumed = resume_state(out_dir, asdict(config)) if config.resume else None
    publish_only = resumed is not None and only_publish_left(out_dir, resumed["epoch"] + 1, resumed, config, weights_path, "quality")
    accelerator = start_accelerator(config.threads, config.seed)
    main = accelerator.is_main_process

    channels = UNET_SPECS[config.unet_size].in_channels
    train, val = load_training_splits(data_dir, config.image_size, config.limit, progress and main, channels=channels)
    if resumed is not None:
        check_resumed_data(out_dir, resumed, data_dir, train.data_hash)
    unet_overrides = {"sample_size": config.image_size} if config.image_size != UNET_SPECS[config.unet_size].sample_size else {}
    unet = build_unet(config.unet_size, **unet_overrides)
    ema = EMAModel(unet.parameters(), decay=config.ema_decay, use_ema_warmup=True)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=0.0)
    scheduler = ddpm_scheduler(config.schedule)
    max_t = config.num_train_timesteps if config.max_t_fraction is None else max(1, round(config.max_t_fraction * config.num_train_timesteps))

    loader_generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        TensorDataset(train.images), batch_size=config.batch_size, shuffle=True, drop_last=len(train.images) > config.batch_size, generator=loader_generator
    )
    state = {"epoch": -1, "step": 0, "history": [], "seconds": 0.0}
    if resumed is not None:
        state = load_ema_checkpoint(checkpoint_dir, unet, ema, optimizer)
        if main and publish_only:
            print(publishing_note(weights_path.name), flush=True)
        elif main:
            print(f"resuming at epoch {state['epoch'] + 2}, step {state['step']}", flush=True)
    unet, optimizer, loader = accelerator.prepare(unet, optimizer, loader)
    raw_unet = accelerator.unwrap_model(unet)
    ema.to(accelerator.device)
    if main:
        open_run_folder(out_dir, config, resumed=resumed is not None)

    grid_images = val.images[torch.linspace(0, len(val.images) - 1, min(GRID_IMAGES, len(val.images))).long()]
    noise_generator = torch.Generator(device=accelerator.device)
    crop_generator = torch.Generator()
    started, base_seconds = time.time(), state["seconds"]

    def elapsed() -> float:
        """Training seconds so far, including those before a resume: --max-minutes is the whole run's budget."""
        return base_seconds + time.time() - started

    step, stopped, out_of_time = state["step"], False, False
    for epoch in range(state["epoch"] + 1, state["epoch"] + 1 if publish_only else config.epochs):
        unet.train()
        # Seeded per epoch (and per process), so a resumed run draws what an uninterrupted one would.
        loader_generator.manual_seed(config.seed + epoch)
        noise_generator.manual_seed(10_000 * (config.seed + 1) + 100 * epoch + accelerator.process_index)
        crop_generator.manual_seed(20_000 * (config.seed + 1) + epoch)
        running, seen = 0.0, 0
        bar = tqdm(loader, desc=f"ddpm epoch {epoch + 1}/{config.epochs}", disable=not (progress and main), leave=False)
        for (images,) in bar:
            if config.crop_size is not None:
                images = _random_crops(images, config.crop_size, crop_generator)
            loss = denoising_loss(unet, scheduler, images.float().div(255.0), max_t, noise_generator)
            running += check_finite_loss(float(loss.detach()), step) * len(images)
            for group in optimizer.param_groups:
                group["lr"] = config.lr * min(1.0, (step + 1) / max(1, config.warmup_steps))
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            ema.step(raw_unet.parameters())
            step += 1
            seen += len(images)
            bar.set_postfix(loss=f"{running / seen:.4f}")
            out_of_time = config.max_minutes is not None and elapsed() > 60 * config.max_minutes
            if out_of_time or (config.max_steps is not None and step >= config.max_steps):
                stopped = True
                break
        bar.close()
        if main:
            averaged = ema_copy(raw_unet, ema).to("cpu")
            with reporting_write_failures(checkpoint_dir):  # a full disk stops the run at the grid as at the checkpoint
                grid_psnr = _save_grid(averaged, config.schedule, grid_images, out_dir / "samples" / f"epoch_{epoch + 1:03d}.png", config.seed)
            record = {
                "epoch": epoch + 1,
                "step": step,
                "train_loss": round(running / max(seen, 1), 5),
                "grid_psnr": round(grid_psnr, 3),
                "seconds": round(elapsed(), 1),
            }
            if out_of_time:
                record["stopped_by_time_budget"] = True
            state = {"epoch": epoch, "step": step, "history": state["history"] + [record], "seconds": elapsed(), "data_hash": train.data_hash}
            save_ema_checkpoint(checkpoint_dir, raw_unet, ema, optimizer, state)
            print(json.dumps(record), flush=True)
        accelerator.wait_for_everyone()
        if stopped:
            break
    if not main:
        return {}
    state["seconds"] = elapsed()
    return _publish(config, raw_unet, ema, data_dir, val, train, state, weights_path, unet_overrides, len(loader))


def _publish(config, unet, ema, data_dir, val, train, state, weights_path: Path, unet_overrides: dict, steps_per_epoch: int) -> dict:
    averaged = ema_copy(unet, ema).to("cpu")
    eval_indices = torch.linspace(0, len(val.images) - 1, min(config.eval_images, len(val.images))).long()
    quality = reconstruction_quality(averaged, config.schedule, val.images[eval_indices], seed=config.seed)
    card = {
        "kind": "ddpm-denoiser",
        "unet_size": config.unet_size,
        "unet_overrides": unet_overrides,
        "image_size": config.image_size,
        "prediction_type": "epsilon",
        "scheduler": config.schedule,
        "max_t_fraction": config.max_t_fraction,
        "ema": {"decay": config.ema_decay, "warmup": True},
        "training": {f.name: getattr(config, f.name) for f in fields(config)},
        "data": {**card_data(data_dir, train), "val_images": len(val.images)},
        "steps": state["step"],
        "steps_per_epoch": steps_per_epoch,
        "epochs_completed": completed_epochs(state["history"], steps_per_epoch),
        "stopped_by_time_budget": stopped_by_time_budget(state["history"]),
        "training_minutes": round(state["seconds"] / 60.0, 1),
        **training_device(unet),
        "final_train_loss": state["history"][-1]["train_loss"] if state["history"] else None,
        "history": state["history"],
        "quality": {"split": "val", **quality},
    }
    return save_weights(averaged, weights_path, card, fp16=True)


__all__ = ["DiffusionTrainConfig", "psnr", "reconstruction_quality", "ssim", "train_diffusion"]
