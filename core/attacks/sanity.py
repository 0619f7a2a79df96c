"""The standard checks that catch gradient masking (Athalye et al.; Carlini et al., "On evaluating
adversarial robustness"), reported beside every robustness table.

A defense that looks robust because its gradients are useless, not because it is robust, shows
up as an inversion that cannot happen for a sound evaluation: an unbounded attacker who fails on an
undefended model, or an attacker with exact gradients who does worse than one with approximate
(BPDA) or no (transfer) access to the defense. Each check returns its numbers and a `flag` that is
None when it passes and a one-line explanation when it fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from core.attacks.config import AttackConfig
from core.attacks.library import create_attack, frozen_eval
from core.errors import PurifyLabError

COLLAPSE_MAX_ACCURACY = 0.05
# A minimal-perturbation attack (DeepFool, CW, EAD) has no budget to run out of: on an undefended
# model it should succeed almost always, so more than this accuracy left means it stopped early.
MINIMAL_ATTACK_MAX_ACCURACY = 0.10
# Sampling noise between two attacks on the same n images: an inversion smaller than this is not a flag.
DEFAULT_TOLERANCE = 0.02
# Accuracies are image counts over n: a gap of exactly the tolerance (one image at n = 50 and 0.02) lands
# a float ulp either side of it, and must pass. Rounding (a float32 mean included) moves a gap by under
# 1e-7, one image (1/n: 1e-4 at n = 10 000) by far more than this slack.
ROUNDING_SLACK = 1e-6


@dataclass(frozen=True)
class SanityCheck:
    name: str
    values: dict[str, float] = field(default_factory=dict)
    flag: str | None = None

    @property
    def passed(self) -> bool:
        return self.flag is None

    def to_dict(self) -> dict:
        return asdict(self)


def exceeds_tolerance(gap: float, tolerance: float) -> bool:
    """True when `gap` is beyond `tolerance` by an image, not by float rounding: a gap equal to it passes."""
    return gap > tolerance + ROUNDING_SLACK


def check_accuracy_collapse(accuracy_by_eps: dict[float, float], max_accuracy: float = COLLAPSE_MAX_ACCURACY) -> SanityCheck:
    """An undefended model must fall to ~0 accuracy at the largest eps; else the attack is broken."""
    if not accuracy_by_eps:
        raise PurifyLabError("accuracy_by_eps is empty; give the undefended accuracy at one eps at least")
    largest = max(accuracy_by_eps)
    accuracy = accuracy_by_eps[largest]
    flag = None
    if accuracy > max_accuracy:
        flag = (
            f"undefended accuracy is {accuracy:.3f} at eps={largest}, above {max_accuracy}: the attack is not "
            f"converging (too few steps, wrong scale or masked gradients), so its robustness numbers are not trustworthy"
        )
    values = {f"accuracy@eps={eps}": acc for eps, acc in sorted(accuracy_by_eps.items())}
    return SanityCheck("undefended accuracy collapses at large eps", values, flag)


def check_minimal_attack_converged(attack: str, accuracy: float, max_accuracy: float = MINIMAL_ATTACK_MAX_ACCURACY) -> SanityCheck:
    """An unbounded attack must take an undefended model below `max_accuracy`."""
    flag = None
    if accuracy > max_accuracy:
        flag = (
            f"{attack} leaves the undefended model at {accuracy:.3f} accuracy, above {max_accuracy}: an attack without "
            f"a budget that fails this often has not converged (more steps, or a larger overshoot), so its row says nothing"
        )
    return SanityCheck(f"{attack} (minimal perturbation) converged", {"undefended_accuracy": accuracy, "max_accuracy": max_accuracy}, flag)


def check_not_weaker(strong_name: str, strong_accuracy: float, weak_name: str, weak_accuracy: float, tolerance: float = DEFAULT_TOLERANCE) -> SanityCheck:
    """The attacker with more access (`strong`) must leave no higher robust accuracy than `weak`. The
    flag names access, not exact gradients: BPDA's are approximate, yet it knows more than grey-box."""
    values = {f"{strong_name}_accuracy": strong_accuracy, f"{weak_name}_accuracy": weak_accuracy, "tolerance": tolerance}
    flag = None
    if exceeds_tolerance(strong_accuracy - weak_accuracy, tolerance):
        flag = (
            f"{strong_name} leaves {strong_accuracy:.3f} robust accuracy but {weak_name} only {weak_accuracy:.3f}: "
            f"the attacker with more access to the defense does worse, a sign of gradient masking; distrust the {strong_name} number"
        )
    return SanityCheck(f"{strong_name} is not weaker than {weak_name}", values, flag)


def check_white_vs_transfer(white_accuracy: float, transfer_accuracy: float, tolerance: float = DEFAULT_TOLERANCE) -> SanityCheck:
    return check_not_weaker("white", white_accuracy, "transfer", transfer_accuracy, tolerance)


def check_white_vs_bpda(white_accuracy: float, bpda_accuracy: float, tolerance: float = DEFAULT_TOLERANCE) -> SanityCheck:
    return check_not_weaker("white", white_accuracy, "bpda", bpda_accuracy, tolerance)


def undefended_accuracy_by_eps(
    classifier: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps_values: Sequence[float] = (0.03, 0.1, 0.3),
    attack: str = "pgd",
    steps: int = 20,
    seed: int = 0,
) -> dict[float, float]:
    """Robust accuracy of the bare classifier under `attack` at each eps (the input of the collapse check)."""
    accuracy = {}
    for eps in eps_values:
        config = AttackConfig(name=attack, norm="linf", eps=float(eps), steps=steps, seed=seed)
        adversarial = create_attack(classifier, config)(images, labels)
        with torch.no_grad(), frozen_eval(classifier):
            predictions = classifier(adversarial).argmax(dim=1)
        accuracy[float(eps)] = (predictions == labels).float().mean().item()
    return accuracy
