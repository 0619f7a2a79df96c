"""Purification: images/s, latency, NFE and FLOPs of every registered purifier at its default setting.

Ours is the engine's fast mode, `purifier.purify(batch, seed)` (inference mode, the whole batch in
one chain). The naive reference purifies one image at a time with its own generator seeded the same
way, so at batch 1 both draw identical noise and their outputs can be compared pixel for pixel; at
the large batch a stochastic purifier draws its noise for the whole batch at once, and only the
classifier's predictions on the outputs are comparable.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch

from benchmarks.context import Context, max_abs_diff, prediction_check
from benchmarks.models import build_purifier
from benchmarks.naive import Reference, naive_purify, naive_reference
from benchmarks.timing import compare, count_flops, utilisation
from core.purifiers import Purifier, list_purifiers


def run(ctx: Context) -> list[dict[str, Any]]:
    rows = []
    for name in ctx.settings.purifiers or tuple(list_purifiers()):
        params = ctx.settings.purifier_params.get(name, {})
        purifier = build_purifier(name, ctx.models, **params)
        reference = naive_reference(build_purifier(name, ctx.naive, **params))
        # Counted on the naive path: the same operations, and never through a compiled graph.
        flops = count_flops(partial(naive_purify, reference, ctx.images[:1], ctx.settings.seed))
        for batch in ctx.batches(ctx.settings.purify_batch):
            row = measure(ctx, name, purifier, reference, batch, flops)
            ctx.log(
                f"purify {name:<12} batch {batch:<3} ours {row['ours']['images_per_s']:.3f} img/s, "
                f"naive {row['naive']['images_per_s']:.3f} img/s, speedup {row['speedup']}"
            )
            rows.append(row)
    return rows


def measure(ctx: Context, name: str, purifier: Purifier, reference: Reference, batch: int, flops: int) -> dict[str, Any]:
    seed = ctx.settings.seed
    images, labels = ctx.images[:batch], ctx.labels[:batch]

    def ours() -> torch.Tensor:
        with ctx.precision():
            return purifier.purify(images, seed=seed)

    ours_timing, ours_out = ctx.time(ours, batch)
    naive_timing, naive_out = ctx.time(lambda: naive_purify(reference, images, seed), batch)
    same_draws = batch == 1 or not purifier.stochastic
    with torch.inference_mode(), ctx.precision():
        ours_logits = ctx.models.classifier(ours_out)
    with torch.no_grad():
        naive_logits = ctx.naive.classifier(naive_out)
    check = {
        # None: a stochastic purifier's batched draws differ from the per-image ones, pixels are not comparable.
        "max_abs_diff": max_abs_diff(ours_out, naive_out) if same_draws else None,
        **prediction_check(ours_logits, naive_logits, labels),
    }
    return {
        "section": "purify",
        "name": name,
        "batch": batch,
        "nfe": purifier.nfe(),
        "config": purifier.config.to_dict(),
        "stochastic": purifier.stochastic,
        **compare(ours_timing, naive_timing),
        **utilisation(flops, ours_timing.images_per_s, ctx.peak_tflops),
        "check": check,
    }
