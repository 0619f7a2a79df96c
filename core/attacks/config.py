"""The attack's parameters as one typed, validated record.

Budgets are in the [0, 1] pixel scale every core boundary uses (the papers' L-inf 0.03 and 8/255,
L2 1 and 2), so a number in a table means the same thing whatever the model normalises to inside.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import PurifyLabError, check_range, check_types

NORMS = ("linf", "l2")

# The largest L2 distance between two single-channel 224 px images in [0, 1] (all black vs all
# white): a bigger L2 budget cannot mean anything at the project's resolutions. The model's own
# input, once known, bounds it tighter (`AttackConfig.check_fits_input`).
L2_EPS_MAX = 224.0
MAX_STEPS = 100_000


@dataclass(frozen=True)
class AttackConfig:
    """One attack: its CLI name, threat budget and optimiser settings.

    `alpha=None` resolves to Madry's 2.5 * eps / steps (eps / 4 at 10 steps), which reaches the
    boundary of the ball from anywhere inside it. `restarts` and `eot_iter` apply only to attacks
    that support them, `steps` other than 1 not to a one-step attack (FGSM), `eps` not to a
    minimal-perturbation one (CW, DeepFool, EAD): a meaningless setting is refused rather than
    ignored. Left at its default it is not a setting (FGSM's default 10 steps run as 1).
    """

    name: str = "pgd"
    norm: str = "linf"
    eps: float = 0.03
    steps: int = 10
    alpha: float | None = None
    restarts: int = 1
    eot_iter: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        from core.attacks import ATTACKS  # the torch-free registry: a bad value is refused before torch loads

        check_types(self)  # steps=2.5 or eps="0.03" gets one line here, not a TypeError inside torchattacks
        spec = ATTACKS.get(self.name)
        defaults = {setting.name: setting.default for setting in dataclasses.fields(self)}
        if spec.single_step and self.steps not in (1, defaults["steps"]):
            raise PurifyLabError(f"steps={self.steps} does not apply to '{self.name}', which takes one step; drop steps")
        if spec.single_step:  # FGSM is one step: a CLI default of 10 must not be reported as its budget
            object.__setattr__(self, "steps", 1)
        if not spec.bounded and self.eps != defaults["eps"]:
            raise PurifyLabError(f"eps={self.eps} does not apply to '{self.name}', a minimal-perturbation attack that finds its own size; drop eps")
        if self.norm not in NORMS:
            raise PurifyLabError(f"norm '{self.norm}' is not supported; choose one of: {', '.join(NORMS)}")
        if self.norm not in spec.norms:
            others = [name for name in ATTACKS.names() if self.norm in ATTACKS.get(name).norms]
            raise PurifyLabError(
                f"attack '{self.name}' supports norm {'|'.join(spec.norms)} only, not {self.norm}; attacks for {self.norm}: {', '.join(others)}"
            )
        eps_max = 1.0 if self.norm == "linf" else L2_EPS_MAX
        check_range("eps", self.eps, 0.0, eps_max, note=f"{self.norm} budget in the [0, 1] pixel scale")
        check_range("steps", self.steps, 1, MAX_STEPS)
        if self.alpha is not None:
            check_range("alpha", self.alpha, 0.0, eps_max, low_open=True, note="step size in the [0, 1] pixel scale")
        check_range("restarts", self.restarts, 1, 1000)
        check_range("eot_iter", self.eot_iter, 1, 1000)
        check_range("seed", self.seed, 0, 2**63 - 1)
        if self.restarts > 1 and not spec.restarts:
            raise PurifyLabError(f"restarts={self.restarts} does not apply to '{self.name}' (deterministic); use restarts=1")
        if self.eot_iter > 1 and not spec.eot:
            raise PurifyLabError(
                f"eot_iter={self.eot_iter} does not apply to '{self.name}'; attacks with EOT: "
                + ", ".join(name for name in ATTACKS.names() if ATTACKS.get(name).eot)
            )

    @property
    def step_size(self) -> float:
        return self.alpha if self.alpha is not None else 2.5 * self.eps / self.steps

    @property
    def bounded(self) -> bool:
        """False for minimal-perturbation attacks (DeepFool, CW, EAD): they ignore eps."""
        from core.attacks import ATTACKS

        return ATTACKS.get(self.name).bounded

    def resolved(self) -> dict[str, Any]:
        """Every setting with defaults filled in: what the results store hashes and tables print."""
        from core.attacks import ATTACKS

        revision = ATTACKS.get(self.name).revision  # only when raised: every older cell keeps its key
        return {**dataclasses.asdict(self), "alpha": self.step_size, "bounded": self.bounded} | ({"revision": revision} if revision else {})

    def budget(self) -> dict[str, Any]:
        """The attacker's budget as reported beside each number (steps x EOT x restarts).

        What runs, not what was typed: an attack with its own schedule (AutoAttack) reports that
        schedule and no step count, and `alpha` only where the attack steps by it."""
        from core.attacks import ATTACKS

        spec = ATTACKS.get(self.name)
        counted = not spec.schedule
        return {
            "norm": self.norm,
            "eps": self.eps if self.bounded else None,
            "steps": self.steps if counted else None,
            "alpha": self.step_size if spec.step_size else None,
            "eot_iter": self.eot_iter if counted else None,
            "restarts": self.restarts if counted else None,
            "schedule": spec.schedule or None,
            "gradient_evaluations": self.steps * self.eot_iter * self.restarts if counted else None,
        }

    def check_fits_input(self, channels: int, image_size: int, classifier: str) -> None:
        """Refuse an L2 budget wider than the model's input: no two C x S x S images in [0, 1] are more
        than sqrt(C * S * S) apart (all black vs all white), so every image lies inside it and the
        figure measures nothing. Checked once the classifier is known, before any compute."""
        diameter = math.sqrt(channels * image_size * image_size)
        if self.norm == "l2" and self.bounded and self.eps > diameter:
            shown = math.floor(diameter * 1e4) / 1e4  # rounded down: the bound it names is itself allowed
            raise PurifyLabError(
                f"eps={self.eps} is wider than {classifier}'s input ({channels}x{image_size}x{image_size}), whose images are at most "
                f"L2 {shown:g} apart (all black vs all white); choose eps <= {shown:g}"
            )


def perturbation_text(summary: Mapping[str, float | None]) -> str:
    """`Perturbation.summary()` as one line, here rather than beside it so that the table renderer and
    the evaluate report print it alike without importing torch. None is n/a: no image read correctly
    (success) or none fooled (norms)."""
    success = "n/a" if summary["success_rate"] is None else f"{100 * summary['success_rate']:.1f} %"
    norm = {name: "n/a" if summary[name] is None else f"{summary[name]:.3f}" for name in ("l2_median", "l2_max", "linf_median", "linf_max")}
    return f"success {success}, L2 median {norm['l2_median']} (max {norm['l2_max']}), L-inf median {norm['linf_median']} (max {norm['linf_max']})"
