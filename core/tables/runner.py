"""Cells of a preset: each a pure function of its config, computed once through the results store.

A cell is one number-producing unit: (classifier, purifier, attack, threat, data slice, seed) for a
table entry, one eps sweep of the undefended model for the collapse check, one purifier setting of a
sweep, or one attack of a detection ROC. Its config carries the SHA-256 of every weight file it
uses, so retrained weights never reuse stale numbers, and `run_cells` skips cells already stored.

Loaded models, data and grey-box adversarial batches are memoised inside one `PresetRunner`: they
are functions of the cell config too, so sharing them changes no number, only the time.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from core.attacks import AttackConfig, craft, threat_model
from core.attacks.robust import RobustRun, attack_budget, robust_run, run_metrics
from core.data.loading import LoadedSplit, content_hash, load_split
from core.data.locations import portable_path
from core.devices import device_name
from core.errors import PurifyLabError
from core.metrics import auroc
from core.models import create_classifier, weights_path_for
from core.purifiers import PURIFIERS, create_purifier, weights_stem
from core.results import ResultStore, canonical_json, cell_key, run_cells
from core.tables.preset import AttackRow, DetectionSpec, ModelSpec, Preset, PurifierColumn, SweepSpec, TableSpec
from core.tables.render import PRINTED_METRICS
from core.weights import WEIGHTS_DIR, card_path, read_card

ROC_POINTS = 101
# Images purified one at a time in a `show_time` table's cells: enough for a stable mean latency.
BATCH1_TIMING_IMAGES = 8


def _weights_sha(path) -> str | None:
    return read_card(path).get("sha256") if card_path(path).is_file() else None


def model_identity(name: str, weights: str | None) -> dict[str, Any]:
    path = weights if weights is not None else weights_path_for(name)
    card = read_card(path) if card_path(path).is_file() else {}
    identity = {"name": name, "weights": weights, "sha256": card.get("sha256")}
    calibration = card.get("calibration")
    if calibration:  # applied on load: refitting it (`train calibrate`) changes every reading
        identity["calibration"] = {key: calibration[key] for key in ("temperature", "threshold")}
    if name == "sevit":  # the heads sit on the shipped vit: its hash matters too
        identity["backbone_sha256"] = _weights_sha(weights_path_for("vit"))
    return identity


def purifier_identity(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Name, fully resolved parameters (defaults filled in) and the hash of the network it runs."""
    from core.purifiers.base import parse_params

    cls = PURIFIERS.get(name)
    resolved = parse_params(cls.config_type, dict(params)).to_dict()
    stem = weights_stem(name, resolved)
    if stem == cls.weights:  # the default network is implied: cells stored before
        resolved.pop("denoiser", None)  # named denoisers existed keep their keys
    sha = _weights_sha(WEIGHTS_DIR / f"{stem}.safetensors") if stem else None
    return {"name": name, "params": resolved, "weights_sha256": sha}


def roc_curve(negative_scores: np.ndarray, positive_scores: np.ndarray, points: int = ROC_POINTS) -> dict[str, list[float]]:
    """False/true positive rates at `points` thresholds spanning all scores (positive = attacked)."""
    scores = np.concatenate([negative_scores, positive_scores])
    thresholds = np.unique(np.quantile(scores, np.linspace(0, 1, points)))[::-1]
    fpr = [float((negative_scores >= t).mean()) for t in thresholds]
    tpr = [float((positive_scores >= t).mean()) for t in thresholds]
    return {"fpr": [0.0, *fpr, 1.0], "tpr": [0.0, *tpr, 1.0]}


def detection_auroc(clean_scores: np.ndarray, attacked_scores: np.ndarray) -> float:
    labels = np.concatenate([np.zeros(len(clean_scores)), np.ones(len(attacked_scores))])
    return auroc(labels, np.concatenate([clean_scores, attacked_scores]))


class PresetRunner:
    """Builds the cells of a preset and computes them; `run()` returns every cell's metrics by key."""

    def __init__(self, preset: Preset, store: ResultStore, progress: bool = True):
        self.preset = preset
        self.store = store
        self.progress = progress
        self._models: dict[tuple, torch.nn.Module] = {}
        self._purifiers: dict[str, torch.nn.Module] = {}
        self._data: dict[tuple[int, int], LoadedSplit] = {}
        self._adversarial: dict = {}

    # --- shared resources ------------------------------------------------------------------------
    def model(self, name: str, weights: str | None = None) -> torch.nn.Module:
        key = (name, weights)
        if key not in self._models:
            self._models[key] = create_classifier(name, pretrained=True, weights=weights).eval()
        return self._models[key]

    def purifier(self, identity: Mapping[str, Any]) -> torch.nn.Module:
        key = canonical_json([identity["name"], identity["params"]])
        if key not in self._purifiers:
            self._purifiers[key] = create_purifier(identity["name"], **identity["params"]).eval()
        return self._purifiers[key]

    def data(self, classifier: torch.nn.Module) -> LoadedSplit:
        """The preset's split at the classifier's input size and channels, decoded once per shape."""
        key = (classifier.image_size, classifier.in_channels)
        if key not in self._data:
            p = self.preset
            self._data[key] = load_split(p.data, p.split, key[0], p.limit, progress=self.progress, channels=key[1])
        classifier.check_classes(self._data[key].classes, f"data {self.preset.data}")
        return self._data[key]

    def _data_identity(self, classifier: torch.nn.Module) -> dict[str, Any]:
        """The images a cell sees, by content: no path, so the committed store serves any checkout."""
        p, data = self.preset, self.data(classifier)
        identity = {"split": p.split, "limit": self._limit_used(data), "image_size": classifier.image_size, "hash": data.data_hash}
        if classifier.in_channels != 1:  # grey is the X-ray default, which cells stored before colour existed assume
            identity["channels"] = classifier.in_channels
        return identity

    def _limit_used(self, data: LoadedSplit) -> int | None:
        """The preset's limit, or None where the split held fewer images: that limit read the whole split,
        so its cells are the whole split's (`--limit 1000` on 301 X-rays reuses the full run's cells) and
        its outputs count the images read (`Preset.title_counting`)."""
        limit = self.preset.limit
        return None if limit is not None and len(data.labels) < limit else limit

    def _base(self, kind: str) -> dict[str, Any]:
        """What every cell shares. The preset's name is left out on purpose: a cell's numbers depend only
        on its config, so presets that share cells (quick and paper-table1 --limit 32) share them in the store.
        So is the device: the stored cells keep their keys, and `compute` records it in the metrics instead."""
        p = self.preset
        return {"kind": kind, "seed": p.seed, "batch_size": p.batch_size, "bootstrap": p.bootstrap}

    # --- cells -----------------------------------------------------------------------------------
    def robust_cell(self, model: ModelSpec | tuple[str, str | None], column: PurifierColumn | tuple[str, dict], row: AttackRow, threat: str) -> dict[str, Any]:
        name, weights = (model.name, model.weights) if isinstance(model, ModelSpec) else model
        purifier_name, params = (column.purifier, column.params) if isinstance(column, PurifierColumn) else column
        attack = row.attack_config(self.preset.seed)
        classifier = self.model(name, weights)
        if attack:  # an L2 ball wider than the input holds every image: refused here, before any cell is computed
            attack.check_fits_input(classifier.in_channels, classifier.image_size, name)
        cell = {
            **self._base("robust"),
            "classifier": model_identity(name, weights),
            "purifier": purifier_identity(purifier_name, params),
            "attack": attack.resolved() if attack else None,
            "threat": threat if attack else None,
            "eot": threat_model(threat).draws_per_step(self.preset.eot) if attack else 1,
            "redraws": self.preset.redraws,
            "substitute": None,
            "data": self._data_identity(classifier),
        }
        if attack and threat_model(threat).needs_substitute:
            sub = self.preset.substitute
            cell["substitute"] = model_identity(sub.name, sub.weights)
        if attack and threat == "white" and PURIFIERS.get(purifier_name).keeps_saturated_pixels:
            cell["gradient"] = "through saturated pixels"  # cells from before clamp_to_unit are not reused
        if attack and not attack.bounded:  # its norms are its result: a cell stored before they were recorded is not reused
            cell["reports"] = ["perturbation"]
            cell["norms_over"] = "fooled images"  # medians once counted a failed image's 0: those cells are computed anew
        return cell

    def table_cells(self, table: TableSpec) -> list[tuple[dict, dict]]:
        """(placement, cell config) for every entry of `table`; placement says where it is printed."""
        entries = []
        for model in table.classifiers:
            for column, threat in table.placements():
                target = (column.classifier, column.classifier_weights) if column.classifier else (model.name, model.weights)
                for row in table.rows:
                    placement = {"table": table.name, "classifier": model.title, "column": column.label, "threat": threat, "row": row.label}
                    cell = self.robust_cell(target, column, row, threat)
                    if table.show_time:  # the per-image latency is part of what the cell reports
                        cell["batch1_timing_images"] = BATCH1_TIMING_IMAGES
                    entries.append((placement, cell))
        return entries

    def collapse_cell(self, model: ModelSpec) -> dict[str, Any]:
        s = self.preset.sanity
        return {
            **self._base("collapse"),
            "classifier": model_identity(model.name, model.weights),
            "eps": list(s.collapse_eps),
            "steps": s.collapse_steps,
            "data": self._data_identity(self.model(model.name, model.weights)),
        }

    def sweep_cells(self, sweep: SweepSpec) -> list[tuple[dict, dict]]:
        parameter = sweep.parameter
        rows = [AttackRow(label="Clean")]
        if sweep.attack is not None:
            rows.append(sweep.attack)
        entries = []
        for value in sweep.purifier_values():
            column = (sweep.purifier, {**sweep.params, parameter: value})
            for row in rows:
                placement = {"sweep": sweep.name, "parameter": parameter, "value": value, "row": row.label, "threat": sweep.threat}
                model = (sweep.classifier.name, sweep.classifier.weights)
                entries.append((placement, self.robust_cell(model, column, row, sweep.threat)))
        return entries

    def detection_cells(self, spec: DetectionSpec) -> list[tuple[dict, dict]]:
        classifier = self.model(spec.classifier.name, spec.classifier.weights)
        if spec.sevit is not None:
            self._check_sevit_fits(spec, classifier)
        base = {
            **self._base("detection"),
            "classifier": model_identity(spec.classifier.name, spec.classifier.weights),
            "purifier": purifier_identity("diffdefense", spec.purifier_params),
            "sevit": model_identity(spec.sevit.name, spec.sevit.weights) if spec.sevit else None,
            "data": self._data_identity(classifier),
        }
        entries = []
        for row in spec.attacks:
            attack = row.attack_config(self.preset.seed)
            attack.check_fits_input(classifier.in_channels, classifier.image_size, spec.classifier.name)
            entries.append(({"detection": spec.name, "row": row.label}, {**base, "attack": attack.resolved(), "adaptive_weight": 0.0}))
        adaptive = spec.adaptive_attack(self.preset.seed)
        if adaptive is not None:
            placement = {"detection": spec.name, "row": spec.adaptive_label}
            entries.append((placement, {**base, "attack": adaptive.resolved(), "adaptive_weight": spec.adaptive_weight}))
        return entries

    def _check_sevit_fits(self, spec: DetectionSpec, classifier: torch.nn.Module) -> None:
        """SEViT scores the images the classifier reads: one of another size or channel count, or
        answering other classes, is refused here, before any cell is computed, not after the first batch."""
        sevit = self.model(spec.sevit.name, spec.sevit.weights)
        reads, takes = (classifier.image_size, classifier.in_channels), (sevit.image_size, sevit.in_channels)
        if takes != reads:
            raise PurifyLabError(
                f"detection '{spec.name}': sevit '{spec.sevit.name}' takes {takes[0]} px, {takes[1]}-channel images, but classifier "
                f"'{spec.classifier.name}' reads this data as {reads[0]} px, {reads[1]}-channel images; name a sevit of that size or drop sevit"
            )
        sevit.check_classes(self.data(classifier).classes, f"data {self.preset.data}")

    def all_entries(self) -> list[tuple[dict, dict]]:
        entries = []
        collapse_models: dict[str, ModelSpec] = {}
        for table in self.preset.tables:
            entries += self.table_cells(table)
            for model in table.classifiers:
                collapse_models.setdefault(model.title, model)
        for sweep in self.preset.sweeps:
            entries += self.sweep_cells(sweep)
        for spec in self.preset.detection:
            entries += self.detection_cells(spec)
        for title, model in collapse_models.items():
            entries.append(({"collapse": title}, self.collapse_cell(model)))
        return entries

    # --- computation -----------------------------------------------------------------------------
    def compute(self, cell: Mapping[str, Any]) -> dict[str, Any]:
        kind = cell["kind"]
        if kind == "robust":
            return self._compute_robust(cell)
        if kind == "collapse":
            return self._compute_collapse(cell)
        if kind == "detection":
            return self._compute_detection(cell)
        raise PurifyLabError(f"unknown cell kind '{kind}'")

    def _attack(self, cell: Mapping[str, Any]) -> AttackConfig | None:
        if cell["attack"] is None:
            return None
        fields = {k: cell["attack"][k] for k in ("name", "norm", "eps", "steps", "alpha", "restarts", "eot_iter", "seed")}
        return AttackConfig(**fields)

    def _compute_robust(self, cell: Mapping[str, Any]) -> dict[str, Any]:
        spec = cell["classifier"]
        classifier = self.model(spec["name"], spec["weights"])
        purifier = self.purifier(cell["purifier"])
        data = self.data(classifier)
        attack = self._attack(cell)
        threat = cell["threat"] or "grey"
        substitute = None
        if cell["substitute"] is not None:
            substitute = self.model(cell["substitute"]["name"], cell["substitute"]["weights"])
        cache_key = None
        if attack is not None and not threat_model(threat).goes_through_purifier:
            # Grey-box and transfer examples never see the purifier: one crafting serves every column.
            cache_key = canonical_json([spec, cell["substitute"], cell["attack"], threat, cell["data"], cell["seed"], cell["batch_size"]])
        run = robust_run(
            classifier, purifier, data.images, data.labels, attack, threat, substitute=substitute, eot=cell["eot"],
            redraws=cell["redraws"], seed=cell["seed"], batch_size=cell["batch_size"],
            adversarial_cache=self._adversarial, cache_key=cache_key, progress=self.progress,
        )  # fmt: skip
        metrics = run_metrics(run, bootstrap=cell["bootstrap"], seed=cell["seed"], class_names=data.classes)
        return {
            **metrics,
            "nfe": purifier.nfe(),
            "budget": attack_budget(attack, threat, cell["eot"], purifier) if attack else None,
            "timing": self._timing(run, purifier, data.images[: cell.get("batch1_timing_images", 0)], cell["batch_size"]),
            "device": run.device,
        }

    @staticmethod
    def _timing(run: RobustRun, purifier: torch.nn.Module, batch1_images: torch.Tensor, batch_size: int) -> dict[str, Any]:
        """Seconds per image: the whole cell, crafting alone, and the purifier alone (per draw) at the
        cell's batch size and, given images, one image at a time (the paper's per-image latency)."""
        n = max(len(run.labels), 1)
        timing = {
            "seconds_per_image": run.seconds / n,
            "attack_seconds_per_image": run.attack_seconds / n,
            "purify_seconds_per_image": run.purify_seconds / (n * run.correct.shape[0]),
            "purify_batch": batch_size,
            "peak_gpu_memory": run.peak_gpu_memory,
        }
        if len(batch1_images):
            device = next(purifier.parameters(), torch.empty(0)).device  # where robust_run put it
            images = batch1_images.to(device).float().div(255.0)
            started = time.perf_counter()
            for index, image in enumerate(images.split(1)):
                purifier.purify(image, seed=index)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            timing["purify_seconds_per_image_batch1"] = (time.perf_counter() - started) / len(batch1_images)
        return timing

    def _compute_collapse(self, cell: Mapping[str, Any]) -> dict[str, Any]:
        spec = cell["classifier"]
        classifier = self.model(spec["name"], spec["weights"])
        data = self.data(classifier)
        identity = create_purifier("none")
        accuracy = {}
        for eps in cell["eps"]:
            attack = AttackConfig(name="pgd", norm="linf", eps=float(eps), steps=cell["steps"], seed=cell["seed"])
            run = robust_run(classifier, identity, data.images, data.labels, attack, "grey", seed=cell["seed"], batch_size=cell["batch_size"])
            accuracy[str(float(eps))] = run.one_shot_accuracy
        return {"accuracy_by_eps": accuracy, "device": device_name(classifier)}  # where robust_run placed it

    def _compute_detection(self, cell: Mapping[str, Any]) -> dict[str, Any]:
        from core.tables.detection import detector_aware_pgd

        spec = cell["classifier"]
        classifier = self.model(spec["name"], spec["weights"])
        purifier = self.purifier(cell["purifier"])
        data = self.data(classifier)
        attack = self._attack(cell)
        sevit = self.model(cell["sevit"]["name"], cell["sevit"]["weights"]) if cell["sevit"] else None
        seed, batch_size = cell["seed"], cell["batch_size"]
        scores: dict[str, list[float]] = {"clean_reconstruction": [], "attacked_reconstruction": [], "clean_sevit": [], "attacked_sevit": []}
        correct = []
        for index, start in enumerate(range(0, data.images.shape[0], batch_size)):
            x = data.images[start : start + batch_size].float().div(255.0)
            y = data.labels[start : start + batch_size]
            batch_attack = dataclasses.replace(attack, seed=attack.seed + index)
            if cell["adaptive_weight"] > 0:
                adversarial = detector_aware_pgd(classifier, purifier, x, y, batch_attack, cell["adaptive_weight"], seed=seed + index)
            else:
                adversarial = craft("grey", classifier, None, x, y, batch_attack)
            purified, attacked_error = purifier.purify_with_score(adversarial, seed=seed + index)
            _, clean_error = purifier.purify_with_score(x, seed=seed + index)
            scores["clean_reconstruction"] += clean_error.tolist()
            scores["attacked_reconstruction"] += attacked_error.tolist()
            with torch.no_grad():
                correct += (classifier(purified).argmax(1) == y).tolist()
            if sevit is not None:
                scores["clean_sevit"] += sevit.detection_score(x).tolist()
                scores["attacked_sevit"] += sevit.detection_score(adversarial).tolist()
        result: dict[str, Any] = {"n": len(correct), "purified_robust_accuracy": float(np.mean(correct)), "device": device_name(classifier)}
        for detector in ("reconstruction", "sevit"):
            clean, attacked = np.asarray(scores[f"clean_{detector}"]), np.asarray(scores[f"attacked_{detector}"])
            if clean.size == 0:
                result[detector] = None
                continue
            result[detector] = {"auroc": detection_auroc(clean, attacked), "roc": roc_curve(clean, attacked)}
        return result

    def _cost(self, cell: Mapping[str, Any]) -> int:
        """Denoiser calls per image of the cell's purifier (0 without one)."""
        identity = cell.get("purifier")
        return self.purifier(identity).nfe() if identity else 0

    def _check_stored(self, cell: Mapping[str, Any]) -> None:
        """A stored cell without a metric its outputs print (an older layout, a hand-edited row) is refused
        by name before any compute, not met as a KeyError once every cell is done; the row is left as it is."""
        stored = self.store.get(cell)
        if stored is None:
            return
        missing = [name for name in (*PRINTED_METRICS.get(cell["kind"], ()), *cell.get("reports", ())) if name not in stored]
        if missing:
            raise PurifyLabError(
                f"cell {cell_key(cell)} in the results store {self.store.path} lacks {', '.join(missing)} (an older layout or a hand-edited row); "
                "delete that row to recompute it, or name another --store"
            )

    def run(self, on_cell: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
        """Every cell's placement, config key and metrics, computing only those not in the store."""
        from core.results import keyed_config

        entries = self.all_entries()
        if self._data:  # every cell's data, by file names: the store checks the files are the ones it has seen
            data = self.preset.data
            self.store.check_data_contents(next(iter(self._data.values())).data_hash, content_hash(data, self.preset.split), portable_path(data))
        unique: dict[str, dict] = {}
        for _, cell in entries:
            unique.setdefault(cell_key(cell), cell)
        for cell in unique.values():
            self._check_stored(cell)
        # Cheapest first (fewest denoiser calls), so an interrupted run has the most cells; order changes no number.
        order = sorted(unique, key=lambda key: self._cost(unique[key]))
        computed = run_cells([unique[key] for key in order], self.compute, self.store, progress=self.progress, on_cell=on_cell)
        by_key = dict(zip(order, computed.metrics, strict=True))
        self.last_computed, self.last_reused = computed.computed, computed.reused
        return [
            # the config as keyed, so that every cell's key is the hash of the config printed beside it
            {**placement, "key": cell_key(cell), "config": json.loads(canonical_json(keyed_config(cell))), "metrics": by_key[cell_key(cell)]}
            for placement, cell in entries
        ]
