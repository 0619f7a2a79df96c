"""Attacks: images/s of PGD and APGD on the classifier alone and through purifiers (bpda-eot, white).

Ours is `core.attacks.craft`: the batch at once, and the EOT draws of a stochastic purifier in ONE
batched forward per step (DefendedClassifier averages the class probabilities). The naive reference
attacks one image at a time with one purifier draw per forward, the EOT loop in the attack
(torchattacks' `eot_iter`, which averages the gradients): the same number of gradient evaluations.
The two EOT estimators differ, so the adversarial images are compared by the accuracy they leave
(one purifier draw, seed 0, scored on our path), not pixel for pixel; on the classifier alone at
batch 1 both paths run the same attack and the images must match.
"""

from __future__ import annotations

from typing import Any

import torch

from benchmarks.context import Context, max_abs_diff, prediction_check
from benchmarks.models import CLASSIFIER, build_purifier
from benchmarks.naive import NaiveDefended, naive_attack, naive_reference
from benchmarks.settings import ATTACKS
from benchmarks.timing import compare
from core.attacks import AttackConfig, craft, threat_model


def run(ctx: Context) -> list[dict[str, Any]]:
    s = ctx.settings
    runs = [(attack, "grey", None, s.attack_steps, 1, batch) for attack in ATTACKS for batch in ctx.batches(s.attack_batch)]
    runs += [
        (attack, threat, purifier, s.chain_steps, threat_model(threat).draws_per_step(s.chain_eot), batch)
        for purifier in s.chain_purifiers for threat in s.chain_threats for attack in ATTACKS
        for batch in ctx.batches(s.chain_batch)
    ]  # fmt: skip
    rows = []
    for attack, threat, purifier, steps, eot, batch in runs:
        row = measure(ctx, attack, threat, purifier, steps, eot, batch)
        ctx.log(
            f"attack {row['name']:<28} batch {batch:<3} ours {row['ours']['images_per_s']:.4f} img/s, "
            f"naive {row['naive']['images_per_s']:.4f} img/s, speedup {row['speedup']}"
        )
        rows.append(row)
    return rows


def measure(ctx: Context, attack: str, threat: str, purifier_name: str | None, steps: int, eot: int, batch: int) -> dict[str, Any]:
    s = ctx.settings
    images, labels = ctx.images[:batch], ctx.labels[:batch]
    naive_count = s.naive_attack_count(batch)
    purifier = build_purifier(purifier_name or "none", ctx.models)
    reference = naive_reference(build_purifier(purifier_name or "none", ctx.naive))
    draws = eot if purifier.stochastic else 1  # a deterministic purifier gives the same output every draw
    config = AttackConfig(name=attack, eps=s.eps, steps=steps, seed=s.seed)

    def ours() -> torch.Tensor:
        with ctx.precision():
            return craft(threat, ctx.models.classifier, purifier, images, labels, config, eot=eot, seed=s.seed)

    def naive() -> torch.Tensor:
        model = ctx.naive.classifier if threat == "grey" else NaiveDefended(reference, ctx.naive.classifier, threat != "white", s.seed)
        return naive_attack(model, attack, images[:naive_count], labels[:naive_count], eps=s.eps, steps=steps, eot=draws, seed=s.seed)

    ours_timing, ours_adv = ctx.time(ours, batch, attack=True)
    naive_timing, naive_adv = ctx.time(naive, naive_count, attack=True)
    with torch.inference_mode(), ctx.precision():
        ours_logits = score(ctx, purifier, ours_adv[:naive_count])
        naive_logits = score(ctx, purifier, naive_adv)
    check = {
        # Same attack, same random start: identical images expected on the classifier alone at batch 1.
        "max_abs_diff": max_abs_diff(ours_adv[:naive_count], naive_adv) if threat == "grey" and batch == 1 else None,
        **prediction_check(ours_logits, naive_logits, labels[:naive_count]),
    }
    target = CLASSIFIER if purifier_name is None else f"{purifier_name} + {CLASSIFIER}"
    return {
        "section": "attack",
        "name": f"{attack} on {target}" + ("" if threat == "grey" else f" ({threat})"),
        "attack": attack,
        "threat": "classifier alone" if threat == "grey" else threat,
        "purifier": purifier_name,
        "batch": batch,
        "steps": steps,
        "eot": draws,
        "eps": s.eps,
        "gradient_evaluations_per_image": steps * draws,
        **compare(ours_timing, naive_timing),
        "check": check,
    }


def score(ctx: Context, purifier, adversarial: torch.Tensor) -> torch.Tensor:
    """Logits of classifier(purifier(adv)) for one purifier draw (seed 0): accuracy under attack."""
    return ctx.models.classifier(purifier.purify(adversarial, seed=ctx.settings.seed))
