"""Train the cold-diffusion restoration UNet R(x_t, t) that undoes the blur D(x0, t).

As in Bansal et al. ("Cold Diffusion"), R is trained to predict the clean image x0 from its blur at
a random level t in 1..T, with an L1 loss. The run uses the project's one split (core.data.loading,
whose words the card quotes): train images for learning, the first validation images for the
per-epoch PNG grid (input / blurred / direct / recon) and for the card's PSNR/SSIM.

It runs under HF Accelerate (`accelerate launch -m core train cold ...` spreads it over GPUs),
keeps EMA weights (diffusers' EMAModel) which are the ones shipped, and checkpoints as safetensors +
JSON only, so a stopped run resumes at the next epoch with the same optimizer and EMA state.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.training_utils import EMAModel
from torch.utils.data import DataLoader, Sampler, TensorDataset
from torchvision.utils import make_grid, save_image
from tqdm import tqdm

from core.data.locations import XRAY_TRAIN_DIR
from core.errors import PurifyLabError, check_range
from core.purifiers.blur_degradation import BlurDegradation, BlurSchedule
from core.purifiers.cold import (
    COLD_WEIGHTS_STEM,
    ColdConfig,
    ColdDirectPurifier,
    ColdReconConfig,
    ColdReconPurifier,
    restore,
)
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
from core.train.diffusion import psnr, run_weights_path, ssim
from core.train.layout import COLD_PRESETS, check_not_reporting_cohort, check_preset, cold_run_dir
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

_WARMUP_STEPS = 100
_GRID_IMAGES = 8


@dataclass(frozen=True)
class ColdTrainConfig:
    unet_size: str = "small"
    image_size: int = 128  # X-rays are resized (antialiased bilinear, aspect not kept) to this on load
    # Train on random crops of each (blurred, clean) pair, blurred at full size first so crop edges
    # carry no padding artefacts: several times more updates per CPU-minute. None = whole images.
    crop_size: int | None = None
    blur_levels: int = 20
    blur_sigma_step: float = 0.06
    epochs: int = 100
    epoch_images: int | None = None  # images per epoch; None = the whole train split
    max_minutes: float | None = None  # stop after the batch that crosses this wall-clock budget
    batch_size: int = 32
    lr: float = 2e-4
    ema_decay: float = 0.999
    seed: int = 0
    eval_depth: int = ColdConfig().depth  # the purifiers' default depth: where the card's PSNR/SSIM are taken
    val_images: int = 64
    limit: int | None = None  # N evenly spaced images of each split (tests)
    threads: int | None = None  # torch CPU threads (None: torch's default)
    unet_overrides: dict[str, Any] = field(default_factory=dict)
    resume: bool = False  # continue from out_dir/checkpoint (core.train.checkpoint.resume_state)
    preset: str = "custom"

    def schedule(self) -> BlurSchedule:
        return BlurSchedule(levels=self.blur_levels, sigma_step=self.blur_sigma_step)

    def validate(self) -> None:
        if self.unet_size not in UNET_SPECS:
            raise PurifyLabError(f"unet_size '{self.unet_size}' is unknown; choose one of: {', '.join(UNET_SPECS)}")
        self.schedule().validate()
        factor = 2 ** (len(UNET_SPECS[self.unet_size].block_out_channels) - 1)
        check_range("image_size", self.image_size, factor, 4096)
        if self.crop_size is not None:
            check_range("crop_size", self.crop_size, factor, self.image_size)
        for name in ("image_size", "crop_size"):
            value = getattr(self, name)
            if value is not None and value % factor:
                raise PurifyLabError(f"{name}={value} must be a multiple of {factor} for the '{self.unet_size}' UNet")
        for name in ("epochs", "batch_size", "val_images"):
            check_range(name, getattr(self, name), 1, 1_000_000)
        if self.threads is not None:
            check_range("threads", self.threads, 1, 1024)
        if self.epoch_images is not None:
            check_range("epoch_images", self.epoch_images, 1, 10_000_000)
        if self.max_minutes is not None:
            check_range("max_minutes", self.max_minutes, 0.0, 100_000.0, low_open=True)
        check_range("lr", self.lr, 0.0, 1.0, low_open=True)
        check_range("ema_decay", self.ema_decay, 0.0, 1.0)
        check_range("eval_depth", self.eval_depth, 1, self.blur_levels)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ColdTrainConfig:
        """tiny: seconds, for tests; cpu: the shipped 128-px model on one CPU core; gpu: whole images, longer.

        Overrides that are None are ignored, so CLI options left unset keep the preset's value.
        """
        presets = {
            "tiny": dict(
                unet_size="tiny",
                image_size=32,
                epochs=3,
                epoch_images=32,
                batch_size=8,
                lr=2e-3,
                ema_decay=0.9,
                val_images=2,
                eval_depth=4,
            ),
            "cpu": dict(
                unet_size="small",
                image_size=128,
                crop_size=64,
                epochs=1000,
                epoch_images=2048,
                batch_size=16,
                lr=5e-4,
                ema_decay=0.995,
                max_minutes=45.0,
                val_images=64,
                threads=1,
            ),
            "gpu": dict(unet_size="small", image_size=128, epochs=200, batch_size=64, lr=2e-4, ema_decay=0.999, val_images=256),
        }
        check_preset(name, COLD_PRESETS)
        settings = presets[name] | {key: value for key, value in overrides.items() if value is not None}
        config = replace(cls(), preset=name, **settings)
        config.validate()
        return config


# -------------------------------------------------------------------------------- image quality
# PSNR and SSIM are shared with the DDPM family's training (core.train.diffusion).


@torch.no_grad()
def reconstruction_quality(unet, schedule: BlurSchedule, images: torch.Tensor, depth: int, batch_size: int = 16) -> dict[str, dict[str, float]]:
    """Mean PSNR/SSIM against the clean images of blurred, direct and recon outputs at `depth`."""
    outputs = _variants(unet, schedule, images, depth, batch_size)
    return {
        metric: {name: round(float(function(images, out).mean()), 4) for name, out in outputs.items()}
        for metric, function in (("psnr_db", psnr), ("ssim", ssim))
    }


def _variants(unet, schedule: BlurSchedule, images: torch.Tensor, depth: int, batch_size: int) -> dict[str, torch.Tensor]:
    purifiers = {
        "direct": ColdDirectPurifier(ColdConfig(depth=depth), unet=unet, schedule=schedule),
        "recon": ColdReconPurifier(ColdReconConfig(depth=depth), unet=unet, schedule=schedule),
    }
    blurred = BlurDegradation(schedule)(images, depth)
    outputs = {"blurred": blurred}
    for name, purifier in purifiers.items():
        outputs[name] = torch.cat([purifier.purify(chunk) for chunk in images.split(batch_size)])
    return outputs


def save_sample_grid(unet, schedule: BlurSchedule, images: torch.Tensor, depth: int, path: Path) -> Path:
    """One PNG, one row per variant: input / blurred / direct / recon."""
    outputs = _variants(unet, schedule, images, depth, batch_size=len(images))
    rows = torch.cat([images, outputs["blurred"], outputs["direct"], outputs["recon"]])
    save_image(make_grid(rows, nrow=len(images), padding=2, pad_value=1.0), path)
    return path


# ---------------------------------------------------------------------------------------- training


class _EpochSampler(Sampler[int]):
    """Image order of each epoch drawn from (seed, epoch) alone, so a resumed run sees the same batches.

    With `epoch_images` the shuffled split is repeated or cut to that many images per epoch.
    """

    def __init__(self, count: int, epoch_images: int | None, seed: int):
        self.count, self.epoch_images, self.seed, self.epoch = count, epoch_images, seed, 0

    def __len__(self) -> int:
        return self.epoch_images if self.epoch_images is not None else self.count

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.count, generator=generator)
        if self.epoch_images is not None:
            order = order.repeat(math.ceil(self.epoch_images / self.count))[: self.epoch_images]
        return iter(order.tolist())


def train_cold(
    config: ColdTrainConfig,
    data_dir: str | Path = XRAY_TRAIN_DIR,
    out_dir: str | Path | None = None,
    progress: bool = True,
    weights_path: str | Path | None = None,
) -> dict:
    """Train R, then write `weights_path` (default out_dir/cold_unet.safetensors: EMA weights, fp16) with
    its card; returns the card. `out_dir` (default RUNS_DIR/cold) holds checkpoint/
    (config.resume continues from it), samples/epoch_NNN.png and config.json."""
    config.validate()
    check_not_reporting_cohort(config.preset, data_dir)
    out_dir = Path(out_dir) if out_dir is not None else cold_run_dir()
    weights_path = Path(weights_path) if weights_path is not None else run_weights_path(out_dir, COLD_WEIGHTS_STEM)
    checkpoint_dir = out_dir / "checkpoint"
    resumed = resume_state(out_dir, asdict(config)) if config.resume else None
    publish_only = resumed is not None and only_publish_left(out_dir, resumed["epoch"], resumed, config, weights_path, "quality")
    accelerator = start_accelerator(config.threads, config.seed)
    main = accelerator.is_main_process

    schedule = config.schedule()
    degrade = BlurDegradation(schedule)
    train, val = load_training_splits(data_dir, config.image_size, config.limit, progress and main)
    if resumed is not None:
        check_resumed_data(out_dir, resumed, data_dir, train.data_hash)
    val_images = val.images[: config.val_images].float().div(255.0).to(accelerator.device)

    unet = build_unet(config.unet_size, **config.unet_overrides)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, weight_decay=0.0)
    ema = EMAModel(unet.parameters(), decay=config.ema_decay)
    state = {"epoch": 0, "step": 0, "seconds": 0.0, "history": []}
    if resumed is not None:
        state = load_ema_checkpoint(checkpoint_dir, unet, ema, optimizer)
        if main and publish_only:
            print(publishing_note(weights_path.name), flush=True)
        elif main:
            print(f"resuming cold UNet training at epoch {state['epoch'] + 1}", flush=True)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    ema.to(accelerator.device)
    raw_unet = accelerator.unwrap_model(unet)
    if main:
        open_run_folder(out_dir, config, resumed=resumed is not None)
        (out_dir / "samples").mkdir(exist_ok=True)

    sampler = _EpochSampler(len(train.images), config.epoch_images, config.seed)
    loader = accelerator.prepare(DataLoader(TensorDataset(train.images), batch_size=config.batch_size, sampler=sampler))
    started = time.time() - state["seconds"]
    out_of_time = False
    epoch, step, history = state["epoch"], state["step"], state["history"]
    while not publish_only and epoch < config.epochs and not out_of_time:
        sampler.epoch = epoch
        process_generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch + 7919 * (accelerator.process_index + 1))
        unet.train()
        running, seen = 0.0, 0
        bar = tqdm(loader, desc=f"cold epoch {epoch + 1}/{config.epochs}", disable=not (progress and main), leave=False)
        for (images,) in bar:
            for group in optimizer.param_groups:
                group["lr"] = config.lr * min(1.0, (step + 1) / _WARMUP_STEPS)
            clean = images.float().div(255.0)
            levels = torch.randint(1, schedule.levels + 1, (len(clean),), generator=process_generator).to(clean.device)
            blurred = degrade(clean, levels)
            if config.crop_size is not None:
                top, left = torch.randint(0, config.image_size - config.crop_size + 1, (2,), generator=process_generator).tolist()
                window = (..., slice(top, top + config.crop_size), slice(left, left + config.crop_size))
                clean, blurred = clean[window], blurred[window]
            loss = F.l1_loss(restore(unet, blurred, levels), clean)
            running += check_finite_loss(loss.item(), step) * len(clean)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            optimizer.step()
            ema.step(raw_unet.parameters())
            step += 1
            seen += len(clean)
            bar.set_postfix(loss=f"{running / seen:.4f}")
            if config.max_minutes is not None and time.time() - started > 60 * config.max_minutes:
                out_of_time = True
                break
        bar.close()
        epoch += 1
        if main:
            shadow = ema_copy(raw_unet, ema)
            direct = ColdDirectPurifier(ColdConfig(depth=config.eval_depth), unet=shadow, schedule=schedule)
            val_psnr = float(psnr(val_images, direct.purify(val_images)).mean())
            with reporting_write_failures(checkpoint_dir):  # a full disk stops the run at the grid as at the checkpoint
                save_sample_grid(shadow, schedule, val_images[:_GRID_IMAGES], config.eval_depth, out_dir / "samples" / f"epoch_{epoch:03d}.png")
            record = {
                "epoch": epoch,
                "step": step,
                "train_l1": round(running / max(seen, 1), 5),
                "val_psnr_direct_db": round(val_psnr, 3),
                "seconds": round(time.time() - started, 1),
            }
            if out_of_time:
                record["stopped_by_time_budget"] = True
            history.append(record)
            loop_state = {"epoch": epoch, "step": step, "seconds": record["seconds"], "history": history, "data_hash": train.data_hash}
            save_ema_checkpoint(checkpoint_dir, raw_unet, ema, optimizer, loop_state)
            print(json.dumps(record), flush=True)
        accelerator.wait_for_everyone()
    if not main:
        return {}
    return _publish(config, ema_copy(raw_unet, ema), train, val_images, data_dir, weights_path, history, len(loader))


def _publish(config: ColdTrainConfig, unet, train, val_images: torch.Tensor, data_dir, weights_path: Path, history, steps_per_epoch: int) -> dict:
    schedule = config.schedule()
    quality = reconstruction_quality(unet, schedule, val_images, config.eval_depth)
    card = {
        "name": COLD_WEIGHTS_STEM,
        "unet_size": config.unet_size,
        "unet_overrides": dict(config.unet_overrides),
        "prediction": "x0: the clean image from its blur D(x0, t); UNet timestep = blur level t; UNet sees [-1, 1]",
        "input": f"float32 (N, 1, H, W) in [0, 1]; trained at {config.image_size} px (X-rays resized with antialiased bilinear, aspect not kept)",
        "blur_schedule": schedule.to_dict(),
        "training_config": asdict(config),
        "weights": "EMA of the training weights",
        **training_device(unet),
        "data": card_data(data_dir, train),
        "training": {
            "epochs_completed": completed_epochs(history, steps_per_epoch),
            "steps": history[-1]["step"] if history else 0,
            "steps_per_epoch": steps_per_epoch,
            "seconds": history[-1]["seconds"] if history else 0.0,
            "stopped_by_time_budget": stopped_by_time_budget(history),
            "history": history,
        },
        "quality": {
            "what": "mean over the first validation images, each against its clean original",
            "val_images": int(len(val_images)),
            "depth": config.eval_depth,
            "recon_steps": config.eval_depth,
            **quality,
        },
    }
    return save_weights(unet, weights_path, card, fp16=True)
