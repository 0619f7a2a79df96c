"""A detector-aware attack on DiffDefense's reconstruction-error detector.

DiffDefense flags an input whose reconstruction error ||x - G(z*)||^2 is large. An attacker who
knows this maximises the classifier's loss while keeping that error small:

    max_delta  CE(f(x + delta), y) - weight * ||x + delta - stopgrad(G(z*(x + delta)))||^2 / d

The reconstruction G(z*) comes from L inner optimisation steps, too deep to differentiate, so it is
treated as a constant at each step (BPDA on the detector term); the gradient of the penalty then
pulls the image towards its own reconstruction. torchattacks' attacks take a fixed cross-entropy
loss, so this is the one attack written out here: L-inf PGD with a random start (Madry et al.).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from core.attacks import AttackConfig
from core.attacks.library import frozen_eval
from core.errors import PurifyLabError
from core.purifiers.diffdefense import DiffDefensePurifier


def detector_aware_pgd(
    classifier: nn.Module,
    purifier: DiffDefensePurifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: AttackConfig,
    weight: float,
    seed: int = 0,
) -> torch.Tensor:
    """Adversarial images in the L-inf ball of `attack.eps` that fool `classifier` and keep the
    reconstruction error low; `weight` trades one against the other (0 = plain grey-box PGD)."""
    if attack.norm != "linf":
        raise PurifyLabError(f"the detector-aware attack is L-inf PGD; got norm '{attack.norm}'")
    if weight < 0:
        raise PurifyLabError(f"adaptive weight={weight} must be >= 0")
    generator = torch.Generator().manual_seed(attack.seed)
    start = (torch.rand(images.shape, generator=generator) * 2 - 1) * attack.eps
    adversarial = (images + start).clamp(0.0, 1.0)
    with frozen_eval(classifier):
        for step in range(attack.steps):
            reconstruction = purifier.purify_with_score(adversarial, seed=seed + step)[0] if weight > 0 else None
            adversarial = adversarial.detach().requires_grad_(True)
            loss = F.cross_entropy(classifier(adversarial), labels, reduction="sum")
            if reconstruction is not None:
                loss = loss - weight * (adversarial - reconstruction).pow(2).flatten(1).mean(1).sum()
            (gradient,) = torch.autograd.grad(loss, adversarial)
            stepped = adversarial.detach() + attack.step_size * gradient.sign()
            adversarial = (images + (stepped - images).clamp(-attack.eps, attack.eps)).clamp(0.0, 1.0)
    return adversarial.detach()
