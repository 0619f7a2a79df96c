"""Clean evaluation of a registered classifier on a class-per-folder directory.

`EvaluationConfig` names everything that changes the numbers; `evaluate` returns JSON-ready figures
with 95 % intervals (Clopper-Pearson for accuracy and sensitivity, a Bonferroni mean of per-class
Clopper-Pearson bounds for balanced accuracy, a bootstrap for AUROC) and the SHA-256 of every weights
file that produced them (`loaded_weights`). With an attack it hands over to `core.attacks.robust.evaluate_attack`, imported
only then: trainers measure their models here without importing torchattacks.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from core.attacks.config import AttackConfig
from core.data.loading import load_split, resolve_split
from core.data.sources import data_listing
from core.defended import MAX_REDRAWS, frozen_eval
from core.devices import device_name
from core.errors import PurifyLabError, check_range, check_types
from core.io import validate_image_tensor
from core.metrics import classification_metrics
from core.models import XrayClassifier, create_classifier
from core.purifiers import Purifier, create_purifier, purifier_config
from core.weights import reads_through_note


@torch.inference_mode()
def predict_probabilities(
    model: XrayClassifier, images: torch.Tensor, batch_size: int = 100, purifier: Purifier | None = None, seed: int = 0, progress: bool = False
) -> np.ndarray:
    """Class probabilities (N, 2) for uint8 or [0, 1] float images, in batches, purified first if asked;
    any other scale (0-255 floats, other integers) or a NaN is refused in one line, not read as an X-ray.
    `progress` shows the attacked pass's batch bar on stderr: a purified clean pass can run for minutes.
    Runs in eval mode and hands the model back in the mode it came in (a trainer's model mid-epoch)."""
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise PurifyLabError(f"batch size must be >= 1, got {batch_size}")
    if not isinstance(images, torch.Tensor):
        raise PurifyLabError(f"images must be a torch.Tensor; got {type(images).__name__}")
    device = next(model.parameters()).device
    outputs = []
    with frozen_eval(model):
        for start in tqdm(range(0, images.shape[0], batch_size), desc="batches", unit="batch", leave=False, disable=not progress):
            batch = images[start : start + batch_size].to(device)
            batch = validate_image_tensor(batch.float().div(255.0) if batch.dtype == torch.uint8 else batch, channels=model.in_channels)
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
    # Adversarial evaluation (attack=None: clean only); its seed is the attack's own.
    attack: AttackConfig | None = None
    threat: str = "grey"
    eot: int = 1  # purifier draws per attack step (bpda-eot, white)
    redraws: int = 1  # purifier draws at test time; worst case over them is reported
    substitute: str = "substitute"  # the black-box model of threat 'transfer'
    substitute_weights: str | None = None
    attack_batch_size: int = 16

    def __post_init__(self) -> None:
        if self.attack is not None:  # a name or a dict gets its own words before the field types are checked
            from core.attacks.library import check_attack_config

            check_attack_config(self.attack)
        check_types(self)  # limit="4" or batch_size=2.5 failed deep in numpy with a raw TypeError
        check_range("redraws", self.redraws, 1, MAX_REDRAWS)
        if self.attack is None:  # a clean run would record them beside its figures, never used
            for setting in dataclasses.fields(self):
                value = getattr(self, setting.name)
                if setting.name in ATTACK_SETTINGS and value != setting.default:
                    raise PurifyLabError(
                        f"{setting.name}={value!r} sets the attacked run, but attack is None; drop {setting.name} or give attack=AttackConfig(...)"
                    )
            return
        from core.attacks import threat_model

        threat_model(self.threat).check_eot(self.eot)  # validated once, here, before any data is read


# The EvaluationConfig fields only an attacked run reads (`evaluate_attack`).
ATTACK_SETTINGS = ("threat", "eot", "redraws")


def evaluate(config: EvaluationConfig, model: XrayClassifier | None = None, progress: bool = False, device: str = "cpu") -> dict:
    """Accuracy, balanced accuracy, AUROC, per-class sensitivity and their 95 % intervals (exact Clopper-Pearson; bootstrap for AUROC only);
    with `config.attack`, also robust accuracy under `config.threat` (see `evaluate_attack`). A `model` passed in
    is recorded under its card's name, not `config.classifier`: the figures are that model's. The clean pass
    runs where the model is: one built here on `device` (the CLI's --device), never a GPU a caller did not ask for."""
    listing = data_listing(config.data, config.split)  # an unreadable --data is refused before the model is built
    if model is None:
        model = create_classifier(config.classifier, pretrained=True, weights=config.weights).to(device)
    elif (model.card or {}).get("name") is not None:  # the result and its note name the model that was read
        config = dataclasses.replace(config, classifier=model.card["name"])
    model.check_classes(listing.classes, f"--data {config.data}")  # before any pixel is decoded
    note = _reads_through_note(config, model)
    if config.attack is not None:
        config.attack.check_fits_input(model.in_channels, model.image_size, config.classifier)  # before the clean pass
        from core.attacks.robust import evaluate_attack

        return {**evaluate_attack(config, model, progress=progress), **note}
    config = dataclasses.replace(config, split=resolve_split(config.data, config.split, model.card))
    purifier = None if config.purifier == "none" else create_purifier(config.purifier, **config.purifier_params).to(next(model.parameters()).device)
    data = load_split(config.data, config.split, model.image_size, config.limit, progress=progress, channels=model.in_channels)
    model.check_classes(data.classes, f"--data {config.data}")
    started = time.perf_counter()
    probabilities = predict_probabilities(model, data.images, config.batch_size, purifier, config.seed, progress=progress)
    seconds = time.perf_counter() - started
    metrics = classification_metrics(data.labels.numpy(), probabilities, bootstrap=config.bootstrap, seed=config.seed, class_names=data.classes)
    return {
        "config": asdict(config),
        **metrics.to_dict(),
        "data": data.describe(config.data),
        "classes": list(data.classes),
        "data_hash": data.data_hash,
        "image_size": model.image_size,
        **model.provenance(),
        "purifier": purifier.describe() if purifier is not None else {"purifier": "none"},
        "loaded_weights": weights_loaded_by(model, purifier),
        "device": device_name(model),  # where predict_probabilities ran: the model's device
        "seconds": round(seconds, 3),
        "images_per_second": images_per_second(len(data.labels), seconds),
        **note,
    }


def images_per_second(images: int, seconds: float) -> float:
    """The rate to 3 significant digits: rounded to 0.1, a slow attacked run's 0.034 images/s read as 0.0."""
    return float(f"{images / max(seconds, 1e-9):.3g}")


def weights_loaded_by(*networks: XrayClassifier | Purifier | None) -> dict[str, str]:
    """File name -> SHA-256 of every weights file the run's networks loaded (None: one it did without),
    from the cards each file was checked against: a caller records them without building the networks again."""
    loaded: dict[str, str] = {}
    for network in networks:
        if network is not None:
            loaded.update(network.loaded_weights())
    return dict(sorted(loaded.items()))


def _reads_through_note(config: EvaluationConfig, model: XrayClassifier) -> dict[str, str]:
    """{"reads_through_note": ...} when the classifier was trained and calibrated to read through a
    purifier this run does not use (its figures are then not its card's), else {}."""
    through = (model.card or {}).get("reads_through")
    if not through:
        return {}
    if purifier_config(config.purifier, **config.purifier_params) == purifier_config(through["purifier"], **through["params"]):
        return {}
    return {"reads_through_note": reads_through_note(config.classifier, model.card)}
