"""Threat models: which model the attacker differentiates, and how a stochastic defense is scored.

The five threat models of the issue and of Blau et al. (threat_model_agnostic_diffusion_defense.md):

    grey      attack the classifier alone; the purifier is applied only at test time
    transfer  attack a substitute model (black-box); evaluate on the defended target
    bpda      attack classifier(BPDA(purifier)(x)): purifier forward, identity backward
    bpda-eot  bpda, each step averaged over `eot` purifier draws (one batched forward)
    white     exact gradients through the purifier's differentiable mode, EOT over `eot` draws

Every number must be reported with its threat model: a grey-box number says nothing about an
attacker who knows the defense.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from core.attacks import THREAT_MODELS, threat_model  # noqa: F401  (declared torch-free there; read here too)
from core.attacks.config import AttackConfig
from core.attacks.library import create_attack, frozen_eval
from core.defended import MAX_REDRAWS, DefendedClassifier
from core.errors import PurifyLabError, check_range
from core.io import IMAGE_CHANNELS, validate_image_tensor, validate_labels
from core.purifiers.base import Purifier
from core.purifiers.simple import IdentityPurifier


def attacked_model(
    threat: str,
    classifier: nn.Module,
    purifier: Purifier | None,
    *,
    substitute: nn.Module | None = None,
    eot: int = 1,
    seed: int = 0,
) -> nn.Module:
    """The model whose gradients the attacker follows under `threat`."""
    spec = threat_model(threat)
    spec.check_eot(eot)
    if not spec.goes_through_purifier:
        if not spec.needs_substitute:
            return classifier
        if substitute is None:
            raise PurifyLabError("threat 'transfer' needs a substitute model to craft the examples on")
        return substitute
    if purifier is None:
        raise PurifyLabError(f"threat '{threat}' attacks through the defense: give a purifier ('none' for no defense)")
    spec.check_purifier(purifier)
    if threat == "bpda":
        return DefendedClassifier(purifier, classifier, eot=1, bpda=True, seed=seed)
    return DefendedClassifier(purifier, classifier, eot=eot, bpda=threat == "bpda-eot", seed=seed)


def _num_classes(model: nn.Module, images: torch.Tensor) -> int:
    """From one forward of the bare model (never the defended one: that would spend purifier draws)."""
    with torch.no_grad(), frozen_eval(model):
        return int(model(images[:1]).shape[1])


def checked_inputs(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What `craft` and `evaluate_defended` take, checked once, at the boundary: images float32 NCHW in
    [0, 1] with the classifier's channels and size, labels int64 (N,) in [0, K). The models' forwards
    never repeat it: an attack calls them thousands of times."""
    images = validate_image_tensor(images, channels=getattr(classifier, "in_channels", IMAGE_CHANNELS))
    if hasattr(classifier, "check_input"):  # a registered classifier: its size too, named with the caller's batch
        classifier.check_input(images)
    return images, validate_labels(labels, images.shape[0], _num_classes(classifier, images))


def craft(
    threat: str,
    classifier: nn.Module,
    purifier: Purifier | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack_config: AttackConfig,
    *,
    substitute: nn.Module | None = None,
    eot: int = 1,
    seed: int = 0,
) -> torch.Tensor:
    """Adversarial images (same shape, in [0, 1]) for `threat`.

    `seed` fixes the purifier draws the attacker sees; `attack_config.seed` fixes the attack's own
    randomness (random starts, restarts, Square's proposals). `purifier` may be None for `grey`
    and `transfer`, where the attacker never sees it.
    """
    images, labels = checked_inputs(classifier, images, labels)
    model = attacked_model(threat, classifier, purifier, substitute=substitute, eot=eot, seed=seed)
    bare_model = substitute if threat_model(threat).needs_substitute else classifier
    attack = create_attack(model, attack_config, num_classes=_num_classes(bare_model, images))
    return attack(images, labels)


@dataclass(frozen=True)
class DefendedScore:
    """Accuracy of classifier(purifier(adv)) under the first draw and under every one of `redraws` draws.

    `predictions` is (redraws, N); `probabilities` holds the first draw's class probabilities (N, K),
    the input for AUROC and the other metrics.
    """

    one_shot_accuracy: float
    worst_case_accuracy: float
    redraws: int
    n: int
    predictions: torch.Tensor
    probabilities: torch.Tensor
    purify_seconds: float = 0.0  # wall time inside the purifier alone, over every draw

    def to_dict(self) -> dict[str, float | int]:
        return {
            "one_shot_accuracy": self.one_shot_accuracy,
            "worst_case_accuracy": self.worst_case_accuracy,
            "redraws": self.redraws,
            "n": self.n,
        }


@torch.inference_mode()
def evaluate_defended(
    classifier: nn.Module,
    purifier: Purifier | None,
    adv: torch.Tensor,
    labels: torch.Tensor,
    redraws: int = 1,
    seed: int = 0,
    batch_size: int = 64,
) -> DefendedScore:
    """Honest scoring of a stochastic defense: an image counts as robust in the worst case only if
    it is classified correctly under every one of `redraws` independent purifier draws (draw k uses
    seed + k). A deterministic purifier is evaluated once, since every draw would be the same.
    `purifier` None scores the classifier undefended."""
    check_range("redraws", redraws, 1, MAX_REDRAWS)
    if batch_size < 1:  # adv.split(0) or a negative size would fail inside torch
        raise PurifyLabError(f"batch_size={batch_size} must be >= 1")
    adv, labels = checked_inputs(classifier, adv, labels)
    purifier = purifier if purifier is not None else IdentityPurifier()
    draws = redraws if purifier.stochastic else 1
    predictions, first_probabilities, purify_seconds = [], None, 0.0
    with frozen_eval(classifier), frozen_eval(purifier):
        for draw in range(draws):
            generator = None
            if purifier.stochastic:
                generator = torch.Generator(device=adv.device).manual_seed(seed + draw)
            parts = []
            for batch in adv.split(batch_size):
                started = time.perf_counter()
                purified = purifier(batch, generator=generator).clamp(0.0, 1.0)
                if purified.is_cuda:
                    torch.cuda.synchronize(purified.device)
                purify_seconds += time.perf_counter() - started
                parts.append(classifier(purified).softmax(dim=1))
            probabilities = torch.cat(parts)
            predictions.append(probabilities.argmax(dim=1))
            if first_probabilities is None:
                first_probabilities = probabilities
    stacked = torch.stack(predictions)
    correct = stacked == labels.to(stacked.device)
    return DefendedScore(
        one_shot_accuracy=correct[0].float().mean().item(),
        worst_case_accuracy=correct.all(dim=0).float().mean().item(),
        redraws=draws,
        n=int(labels.shape[0]),
        predictions=stacked.cpu(),
        probabilities=first_probabilities.cpu(),
        purify_seconds=purify_seconds,
    )
