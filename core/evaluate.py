"""Clean and adversarial evaluation of a registered classifier on a class-per-folder directory.

`EvaluationConfig` names everything that changes the numbers; `evaluate` returns JSON-ready figures
with bootstrap intervals and the SHA-256 of the weights that produced them. With an attack it also
crafts adversarial examples under a stated threat model (`robust_run`, shared with the tables) and
reports clean and robust accuracy side by side, with the worst case over purifier re-draws.

`robust_run` cuts the data into fixed batches and seeds each batch from its index, so the numbers
do not depend on how the batches are spread over processes: under `accelerate launch` each process
takes a contiguous share of the batches (`PartialState.split_between_processes`) and the shares are
merged with `gather_object`; a single process needs nothing extra.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.data.loading import LoadedSplit, load_split
from core.attacks import THREAT_MODELS, AttackConfig, craft, evaluate_defended
from core.errors import PurifyLabError
from core.metrics import classification_metrics
from core.models import XrayClassifier, create_classifier
from core.purifiers import Purifier, create_purifier

@torch.inference_mode()
def predict_probabilities(
    model: XrayClassifier, images: torch.Tensor, batch_size: int = 100, purifier: Purifier | None = None, seed: int = 0
) -> np.ndarray:
    """Class probabilities (N, 2) for uint8 or [0, 1] float images, in batches, purified first if asked."""
    if batch_size < 1:
        raise PurifyLabError(f"batch size must be >= 1, got {batch_size}")
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start : start + batch_size].to(device)
        batch = batch.float().div(255.0) if batch.dtype == torch.uint8 else batch.float()
        if purifier is not None:
            batch = purifier.purify(batch, seed=seed + start)
        outputs.append(torch.softmax(model(batch).float(), dim=1).cpu())
    return torch.cat(outputs).numpy()


@dataclass(frozen=True)
class EvaluationConfig:
    data: str
    classifier: str = "vit"
    # None: "val" when `data` is the folder the classifier was trained on (its patient-disjoint
    # validation part), else "all"; never images the model was trained on.
    split: str | None = None
    limit: int | None = None
    batch_size: int = 100
    bootstrap: int = 1000
    seed: int = 0
    weights: str | None = None  # a specific safetensors file instead of weights/<classifier>
    purifier: str = "none"
    purifier_params: dict = field(default_factory=dict)
    # Adversarial evaluation (attack=None: clean only). eps is in the [0, 1] pixel scale.
    attack: str | None = None
    norm: str = "linf"
    eps: float = 0.03
    steps: int = 10
    threat: str = "grey"
    eot: int = 1  # purifier draws per attack step (bpda-eot, white)
    redraws: int = 1  # purifier draws at test time; worst case over them is reported
    substitute: str = "substitute"  # the black-box model of threat 'transfer'
    substitute_weights: str | None = None
    attack_batch_size: int = 16

    def attack_config(self) -> AttackConfig | None:
        if self.attack is None:
            return None
        return AttackConfig(name=self.attack, norm=self.norm, eps=self.eps, steps=self.steps, seed=self.seed)


def evaluate(config: EvaluationConfig, model: XrayClassifier | None = None, progress: bool = False) -> dict:
    """Accuracy, balanced accuracy, AUROC, per-class sensitivity and 95 % bootstrap intervals;
    with `config.attack`, also robust accuracy under `config.threat` (see `evaluate_attack`)."""
    if model is None:
        model = create_classifier(config.classifier, pretrained=True, weights=config.weights)
    if config.attack is not None:
        return evaluate_attack(config, model, progress=progress)
    config = resolve_split(config, model)
    purifier = None if config.purifier == "none" else create_purifier(config.purifier, **config.purifier_params)
    data = load_split(config.data, config.split, model.image_size, config.limit, progress=progress, channels=model.in_channels)
    started = time.perf_counter()
    probabilities = predict_probabilities(model, data.images, config.batch_size, purifier, config.seed)
    seconds = time.perf_counter() - started
    metrics = classification_metrics(
        data.labels.numpy(), probabilities, bootstrap=config.bootstrap, seed=config.seed, class_names=data.classes
    )
    card = model.card or {}
    return {
        "config": asdict(config),
        **metrics.to_dict(),
        "data": describe_data(config, data),
        "classes": list(data.classes),
        "data_hash": data.data_hash,
        "image_size": model.image_size,
        "classifier_sha256": card.get("sha256"),
        "purifier": purifier.describe() if purifier is not None else {"purifier": "none"},
        "seconds": round(seconds, 3),
        "images_per_second": round(len(data.labels) / max(seconds, 1e-9), 1),
    }


def resolve_split(config: EvaluationConfig, model: XrayClassifier) -> EvaluationConfig:
    """The config with its split named: the model's own training folder is read only on its
    validation part; any other folder whole."""
    from core.data import data_hash_of_folder

    trained_on = ((model.card or {}).get("data") or {}).get("data_hash")
    own_folder = trained_on is not None and trained_on == data_hash_of_folder(config.data)
    if config.split is None:
        return dataclasses.replace(config, split="val" if own_folder else "all")
    return config


def describe_data(config: EvaluationConfig, data: LoadedSplit) -> dict:
    """Which images a figure comes from, in words a reader can check."""
    from core.data.locations import portable_path

    return {"folder": portable_path(config.data), "split": config.split, "n": int(len(data.labels)), "data_hash": data.data_hash}


def format_report(result: dict) -> str:
    intervals = result["confidence_95"]

    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    def line(key: str, value: float | None) -> str:
        low, high = intervals.get(key, [None, None])
        return f"{key:<22} {number(value)}  [{number(low)}, {number(high)}]"

    data = result.get("data") or {"folder": result["config"]["data"], "split": result["config"]["split"]}
    rows = [
        f"classifier {result['config']['classifier']}  purifier {result['config']['purifier']}  "
        f"data {data['folder']} split {data['split']}  n {result['n']}",
        line("accuracy", result["accuracy"]),
        line("balanced_accuracy", result["balanced_accuracy"]),
        line("auroc", result["auroc"]),
    ]
    rows += [line(f"sensitivity_{name}", value) for name, value in result["sensitivity"].items()]
    if result.get("ece") is not None:
        rows.append(f"{'ece':<22} {result['ece']:.4f}")
    if "robust_accuracy" in result:
        threat, budget = result["threat_model"], result["budget"]
        rows += [
            f"attack {result['attack']['name']} {budget['norm']} eps={budget['eps']} steps={budget['steps']}  "
            f"threat {threat['name']} ({threat['description']})",
            f"{'clean_accuracy':<22} {result['clean_accuracy']:.4f}",
            f"{'robust_accuracy':<22} {result['robust_accuracy']:.4f}  (one draw)",
            f"{'robust_worst_of_k':<22} {result['robust_accuracy_worst_of_k']:.4f}  (k={result['redraws']})",
            f"seconds/image {result['seconds_per_image']}  nfe {result['nfe']}",
        ]
    rows.append(f"seconds {result['seconds']:.2f} ({result['images_per_second']} images/s)")
    return "\n".join(rows)


def write_json(result: dict, path: str | Path) -> None:
    """The result at `path` and its resolved config beside it (`NAME.config.json`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if "config" in result:
        config_path(path).write_text(json.dumps(result["config"], indent=2, sort_keys=True) + "\n")


def config_path(result_path: str | Path) -> Path:
    result_path = Path(result_path)
    return result_path.with_name(f"{result_path.stem}.config.json")


# --- Adversarial evaluation -------------------------------------------------------------------

# Offsets keep the attacker's purifier draws apart from the test-time draws: an attacker who had
# optimised against the exact noise used at test time would overstate the attack.
_ATTACKER_SEED_OFFSET = 1_000_003


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

    @property
    def one_shot_accuracy(self) -> float:
        return float(self.correct[0].mean())

    @property
    def worst_case_accuracy(self) -> float:
        return float(self.correct.all(axis=0).mean())


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
    share them (grey-box and transfer examples do not depend on the purifier).
    """
    from accelerate.utils import gather_object
    from tqdm.auto import tqdm

    if threat not in THREAT_MODELS:
        raise PurifyLabError(f"unknown threat model '{threat}'; choose one of: {', '.join(THREAT_MODELS)}")
    if batch_size < 1:
        raise PurifyLabError(f"batch size must be >= 1, got {batch_size}")
    if attack is not None and threat == "white" and not getattr(purifier, "exact_gradients", True):
        # Its forward already passes gradients straight through: a 'white' number would be a BPDA one.
        raise PurifyLabError(f"purifier '{purifier.name}' has no exact gradients; attack it with threat 'bpda' or 'bpda-eot'")
    state = process_state()
    device = state.device
    classifier = classifier.to(device)
    purifier = purifier.to(device)
    substitute = substitute.to(device) if substitute is not None else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    starts = list(range(0, images.shape[0], batch_size))
    started = time.perf_counter()
    mine: list[tuple[int, np.ndarray, np.ndarray]] = []
    with state.split_between_processes(list(enumerate(starts))) as shard:
        for index, start in tqdm(shard, desc="batches", unit="batch", leave=False, disable=not (progress and state.is_main_process)):
            x = images[start : start + batch_size].to(device)
            x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
            y = labels[start : start + batch_size].to(device)
            adversarial = x
            if attack is not None:
                key = (cache_key, index)
                if adversarial_cache is not None and cache_key is not None and key in adversarial_cache:
                    adversarial = adversarial_cache[key].to(device)
                else:
                    batch_attack = dataclasses.replace(attack, seed=attack.seed + index)
                    adversarial = craft(
                        threat, classifier, purifier, x, y, batch_attack, substitute=substitute, eot=eot,
                        seed=seed + _ATTACKER_SEED_OFFSET + index,
                    )
                    if adversarial_cache is not None and cache_key is not None:
                        adversarial_cache[key] = adversarial.cpu()
            score = evaluate_defended(classifier, purifier, adversarial, y, redraws=redraws, seed=seed + index * redraws, batch_size=batch_size)
            correct = (score.predictions == y.cpu()).numpy()
            mine.append((index, score.probabilities.numpy(), correct))
    shards = gather_object(mine) if state.num_processes > 1 else mine
    shards = sorted(shards, key=lambda item: item[0])
    peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
    return RobustRun(
        labels=labels.numpy(),
        probabilities=np.concatenate([item[1] for item in shards]),
        correct=np.concatenate([item[2] for item in shards], axis=1),
        seconds=time.perf_counter() - started,
        peak_gpu_memory=peak,
    )


def run_metrics(run: RobustRun, bootstrap: int = 1000, seed: int = 0, class_names: tuple[str, ...] | None = None) -> dict:
    """The classification metrics of the first draw plus one-shot and worst-case accuracy."""
    metrics = classification_metrics(run.labels, run.probabilities, bootstrap=bootstrap, seed=seed, class_names=class_names).to_dict()
    return {
        **metrics,
        "one_shot_accuracy": run.one_shot_accuracy,
        "worst_case_accuracy": run.worst_case_accuracy,
        "worst_case_balanced_accuracy": worst_case_balanced_accuracy(run.correct, run.labels),
        "redraws": int(run.correct.shape[0]),
    }


def worst_case_balanced_accuracy(correct: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the share of images right under every purifier draw (rows of `correct`)."""
    always = np.asarray(correct).all(axis=0)
    labels = np.asarray(labels)
    return float(np.mean([always[labels == c].mean() for c in np.unique(labels)]))


def attack_budget(attack: AttackConfig, threat: str, eot: int) -> dict:
    """AttackConfig.budget() with the threat's purifier draws per step folded into the gradient count."""
    budget = attack.budget()
    draws = eot if threat in ("bpda-eot", "white") else 1
    return {**budget, "threat_eot": draws, "gradient_evaluations": budget["gradient_evaluations"] * draws}


def build_purifier(name: str, params: dict | None = None) -> Purifier:
    """create_purifier, with 'none' as the identity so every path goes through the same scoring."""
    return create_purifier(name, **(params or {}))


def evaluate_attack(config: EvaluationConfig, model: XrayClassifier, progress: bool = False) -> dict:
    """Clean and adversarial figures of classifier(purifier(.)) under one attack and threat model."""
    attack = config.attack_config()
    if attack is None:
        raise PurifyLabError("evaluate_attack needs an attack name (config.attack)")
    if config.threat not in THREAT_MODELS:
        raise PurifyLabError(f"unknown threat model '{config.threat}'; choose one of: {', '.join(THREAT_MODELS)}")
    if not 1 <= config.redraws <= 1000:
        raise PurifyLabError(f"redraws={config.redraws} is outside the allowed range [1, 1000]")
    purifier = build_purifier(config.purifier, config.purifier_params)
    substitute = None
    if config.threat == "transfer":
        substitute = create_classifier(config.substitute, pretrained=True, weights=config.substitute_weights)
    config = resolve_split(config, model)
    data = load_split(config.data, config.split, model.image_size, config.limit, progress=progress, channels=model.in_channels)
    options = dict(redraws=config.redraws, seed=config.seed, batch_size=config.attack_batch_size, progress=progress)
    clean = robust_run(model, purifier, data.images, data.labels, None, config.threat, **options)
    adversarial = robust_run(
        model, purifier, data.images, data.labels, attack, config.threat, substitute=substitute, eot=config.eot, **options
    )
    clean_metrics = run_metrics(clean, config.bootstrap, config.seed, data.classes)
    robust_metrics = run_metrics(adversarial, config.bootstrap, config.seed, data.classes)
    card = model.card or {}
    peaks = [value for value in (clean.peak_gpu_memory, adversarial.peak_gpu_memory) if value is not None]
    return {
        "config": asdict(config),
        **{key: clean_metrics[key] for key in ("n", "accuracy", "balanced_accuracy", "auroc", "sensitivity", "specificity", "ece", "confidence_95", "bootstrap_samples")},
        "clean_balanced_accuracy": clean_metrics["balanced_accuracy"],
        "robust_balanced_accuracy": robust_metrics["balanced_accuracy"],
        "clean_accuracy": clean_metrics["accuracy"],
        "clean_accuracy_worst_of_k": clean_metrics["worst_case_accuracy"],
        "robust_accuracy": robust_metrics["one_shot_accuracy"],
        "robust_accuracy_worst_of_k": robust_metrics["worst_case_accuracy"],
        "redraws": robust_metrics["redraws"],
        "robust": {key: robust_metrics[key] for key in ("balanced_accuracy", "auroc", "sensitivity", "confidence_95")},
        "data": describe_data(config, data),
        "threat_model": {"name": config.threat, "description": THREAT_MODELS[config.threat], "eot": config.eot},
        "attack": attack.resolved(),
        "budget": attack_budget(attack, config.threat, config.eot),
        "seconds_per_image": round(adversarial.seconds / max(len(data.labels), 1), 4),
        "nfe": purifier.nfe(),
        "peak_gpu_memory": max(peaks) if peaks else None,
        "classes": list(data.classes),
        "data_hash": data.data_hash,
        "image_size": model.image_size,
        "classifier_sha256": card.get("sha256"),
        "substitute_sha256": (substitute.card or {}).get("sha256") if substitute is not None else None,
        "purifier": purifier.describe(),
        "seconds": round(clean.seconds + adversarial.seconds, 3),
        "images_per_second": round(len(data.labels) / max(adversarial.seconds, 1e-9), 1),
    }


def parse_purifier_spec(spec: str) -> tuple[str, dict[str, str]]:
    """'ddpm:t_star=0.04,steps=5' -> ('ddpm', {'t_star': '0.04', 'steps': '5'})."""
    name, _, rest = spec.partition(":")
    params: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise PurifyLabError(f"purifier parameter '{item}' in '{spec}' is not of the form key=value")
        params[key.strip()] = value.strip()
    if not name.strip():
        raise PurifyLabError(f"purifier '{spec}' has no name; write NAME or NAME:k=v,...")
    return name.strip(), params


def attack_image(
    image: str | Path,
    out: str | Path,
    *,
    classifier: str = "vit",
    attack: str = "pgd",
    eps: float = 0.03,
    norm: str = "linf",
    steps: int = 10,
    threat: str = "grey",
    purifier: str = "none",
    purifier_params: dict | None = None,
    eot: int = 1,
    weights: str | Path | None = None,
    seed: int = 0,
) -> dict:
    """Attack one image file; the label is the defended model's own reading of the clean image.

    Writes `out` (PNG, at the model's resolution) and its resolved config beside it (`out`.json).
    """
    from core.io import check_output_png, load_image, save_image, to_model_input

    out = check_output_png(out)
    if threat == "transfer":
        raise PurifyLabError("threat 'transfer' needs a data set to measure transfer; use 'purifylab evaluate --threat transfer'")
    config = AttackConfig(name=attack, norm=norm, eps=eps, steps=steps, seed=seed)
    model = create_classifier(classifier, pretrained=True, weights=weights)
    defense = build_purifier(purifier, purifier_params)
    loaded = load_image(image)
    x = to_model_input(loaded, model.image_size)
    clean_run = robust_run(model, defense, x, torch.zeros(1, dtype=torch.long), None, threat, seed=seed)
    label = torch.as_tensor(clean_run.probabilities.argmax(1))
    adversarial = craft(threat, model, defense, x, label, config, eot=eot, seed=seed + _ATTACKER_SEED_OFFSET)
    adversarial_probabilities = robust_run(model, defense, adversarial, label, None, threat, seed=seed).probabilities[0]
    save_image(adversarial, out)
    width, height = loaded.original_size
    record = {
        "input": str(image),
        "input_size": [height, width],
        "resized_to": [model.image_size, model.image_size],
        "output": str(out),
        "classifier": classifier,
        "classifier_sha256": (model.card or {}).get("sha256"),
        "purifier": defense.describe(),
        "threat_model": {"name": threat, "description": THREAT_MODELS[threat], "eot": eot},
        "attack": config.resolved(),
        "budget": attack_budget(config, threat, eot),
        "label": int(label[0]),
        "clean_probabilities": [round(float(p), 6) for p in clean_run.probabilities[0]],
        "adversarial_probabilities": [round(float(p), 6) for p in adversarial_probabilities],
        "flipped": bool(adversarial_probabilities.argmax() != int(label[0])),
        "linf_distance": float((adversarial - x).abs().max()),
        "l2_distance": float((adversarial - x).flatten().norm()),
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record
