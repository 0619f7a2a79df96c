"""Attacks (torchattacks by CLI name), threat models and the gradient-masking checks.

    config = AttackConfig(name="pgd", norm="linf", eps=0.03, steps=10)
    adv = craft("white", classifier, purifier, images, labels, config, eot=8)
    score = evaluate_defended(classifier, purifier, adv, labels, redraws=5)

The sharded data-set run (`robust_run`, `evaluate_attack`) is in `core.attacks.robust`.
"""

from core.attacks.config import NORMS, AttackConfig
from core.attacks.library import ATTACKS, create_attack, list_attacks
from core.attacks.sanity import (
    SanityCheck,
    check_accuracy_collapse,
    check_minimal_attack_converged,
    check_not_weaker,
    check_white_vs_bpda,
    check_white_vs_transfer,
    undefended_accuracy_by_eps,
)
from core.attacks.threats import (
    THREAT_MODELS,
    DefendedScore,
    ThreatModel,
    attacked_model,
    craft,
    evaluate_defended,
    threat_descriptions,
    threat_model,
)

__all__ = [
    "ATTACKS",
    "NORMS",
    "THREAT_MODELS",
    "AttackConfig",
    "DefendedScore",
    "SanityCheck",
    "ThreatModel",
    "attacked_model",
    "check_accuracy_collapse",
    "check_minimal_attack_converged",
    "check_not_weaker",
    "check_white_vs_bpda",
    "check_white_vs_transfer",
    "craft",
    "create_attack",
    "evaluate_defended",
    "list_attacks",
    "threat_descriptions",
    "threat_model",
    "undefended_accuracy_by_eps",
]
