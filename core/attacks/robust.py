"""Robust accuracy: classifier(purifier(x_adv)) over a data set, sharded over processes.

`robust_run` cuts the data into fixed batches and seeds each batch from its index, so the numbers
do not depend on how the batches are spread over processes: under `accelerate launch` each process
takes a contiguous share of the batches (`PartialState.split_between_processes`) and the shares are
merged with `gather_object`; a single process needs nothing extra. `evaluate_attack` is the
adversarial half of `core.evaluate.evaluate`; the tables call `robust_run` cell by cell.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from core.attacks import ThreatModel
from core.attacks.config import AttackConfig
from core.attacks.library import ATTACKS, frozen_eval
from core.attacks.sanity import check_minimal_attack_converged
from core.attacks.threats import craft, evaluate_defended, threat_model
from core.data.loading import load_split, resolve_split
from core.devices import device_name
from core.errors import PurifyLabError
from core.evaluate import EvaluationConfig, images_per_second, weights_loaded_by
from core.metrics import balanced_accuracy, balanced_accuracy_interval, classification_metrics, clopper_pearson
from core.models import XrayClassifier, create_classifier
from core.purifiers import PURIFIERS, Purifier, create_purifier

# Offsets keep the attacker's purifier draws apart from the test-time draws: an attacker who had
# optimised against the exact noise used at test time would overstate the attack.
ATTACKER_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class RobustRun:
    """Per-image results of one (classifier, purifier, attack, threat) evaluation, in data order.

    `correct` is (draws, N): one row per test-time purifier draw (1 for a deterministic purifier);
    `probabilities` (N, 2) are those of the first draw.
    """

    labels: np.ndarray
    probabilities: np.ndarray
    correct: np.ndarray
    seconds: float
    peak_gpu_memory: int | None
    perturbation: Perturbation | None = None  # None without an attack
    # Wall time in crafting and in the purifier alone (DiffDefense's Table 3 times purification only).
    attack_seconds: float = 0.0
    purify_seconds: float = 0.0
    device: str | None = None  # device_name() of where robust_run ran (None: a run built by hand)

    @property
    def one_shot_accuracy(self) -> float:
        return float(self.correct[0].mean())

    @property
    def worst_case_accuracy(self) -> float:
        return float(self.correct.all(axis=0).mean())

    @property
    def majority_accuracy(self) -> float:
        """Right under more than half of the draws: DensePure's majority vote over the same draws (exact
        for two classes; for more, a lower bound on the plurality vote)."""
        return float(majority_correct(self.correct).mean())


@dataclass(frozen=True)
class Perturbation:
    """What the attack did to each image, before any purifier: its size and whether it fooled the
    classifier alone. A minimal-perturbation attack (DeepFool, CW, EAD) has no eps, so its norms and
    success rate are the only evidence that it converged."""

    l2: np.ndarray  # (N,) L2 norm of x_adv - x, [0, 1] pixel scale
    linf: np.ndarray  # (N,)
    clean_correct: np.ndarray  # (N,) the classifier alone read x correctly
    fooled: np.ndarray  # (N,) ... and misreads x_adv

    @staticmethod
    def of(classifier: torch.nn.Module, x: torch.Tensor, adversarial: torch.Tensor, labels: torch.Tensor) -> Perturbation:
        delta = (adversarial - x).flatten(1)
        with torch.no_grad(), frozen_eval(classifier):
            clean_correct = classifier(x).argmax(1) == labels
            fooled = clean_correct & (classifier(adversarial).argmax(1) != labels)
        as_numpy = lambda t: t.detach().cpu().numpy()  # noqa: E731
        return Perturbation(as_numpy(delta.norm(dim=1)), as_numpy(delta.abs().amax(dim=1)), as_numpy(clean_correct), as_numpy(fooled))

    @staticmethod
    def concatenate(parts: list[Perturbation]) -> Perturbation:
        return Perturbation(*(np.concatenate([getattr(part, name) for part in parts]) for name in ("l2", "linf", "clean_correct", "fooled")))

    def summary(self) -> dict[str, float | None]:
        """The success rate (of the images the classifier read correctly, the share the attack made it
        misread; None when it read none correctly) and the median and max norms over the images it
        fooled only (None when it fooled none): an image it failed on is handed back unchanged (CW) or
        half-moved, and counting its norm put the median at 0 whenever fewer than half were fooled."""
        correct = int(self.clean_correct.sum())
        over_fooled = lambda statistic, norms: float(statistic(norms[self.fooled])) if self.fooled.any() else None  # noqa: E731
        return {
            "l2_median": over_fooled(np.median, self.l2),
            "l2_max": over_fooled(np.max, self.l2),
            "linf_median": over_fooled(np.median, self.linf),
            "linf_max": over_fooled(np.max, self.linf),
            "success_rate": float(self.fooled.sum() / correct) if correct else None,
        }


def process_state():
    """The accelerate process state: one process unless started by `accelerate launch` / torchrun
    (several GPUs, or several CPU processes over gloo when there is no GPU)."""
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def robust_run(
    classifier: torch.nn.Module,
    purifier: Purifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: AttackConfig | None,
    threat: str = "grey",
    *,
    substitute: torch.nn.Module | None = None,
    eot: int = 1,
    redraws: int = 1,
    seed: int = 0,
    batch_size: int = 16,
    adversarial_cache: MutableMapping | None = None,
    cache_key: str | None = None,
    progress: bool = False,
) -> RobustRun:
    """classifier(purifier(x_adv)) for every image, where x_adv = x when `attack` is None.

    Batch b uses attack seed `attack.seed + b`, attacker draws from `seed + offset + b` and test-time
    draws from `seed + b * redraws`, so a run is a pure function of its arguments whatever the number
    of processes. `adversarial_cache[(cache_key, b)]` reuses adversarial batches between cells that
    share them (grey-box and transfer examples do not depend on the purifier), with their perturbation
    and the seconds they took to craft.
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    spec = threat_model(threat)
    if batch_size < 1:
        raise PurifyLabError(f"batch size must be >= 1, got {batch_size}")
    if attack is not None:  # before any batch: craft would refuse them only after the clean pass
        spec.check_purifier(purifier)
        spec.check_eot(eot)
    state = process_state()
    device = state.device
    classifier = classifier.to(device)
    purifier = purifier.to(device)
    substitute = substitute.to(device) if substitute is not None else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    starts = list(range(0, images.shape[0], batch_size))
    started = time.perf_counter()
    mine: list[tuple[int, np.ndarray, np.ndarray, Perturbation | None, float, float]] = []
    with state.split_between_processes(list(enumerate(starts))) as shard:
        for index, start in tqdm(shard, desc="batches", unit="batch", leave=False, disable=not (progress and state.is_main_process)):
            x = images[start : start + batch_size].to(device)
            x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
            y = labels[start : start + batch_size].to(device)
            adversarial, perturbation, attack_seconds = x, None, 0.0
            if attack is not None:
                key = (cache_key, index)
                if adversarial_cache is not None and cache_key is not None and key in adversarial_cache:
                    adversarial, perturbation, attack_seconds = adversarial_cache[key]
                    adversarial = adversarial.to(device)
                else:
                    crafting_started = time.perf_counter()
                    batch_attack = dataclasses.replace(attack, seed=attack.seed + index)
                    adversarial = craft(
                        threat,
                        classifier,
                        purifier,
                        x,
                        y,
                        batch_attack,
                        substitute=substitute,
                        eot=eot,
                        seed=seed + ATTACKER_SEED_OFFSET + index,
                    )
                    attack_seconds = time.perf_counter() - crafting_started
                    perturbation = Perturbation.of(classifier, x, adversarial, y)
                    if adversarial_cache is not None and cache_key is not None:
                        adversarial_cache[key] = (adversarial.cpu(), perturbation, attack_seconds)
            score = evaluate_defended(classifier, purifier, adversarial, y, redraws=redraws, seed=seed + index * redraws, batch_size=batch_size)
            correct = (score.predictions == y.cpu()).numpy()
            mine.append((index, score.probabilities.numpy(), correct, perturbation, attack_seconds, score.purify_seconds))
    shards = gather_object(mine) if state.num_processes > 1 else mine
    shards = sorted(shards, key=lambda item: item[0])
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return RobustRun(
        labels=labels.numpy(),
        probabilities=np.concatenate([item[1] for item in shards]),
        correct=np.concatenate([item[2] for item in shards], axis=1),
        seconds=time.perf_counter() - started,
        peak_gpu_memory=peak,
        perturbation=Perturbation.concatenate([item[3] for item in shards]) if attack is not None and shards else None,
        attack_seconds=sum(item[4] for item in shards),
        purify_seconds=sum(item[5] for item in shards),
        device=device_name(device),
    )


def run_metrics(run: RobustRun, bootstrap: int = 1000, seed: int = 0, class_names: tuple[str, ...] | None = None) -> dict:
    """The classification metrics of the first draw plus one-shot, worst-case and majority accuracy and
    balanced accuracy. The figures over the draws get their 95 % interval in `confidence_95` beside the
    first draw's, by the same methods: a worst case read without one would look exact."""
    metrics = classification_metrics(run.labels, run.probabilities, bootstrap=bootstrap, seed=seed, class_names=class_names).to_dict()
    over_draws = {"worst_case": np.asarray(run.correct).all(axis=0), "majority": majority_correct(run.correct)}
    for name, right in over_draws.items():
        metrics["confidence_95"][f"{name}_accuracy"] = list(clopper_pearson(int(right.sum()), right.size))
        metrics["confidence_95"][f"{name}_balanced_accuracy"] = balanced_accuracy_interval(run.labels, right)
    return {
        **metrics,
        "one_shot_accuracy": run.one_shot_accuracy,
        "worst_case_accuracy": run.worst_case_accuracy,
        "worst_case_balanced_accuracy": worst_case_balanced_accuracy(run.correct, run.labels),
        "majority_accuracy": run.majority_accuracy,
        "majority_balanced_accuracy": _balanced(majority_correct(run.correct), run.labels),
        "redraws": int(run.correct.shape[0]),
        **({"perturbation": run.perturbation.summary()} if run.perturbation is not None else {}),
    }


def worst_case_balanced_accuracy(correct: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the share of images right under every purifier draw (rows of `correct`)."""
    return _balanced(np.asarray(correct).all(axis=0), labels)


def majority_correct(correct: np.ndarray) -> np.ndarray:
    """Per image: right under more than half of the purifier draws (rows of `correct`)."""
    correct = np.asarray(correct)
    return 2 * correct.sum(axis=0) > correct.shape[0]


def _balanced(right: np.ndarray, labels: np.ndarray) -> float:
    """core.metrics' balanced accuracy of a per-image right/wrong mask (a wrong answer as class -1)."""
    labels = np.asarray(labels)
    return balanced_accuracy(labels, np.where(right, labels, -1), num_classes=int(labels.max()) + 1)


def check_substitute_fits(substitute: torch.nn.Module, classifier: torch.nn.Module, name: str) -> None:
    """Transfer examples are crafted at the substitute's input and scored at the classifier's: a
    substitute for other images (the X-ray CNN against a CIFAR-10 model) is refused before the clean
    pass, not after it as a shape error that blames the classifier."""
    shape = lambda model: (model.in_channels, model.image_size, model.num_classes)  # noqa: E731
    if shape(substitute) != shape(classifier):
        raise PurifyLabError(
            f"substitute '{name}' takes {substitute.in_channels}-channel {substitute.image_size} px images with {substitute.num_classes} classes, "
            f"the classifier {classifier.in_channels}-channel {classifier.image_size} px with {classifier.num_classes}: name a substitute "
            "trained on the classifier's data (--substitute)"
        )


def attack_budget(attack: AttackConfig, threat: str, eot: int, purifier: Purifier) -> dict:
    """AttackConfig.budget() with the purifier draws the attacker spent per step folded into the gradient
    count: the threat's EOT for a stochastic purifier, one for a deterministic one, which the defended
    model draws once whatever EOT says (None stays None: an attack with its own schedule has no count)."""
    budget = attack.budget()
    draws = threat_model(threat).draws_per_step(eot) if purifier.stochastic else 1
    evaluations = budget["gradient_evaluations"]
    return {**budget, "threat_eot": draws, "gradient_evaluations": None if evaluations is None else evaluations * draws}


def key_fields(cell: Mapping[str, Any]) -> dict[str, str]:
    """What a robust cell's store key adds (core.results.keyed_config) for a change in how its attack
    runs: the APGD family against a model that draws noise (an attacker through a stochastic purifier)
    returns iterates, not torchattacks' inputs (library.BestLossIterates), so those cells are computed
    anew; every other cell, grey-box, transfer and deterministic ones included, keeps its key."""
    attack, threat, purifier = cell.get("attack"), cell.get("threat"), cell.get("purifier")
    if cell.get("kind") != "robust" or not (attack and threat and purifier):
        return {}
    against_noise = threat_model(threat).goes_through_purifier and PURIFIERS.get(purifier["name"]).stochastic
    return {"unfooled_images": "best-loss iterate"} if against_noise and ATTACKS.get(attack["name"]).best_loss_against_noise else {}


def _minimal_attack_evidence(attack: AttackConfig, purifier: Purifier, threat: ThreatModel, robust_metrics: dict) -> dict:
    """For a minimal-perturbation attack: its perturbation summary, and the convergence check where the
    accuracy left can only be the attack's failure: no purifier, and crafted on the classifier itself (a
    transfer example may miss the classifier however well it fooled the substitute). Empty for a bounded
    attack, whose eps says its size."""
    if attack.bounded:
        return {}
    evidence = {"perturbation": robust_metrics["perturbation"]}
    if not purifier.changes_image and not threat.needs_substitute:
        evidence["convergence_check"] = check_minimal_attack_converged(attack.name, robust_metrics["one_shot_accuracy"]).to_dict()
    return evidence


def evaluate_attack(config: EvaluationConfig, model: XrayClassifier, progress: bool = False) -> dict:
    """Clean and adversarial figures of classifier(purifier(.)) under one attack and threat model.

    Each figure's 95 % interval sits under its `run_metrics` name in `confidence_95` (the clean run's)
    or `robust.confidence_95`. A minimal-perturbation attack has no eps, so the size of what it changed
    and its success rate come with it (`perturbation`), and against the bare classifier, crafted on it,
    whether it converged (`convergence_check`): without them its robust accuracy says nothing."""
    attack = config.attack
    if attack is None:
        raise PurifyLabError("evaluate_attack needs an attack (config.attack)")
    threat = threat_model(config.threat)
    purifier = create_purifier(config.purifier, **config.purifier_params)
    threat.check_purifier(purifier)  # before the clean pass, which runs no attack
    substitute = None
    if threat.needs_substitute:
        substitute = create_classifier(config.substitute, pretrained=True, weights=config.substitute_weights)
        check_substitute_fits(substitute, model, config.substitute)
    config = dataclasses.replace(config, split=resolve_split(config.data, config.split, model.card))
    data = load_split(config.data, config.split, model.image_size, config.limit, progress=progress, channels=model.in_channels)
    model.check_classes(data.classes, f"--data {config.data}")
    options = dict(redraws=config.redraws, seed=config.seed, batch_size=config.attack_batch_size, progress=progress)
    clean = robust_run(model, purifier, data.images, data.labels, None, config.threat, **options)
    adversarial = robust_run(model, purifier, data.images, data.labels, attack, config.threat, substitute=substitute, eot=config.eot, **options)
    clean_metrics = run_metrics(clean, config.bootstrap, config.seed, data.classes)
    robust_metrics = run_metrics(adversarial, config.bootstrap, config.seed, data.classes)
    peaks = [value for value in (clean.peak_gpu_memory, adversarial.peak_gpu_memory) if value is not None]
    budget = attack_budget(attack, config.threat, config.eot, purifier)
    return {
        "config": asdict(config),
        **{
            key: clean_metrics[key]
            for key in ("n", "accuracy", "balanced_accuracy", "auroc", "sensitivity", "specificity", "ece", "confidence_95", "bootstrap_samples")
        },
        "clean_balanced_accuracy": clean_metrics["balanced_accuracy"],
        "robust_balanced_accuracy": robust_metrics["balanced_accuracy"],
        "clean_accuracy": clean_metrics["accuracy"],
        "clean_accuracy_worst_of_k": clean_metrics["worst_case_accuracy"],
        "clean_balanced_accuracy_worst_of_k": clean_metrics["worst_case_balanced_accuracy"],
        "robust_accuracy": robust_metrics["one_shot_accuracy"],
        "robust_accuracy_worst_of_k": robust_metrics["worst_case_accuracy"],
        "robust_balanced_accuracy_worst_of_k": robust_metrics["worst_case_balanced_accuracy"],
        # DensePure's majority vote over the same k draws (the attacker still follows their mean).
        "clean_accuracy_majority_of_k": clean_metrics["majority_accuracy"],
        "clean_balanced_accuracy_majority_of_k": clean_metrics["majority_balanced_accuracy"],
        "robust_accuracy_majority_of_k": robust_metrics["majority_accuracy"],
        "robust_balanced_accuracy_majority_of_k": robust_metrics["majority_balanced_accuracy"],
        "redraws": robust_metrics["redraws"],
        "robust": {key: robust_metrics[key] for key in ("balanced_accuracy", "auroc", "sensitivity", "confidence_95")},
        **_minimal_attack_evidence(attack, purifier, threat, robust_metrics),
        "data": data.describe(config.data),
        "threat_model": {"name": threat.name, "description": threat.describe(budget["threat_eot"]), "eot": config.eot},
        "attack": attack.resolved(),
        "budget": budget,
        "seconds_per_image": round(adversarial.seconds / max(len(data.labels), 1), 4),
        "nfe": purifier.nfe(),
        "peak_gpu_memory": max(peaks) if peaks else None,
        "classes": list(data.classes),
        "data_hash": data.data_hash,
        "image_size": model.image_size,
        **model.provenance(),
        "substitute_sha256": (substitute.card or {}).get("sha256") if substitute is not None else None,
        "purifier": purifier.describe(),
        "loaded_weights": weights_loaded_by(model, purifier, substitute),
        "device": adversarial.device,  # the clean pass ran there too
        "seconds": round(clean.seconds + adversarial.seconds, 3),
        # over the same seconds as printed beside it: the clean pass and the attacked one together
        "images_per_second": images_per_second(len(data.labels), clean.seconds + adversarial.seconds),
    }
