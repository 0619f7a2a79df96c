"""Attacks (torchattacks by CLI name), threat models and the gradient-masking checks.

    config = AttackConfig(name="pgd", norm="linf", eps=0.03, steps=10)
    adv = craft("white", classifier, purifier, images, labels, config, eot=8)
    score = evaluate_defended(classifier, purifier, adv, labels, redraws=5)

The sharded data-set run (`robust_run`, `evaluate_attack`) is in `core.attacks.robust`.

The names and facts a command checks or lists (each attack's spec, the threat models) are declared
here without torch: a mistyped name is refused, and `purifylab attacks` / `threats` list, without
importing torch and torchattacks. The crafting code (`library`, `threats`, `sanity`) is imported on
first use of a name that needs it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.attacks.config import NORMS, AttackConfig
from core.errors import PurifyLabError, check_range, typed
from core.registry import Registry

if TYPE_CHECKING:
    from torch import nn
    from torchattacks.attack import Attack

    from core.purifiers.base import Purifier


@dataclass(frozen=True)
class AttackSpec:
    """How one CLI name maps onto torchattacks, and which settings mean something for it."""

    build: str  # the builder's name in core.attacks.library, imported when the attack is built
    norms: tuple[str, ...]
    bounded: bool = True  # False: a minimal-perturbation attack that ignores eps
    restarts: bool = False  # True: restarts > 1 is meaningful
    eot: bool = False  # True: the attack itself takes eot_iter
    single_step: bool = False  # True: one gradient step whatever `steps` says (FGSM)
    # True: where the attack fails it returns the input itself, not its last iterate (torchattacks keeps
    # only successful examples), so against a deterministic model "no perturbation" means "nothing found
    # within eps"; against one that draws noise it may mean only that one draw was not fooled.
    keeps_only_successes: bool = False
    # True (the APGD family): against a model that draws noise it returns iterates, never the input
    # (`BestLossIterates`); those robust cells carry a key field of their own (core.attacks.robust.key_fields).
    best_loss_against_noise: bool = False
    step_size: bool = False  # True: the attack steps by `alpha` (the others ignore it)
    # Non-empty: the attack runs this fixed schedule of its own, whatever `steps` and `eot_iter` say
    # (torchattacks' AutoAttack builds its sub-attacks at their defaults).
    schedule: str = ""
    revision: int = 0  # raised when the implementation changes, so stored results are recomputed

    def __call__(self, model: nn.Module, config: AttackConfig, num_classes: int) -> Attack:
        from core.attacks import library

        return getattr(library, self.build)(model, config, num_classes)


ATTACKS: Registry[AttackSpec] = Registry("attack")

# What torchattacks 3.5.1's AutoAttack runs: its sub-attacks at their own defaults (10 steps),
# one restart, targeted ones once per other class; `steps` and `eot_iter` reach none of them.
AUTOATTACK_SCHEDULES = {
    "standard": "own schedule: APGD-CE 10 steps, APGD-T and FAB-T 10 steps per target class, Square 5000 queries",
    "rand": "own schedule: APGD-CE and APGD-DLR, 10 steps each, EOT 20",
}

_LINF, _L2, _BOTH = ("linf",), ("l2",), ("linf", "l2")

for _name, _spec, _doc in (
    ("fgsm", AttackSpec("_fgsm", _LINF, single_step=True), "FGSM, one signed-gradient step (L-inf)"),
    ("pgd", AttackSpec("_pgd", _BOTH, restarts=True, step_size=True), "PGD with random start (L-inf; PGDL2 for l2)"),
    ("pgdl2", AttackSpec("_pgd", _L2, restarts=True, step_size=True), "PGD under an L2 budget (torchattacks PGDL2)"),
    ("eotpgd", AttackSpec("_eotpgd", _LINF, restarts=True, eot=True, step_size=True), "PGD on gradients averaged over eot_iter calls"),
    (
        "tpgd",
        AttackSpec("_tpgd", _LINF, step_size=True, revision=1),
        "TRADES' adversary: PGD on the KL divergence from the clean prediction; misread images left as they are (L-inf)",
    ),
    (
        "apgd",
        AttackSpec("_apgd", _BOTH, restarts=True, eot=True, keeps_only_successes=True, best_loss_against_noise=True),
        "Auto-PGD with cross-entropy loss (APGD-CE)",
    ),
    (
        "apgdt",
        AttackSpec("_apgdt", _BOTH, restarts=True, eot=True, keeps_only_successes=True, best_loss_against_noise=True),
        "targeted Auto-PGD with the DLR loss (APGD-T)",
    ),
    (
        "autoattack",
        AttackSpec("_autoattack_standard", _BOTH, keeps_only_successes=True, best_loss_against_noise=True, schedule=AUTOATTACK_SCHEDULES["standard"]),
        "AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square",
    ),
    (
        "autoattack-rand",
        AttackSpec("_autoattack_rand", _BOTH, keeps_only_successes=True, best_loss_against_noise=True, schedule=AUTOATTACK_SCHEDULES["rand"]),
        "AutoAttack rand: APGD-CE and APGD-DLR with EOT 20",
    ),
    ("square", AttackSpec("_square", _BOTH, restarts=True, keeps_only_successes=True), "Square attack, score-based black-box (steps = queries)"),
    (
        "deepfool",
        AttackSpec("_deepfool", _L2, bounded=False, revision=1),
        "DeepFool, minimal L2 perturbation to the nearest boundary (ignores eps)",
    ),
    (
        "cw",
        AttackSpec("_cw", _L2, bounded=False, keeps_only_successes=True),
        "Carlini-Wagner L2, minimal perturbation (ignores eps)",
    ),
    ("ead", AttackSpec("_ead", _L2, bounded=False, keeps_only_successes=True), "elastic-net attack EAD (L1 + L2, EN rule; ignores eps)"),
):
    ATTACKS.register(_name, _doc)(_spec)


def list_attacks() -> dict[str, str]:
    return ATTACKS.describe()


# Purifier draws per attack step (--eot): the bound every caller checks, here without torch, so a
# refusal comes before the model, the data and the clean pass, not from DefendedClassifier after them.
MAX_EOT = 1000


@dataclass(frozen=True)
class ThreatModel:
    """What the attacker sees under one threat model; every caller asks these flags, none re-spells them."""

    name: str
    summary: str  # "{draws}" stands for the EOT count, which only the caller knows; "{s}" for its plural
    goes_through_purifier: bool  # the attacker differentiates (or approximates) the purifier
    uses_eot: bool  # each attack step averages over `eot` purifier draws
    needs_substitute: bool  # examples are crafted on a black-box substitute model
    # Threat models that see less of the defense: this attacker must leave no higher robust
    # accuracy than any of them (white <= BPDA+EOT <= grey), or the table flags gradient masking.
    not_weaker_than: tuple[str, ...] = ()

    def describe(self, eot: int | None = None) -> str:
        """The threat model in words, with the EOT count filled in ("several" when none is set)."""
        return self.summary.format(draws="several" if eot is None else eot, s="" if eot == 1 else "s")

    def draws_per_step(self, eot: int) -> int:
        """Purifier draws the attacker spends per gradient step."""
        return eot if self.uses_eot else 1

    def check_purifier(self, purifier: Purifier | None) -> None:
        """Refuse 'white' on a purifier whose forward already passes gradients straight through:
        its number would be a BPDA one recorded as exact gradients."""
        if self.name == "white" and purifier is not None and not getattr(purifier, "exact_gradients", True):
            raise PurifyLabError(f"purifier '{purifier.name}' has no exact gradients; attack it with threat 'bpda' or 'bpda-eot'")

    def check_eot(self, eot: int) -> None:
        """Refuse purifier draws per step this attacker cannot spend. Called before any data is read
        (EvaluationConfig, robust_run): crafting would refuse them only after the whole clean pass."""
        typed("eot", eot, int)
        check_range("eot", eot, 1, MAX_EOT)  # first: eot=0 is out of range under any threat, not "unused by grey"
        if eot != 1 and not self.uses_eot:
            users = [name for name, other in THREAT_MODELS.items() if other.uses_eot]
            raise PurifyLabError(f"eot={eot} does not apply to threat '{self.name}'; it is used by {', '.join(users)}")
        if self.name == "bpda-eot" and eot < 2:
            raise PurifyLabError(f"threat 'bpda-eot' needs eot >= 2 purifier draws (got {eot}); use 'bpda' for one")


THREAT_MODELS: dict[str, ThreatModel] = {
    threat.name: threat
    for threat in (
        ThreatModel("grey", "attacker sees the classifier only; the purifier is applied at test time", False, False, False),
        ThreatModel("transfer", "examples crafted on a substitute model (black-box), evaluated on the defended target", False, False, True),
        ThreatModel("bpda", "purifier forward, identity backward (BPDA)", True, False, False),
        ThreatModel("bpda-eot", "BPDA with expectation over {draws} purifier draw{s} per step", True, True, False, ("grey",)),
        ThreatModel(
            "white",
            "exact gradients through the purifier's differentiable mode, EOT over {draws} draw{s}",
            True,
            True,
            False,
            ("transfer", "bpda", "bpda-eot", "grey"),
        ),
    )
}


def threat_model(name: str) -> ThreatModel:
    """The registered threat model called `name`, or a one-line error listing the choices."""
    try:
        return THREAT_MODELS[name]
    except (KeyError, TypeError):
        raise PurifyLabError(f"unknown threat model '{name}'; choose one of: {', '.join(THREAT_MODELS)}") from None


def threat_descriptions() -> dict[str, str]:
    return {name: threat.describe() for name, threat in THREAT_MODELS.items()}


# The crafting API, by the submodule that defines it (each imports torch).
_CRAFTING_MODULES = {
    "create_attack": "core.attacks.library",
    "SanityCheck": "core.attacks.sanity",
    "check_accuracy_collapse": "core.attacks.sanity",
    "check_minimal_attack_converged": "core.attacks.sanity",
    "check_not_weaker": "core.attacks.sanity",
    "check_white_vs_bpda": "core.attacks.sanity",
    "check_white_vs_transfer": "core.attacks.sanity",
    "undefended_accuracy_by_eps": "core.attacks.sanity",
    "DefendedScore": "core.attacks.threats",
    "attacked_model": "core.attacks.threats",
    "craft": "core.attacks.threats",
    "evaluate_defended": "core.attacks.threats",
}


def __getattr__(name: str) -> Any:
    """`from core.attacks import craft` still works: the crafting code is imported on first use (PEP 562)."""
    if name in _CRAFTING_MODULES:
        return getattr(importlib.import_module(_CRAFTING_MODULES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ATTACKS",
    "MAX_EOT",
    "NORMS",
    "THREAT_MODELS",
    "AttackConfig",
    "AttackSpec",
    "ThreatModel",
    "list_attacks",
    "threat_descriptions",
    "threat_model",
    *_CRAFTING_MODULES,
]
