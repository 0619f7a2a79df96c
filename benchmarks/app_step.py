"""The app's CPU path on the shipped defaults: what the walkthrough and the lab do per interaction.

Measures, median of --repeats after one warm-up, on one real X-ray (or a fixed random image):
* `step`: grey-box PGD-10 (L-inf 0.03) on `vit` + `cold_blur` purification + three readings — the
  walkthrough's full step (target <= 3 s on 2 cores);
* `slider`: one re-purification with `ddpm` (t* = 0.08) and `cold_direct` + readings — what moving a
  purifier slider re-runs in the lab (target <= 1.5 s).

    .venv/bin/python -m benchmarks.app_step --threads 2 --out results/benchmarks/app_step_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from benchmarks.purifiers import sample_image
from core.attacks import AttackConfig
from core.io import to_model_input
from core.lab import attack_image, purify_image, read
from core.models import create_classifier
from core.purifiers import create_purifier


def median_seconds(work, repeats: int) -> float:
    work()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = create_classifier("vit")
    image = to_model_input(sample_image(), model.image_size)
    blur, ddpm, direct = create_purifier("cold_blur"), create_purifier("ddpm", t_star=0.08), create_purifier("cold_direct")
    attack = AttackConfig(name="pgd", eps=0.03, steps=10)

    def step() -> None:
        adversarial = attack_image(model, image, attack).image
        purified = purify_image(blur, adversarial).image
        read(model, torch.cat([image, adversarial, purified]))

    adversarial = attack_image(model, image, attack).image

    def slider() -> None:
        outputs = [purify_image(p, adversarial).image for p in (ddpm, direct)]
        read(model, torch.cat(outputs))

    figures = {"step_seconds": median_seconds(step, args.repeats), "slider_seconds": median_seconds(slider, args.repeats)}
    report = {
        **figures, "threads": args.threads, "repeats": args.repeats, "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
