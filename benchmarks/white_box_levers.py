"""What one white-box cell (PGD-20, EOT 8) costs per X-ray on a CPU, lever by lever, in one run.

The adaptive-robustness issue asks for an exact attack through a stochastic purifier that a CPU can
afford on hundreds of X-rays. Each lever is timed against today's path in the same process, on the
same image, as one attack step: a forward of EOT draws in one batch and the backward through them.

    today       `ddpm` (10-step chain from t* = 0.16, checkpointed backward) in front of `vit`
    one-shot    `one_shot` (one UNet call, Tweedie's x0) in front of `vit`
    one-shot    the same in front of `resnet` (a 0.7 M-parameter CNN instead of the 1.2 M ViT)
    bf16        `one_shot` forward under CPU bf16 autocast (forward only: the backward is slower still)
    no-grad     `one_shot` forward in inference mode, as test-time scoring runs it
    smoothing   `gaussian` noise in front of `resnet_smooth`: no network in the purifier at all

The JSON (results/benchmarks/white_box_levers_cpu.json) records the load average beside the times:
on a shared 2-core machine they move with it.

    python -m benchmarks.white_box_levers --threads 2
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext

import torch

from benchmarks.environment import write_cpu_report
from benchmarks.options import REPORTS_DIR, BenchmarkParser, add_report_options, add_threads_option, check_report_out
from core.data.loading import load_split
from core.data.locations import XRAY_TEST_DIR
from core.defended import DefendedClassifier
from core.models import create_classifier
from core.purifiers import create_purifier

OUT = REPORTS_DIR / "white_box_levers_cpu.json"
STEPS, EOT = 20, 8


def time_step(classifier: str, purifier: str, params: dict, image: torch.Tensor, grad: bool, bf16: bool = False) -> float:
    """Seconds of one attack step (forward of EOT draws, backward if `grad`) on one image."""
    model = DefendedClassifier(create_purifier(purifier, **params), create_classifier(classifier), eot=EOT, seed=0).eval()
    x = image.clone().requires_grad_(grad)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext()
    started = time.perf_counter()
    with autocast, nullcontext() if grad else torch.inference_mode():
        loss = model(x).log_softmax(1)[:, 0].sum()
        if grad:
            loss.backward()
    return time.perf_counter() - started


LEVERS = (
    ("today: ddpm t*=0.16 + vit", "vit", "ddpm", {"t_star": 0.16}, True, False),
    ("one-shot t*=0.16 + vit", "vit", "one_shot", {"t_star": 0.16}, True, False),
    ("one-shot t*=0.16 + resnet", "resnet", "one_shot", {"t_star": 0.16}, True, False),
    ("one-shot + resnet, bf16 autocast, forward only", "resnet", "one_shot", {"t_star": 0.16}, False, True),
    ("one-shot + resnet, fp32, forward only (inference mode)", "resnet", "one_shot", {"t_star": 0.16}, False, False),
    ("smoothing: gaussian sigma=0.25 + resnet_smooth", "resnet_smooth", "gaussian", {"sigma": 0.25}, True, False),
)


def main() -> None:
    parser = BenchmarkParser(description=__doc__.splitlines()[0])
    add_report_options(parser, OUT)
    add_threads_option(parser, 2)
    args = parser.parse_args()
    check_report_out(args, parser)
    torch.set_num_threads(args.threads)
    image = load_split(XRAY_TEST_DIR, "all", 128, limit=1).floats()[:1]
    rows = []
    for label, classifier, purifier, params, grad, bf16 in LEVERS:
        seconds = time_step(classifier, purifier, params, image, grad, bf16)
        per_cell = seconds * STEPS
        rows.append({
            "lever": label, "seconds_per_step": round(seconds, 3), "eot": EOT, "gradient": grad, "bf16": bf16,
            "pgd20_seconds_per_image": round(per_cell, 1), "minutes_for_64_images": round(per_cell * 64 / 60, 1),
            "load_average_1min": round(os.getloadavg()[0], 2),
        })  # fmt: skip
        print(f"{label:<58} {seconds:8.2f} s/step  PGD-20 EOT {EOT}: {per_cell:7.1f} s/image, {per_cell * 64 / 60:6.1f} min / 64")
    write_cpu_report(args, rows, args.threads)


if __name__ == "__main__":
    main()
