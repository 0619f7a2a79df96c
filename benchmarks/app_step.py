"""The app's CPU path on the shipped defaults: what the walkthrough and the lab compute per interaction.

On one X-ray, always on the CPU with `app_threads` torch threads (the app's Space has 2 cores; a
run's `--threads` sets it too), whatever device the rest of the run uses:
* `step`: grey-box PGD-10 (L-inf 0.03) on `vit` + `cold_blur` purification + three readings, the
  walkthrough's full step (target <= 3 s on 2 cores);
* `slider`: one re-purification with `ddpm` (t* = 0.08) and `cold_direct` + two readings, what moving
  a purifier slider re-runs in the lab (target <= 1.5 s).

Ours is core.lab, which the app calls; naive is the same interaction with the naive references and
torchattacks' PGD on the naive copy of the classifier. One image, so there is nothing to batch.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from benchmarks.context import Context, max_abs_diff
from benchmarks.models import build_purifier, load_models
from benchmarks.naive import naive_attack, naive_purify, naive_reference
from benchmarks.timing import compare, time_runs
from core.attacks import AttackConfig
from core.io import on_grey_levels
from core.lab import attack_image, purify_image, read

APP_ATTACK = AttackConfig(name="pgd", eps=0.03, steps=10)
SLIDER_DDPM = {"t_star": 0.08}
CPU = torch.device("cpu")


def run(ctx: Context) -> list[dict[str, Any]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(ctx.settings.app_threads)
    try:
        return measure(ctx)
    finally:
        torch.set_num_threads(threads)


def measure(ctx: Context) -> list[dict[str, Any]]:
    s = ctx.settings
    models = load_models(s.tiny, s.seed)
    naive = copy.deepcopy(models)
    image = ctx.images[:1].cpu()
    blur, ddpm, direct = (build_purifier(name, models, **params) for name, params in
                          (("cold_blur", {}), ("ddpm", SLIDER_DDPM), ("cold_direct", {})))  # fmt: skip
    naive_blur, naive_ddpm, naive_direct = (naive_reference(build_purifier(name, naive, **params)) for name, params in
                                            (("cold_blur", {}), ("ddpm", SLIDER_DDPM), ("cold_direct", {})))  # fmt: skip

    def readings(purified: list[torch.Tensor]) -> torch.Tensor:
        return torch.tensor([reading.probabilities for reading in read(models.classifier, torch.cat(purified))])

    @torch.no_grad()
    def naive_readings(purified: list[torch.Tensor]) -> torch.Tensor:
        return naive.classifier(torch.cat(purified)).softmax(dim=1)

    def step() -> torch.Tensor:
        adversarial = attack_image(models.classifier, image, APP_ATTACK).image
        return readings([image, adversarial, purify_image(blur, adversarial).image])

    def naive_step() -> torch.Tensor:
        label = naive_readings([image]).argmax(dim=1)
        adversarial = naive_attack(naive.classifier, "pgd", image, label, eps=APP_ATTACK.eps, steps=APP_ATTACK.steps, eot=1, seed=s.seed)
        adversarial = on_grey_levels(adversarial, image, APP_ATTACK.eps)  # the app shows, and reads, the attacked PNG's grey levels
        return naive_readings([image, adversarial, naive_purify(naive_blur, adversarial, s.seed)])

    adversarial = attack_image(models.classifier, image, APP_ATTACK).image

    def slider() -> torch.Tensor:
        return readings([purify_image(purifier, adversarial).image for purifier in (ddpm, direct)])

    def naive_slider() -> torch.Tensor:
        return naive_readings([naive_purify(reference, adversarial, s.seed) for reference in (naive_ddpm, naive_direct)])

    rows = []
    for name, what, ours, reference in (
        ("step", "PGD-10 on vit + cold_blur + 3 readings", step, naive_step),
        ("slider", "ddpm (t* 0.08) + cold_direct + 2 readings", slider, naive_slider),
    ):
        ours_timing, ours_probabilities = time_runs(ours, 1, warmup=s.warmup, repeats=s.app_repeats, device=CPU)
        naive_timing, naive_probabilities = time_runs(reference, 1, warmup=s.warmup, repeats=s.app_repeats, device=CPU)
        row = {
            "section": "app",
            "name": name,
            "what": what,
            "batch": 1,
            "threads": torch.get_num_threads(),  # what it ran at, not what was asked
            **compare(ours_timing, naive_timing),
            "check": {
                "max_abs_diff_probabilities": max_abs_diff(ours_probabilities, naive_probabilities),
                "readings_agree": bool((ours_probabilities.argmax(1) == naive_probabilities.argmax(1)).all()),
            },
        }
        ctx.log(f"app    {name:<12} ours {row['ours']['latency_s']:.3f} s, naive {row['naive']['latency_s']:.3f} s, speedup {row['speedup']}")
        rows.append(row)
    return rows
