"""One X-ray through attack and purification: the steps the app's lab and walkthrough show.

Each step is its own function so the app can cache and time them separately (moving the t* slider
re-runs the purification, not the attack). An uploaded image has no ground truth, so the attack
targets the model's own reading: the question shown is "can the attacker flip what the model says?".
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from core.attacks import ATTACKS, AttackConfig, craft
from core.attacks.robust import ATTACKER_SEED_OFFSET
from core.io import IMAGE_CHANNELS, on_grey_levels, validate_image_tensor
from core.metrics import CLASS_NAMES
from core.purifiers import PURIFIERS, Purifier, create_purifier
from core.purifiers.cold import ColdConfig

# The lab's knobs at rest: the cold-diffusion depth of the papers' Blurred panel, the t* of the DDPM
# defense's X-ray setting, a short cold reconstruction.
DEFAULT_DEPTH, DEFAULT_T_STAR, DEFAULT_RECON_STEPS = ColdConfig().depth, 0.04, 5
# The papers' purifiers a visitor runs in seconds on a CPU, in the order the lab and the server list
# them (not the published DiffDefense: 500 denoiser calls, minutes per X-ray).
INTERACTIVE_PURIFIERS = ("cold_blur", "cold_direct", "one_shot", "cold_recon", "ddpm", "ddim", "diffdefense")
# The attacks a visitor runs in about a second (0.1-1.1 s a click on the shipped classifiers, session
# 25), by the name the lab shows, in its order; the Gradio server offers the same. Not AutoAttack (68 s
# a click on 2 shared CPU cores) nor Square, whose 10 "steps" are 10 queries: it left vit's reading
# of a gallery X-ray unchanged where PGD flipped it.
INTERACTIVE_ATTACKS = {"FGSM": "fgsm", "PGD": "pgd", "AutoPGD (APGD-CE)": "apgd"}


def interactive_settings(
    depth: int = DEFAULT_DEPTH, t_star: float = DEFAULT_T_STAR, recon_steps: int = DEFAULT_RECON_STEPS
) -> dict[str, tuple[tuple[str, object], ...]]:
    """Each interactive purifier's parameters at the knobs: t* for a class that sweeps one, else the
    depth; a cold reconstruction takes at most `depth` steps."""
    settings = {}
    for name in INTERACTIVE_PURIFIERS:
        sweeps = PURIFIERS.get(name).sweeps
        knob = (sweeps["tstar"], t_star) if "tstar" in sweeps else (sweeps["depth"], depth)
        settings[name] = (knob, ("steps", min(recon_steps, depth))) if name == "cold_recon" else (knob,)
    return settings


@dataclass(frozen=True)
class Reading:
    """A classifier's answer for one image."""

    probabilities: tuple[float, ...]

    @property
    def label(self) -> int:
        return max(range(len(self.probabilities)), key=self.probabilities.__getitem__)

    @property
    def class_name(self) -> str:
        return CLASS_NAMES[self.label]

    @property
    def confidence(self) -> float:
        return self.probabilities[self.label]


def shown_percent(probability: float) -> str:
    """A probability as the app and the report print it, in whole percent: one that rounds to 100 or 0
    shows as ">99%" or "<1%", since a model's output is never certain and "100%" reads as certainty."""
    shown = f"{probability:.0%}"
    return {"100%": ">99%", "0%": "<1%"}.get(shown, shown)


@dataclass(frozen=True)
class Verdict:
    """What a purified reading means, against the clean reading and, when known, the true class."""

    restored: bool  # the purified image reads as the clean one did
    correct: bool | None  # the purified reading is the true class (None: no true label)
    text: str


def misread(clean: Reading, true_class: str | None) -> bool:
    """The model read the clean image wrong: undoing an attack on it brings back a wrong reading."""
    return true_class is not None and clean.class_name != true_class


def verdict(
    clean: Reading,
    attacked: Reading,
    purified: Reading,
    true_class: str | None = None,
    *,
    through_purifier: bool = True,
    purified_clean: Reading | None = None,
) -> Verdict:
    """'reading restored' / 'not restored' / 'attack had no effect', in words a clinician can act on.

    `through_purifier` False: no purifier stood between the attack and the reading, so none is credited.
    Where the model misread the clean image, the purified reading is told against the true label first:
    restoring a wrong reading is no success, and keeping a right one is no failure. `purified_clean`, the
    purifier's reading of the clean image where it was computed, says when the purifier alone changes
    a reading: one that reads every image as PNEUMONIA 'restores' every attacked pneumonia."""
    restored = purified.label == clean.label
    correct = None if true_class is None else purified.class_name == true_class
    if misread(clean, true_class):
        told = "the true label" if correct else f"not the true label, {true_class}"
        text = f"reads {purified.class_name}, {told} (the model was wrong before any attack: it read {clean.class_name})"
    elif attacked.label == clean.label:
        text = "the attack did not change the reading"
        if through_purifier:
            text += "; purification " + ("kept it" if restored else "changed it")
    else:
        text = "reading restored" if restored else f"not restored: still {purified.class_name}"
    if true_class is not None and clean.class_name == true_class:
        text += " (matches the true label)" if correct else f" (the true label is {true_class})"
    if through_purifier and purified_clean is not None and purified_clean.label != clean.label:
        text += f"; this purifier alone reads the clean image as {purified_clean.class_name}"
    return Verdict(restored, correct, text)


@dataclass(frozen=True)
class Timed:
    image: torch.Tensor  # (1, C, S, S) float32 in [0, 1]
    seconds: float


@torch.inference_mode()
def read(classifier: nn.Module, images: torch.Tensor) -> list[Reading]:
    """Class probabilities per image; the images are checked here, at the boundary, for the classifier's channels."""
    images = validate_image_tensor(images, channels=getattr(classifier, "in_channels", IMAGE_CHANNELS))
    probabilities = classifier(images).softmax(dim=1)
    return [Reading(tuple(float(p) for p in row)) for row in probabilities]


@dataclass(frozen=True)
class Attacked(Timed):
    """An attack's result: `image` is the attacked image, `clean` the input on the grey levels that the
    attack started from and its budget is measured from. The input itself is off them (a resized X-ray),
    so distances from it would count 8-bit rounding as perturbation."""

    clean: torch.Tensor  # (1, C, S, S) float32 in [0, 1], on the 8-bit grey levels


def attack_image(
    classifier: nn.Module,
    image: torch.Tensor,
    config: AttackConfig,
    *,
    threat: str = "grey",
    purifier: Purifier | None = None,
    substitute: nn.Module | None = None,
    eot: int = 1,
) -> Attacked:
    """Adversarial version of `image` that pushes `classifier` away from its own clean reading, on the
    8-bit grey levels a saved PNG holds and inside the budget measured from the clean image on those
    levels (`core.io.on_grey_levels`). Where it finds nothing, an attack that keeps only successes
    (`keeps_only_successes`: APGD, C&W, Square, ...) returns exactly that clean image; the others (PGD,
    FGSM, ...) return their last attempt, which can change pixels without changing the reading. The
    attacker's purifier draws are seeded apart from the test-time draws (`purify_image`'s seed), as in
    `robust_run`: a test that reuses the attacker's own noise favours the attacker."""
    start = time.perf_counter()
    image = validate_image_tensor(image, channels=getattr(classifier, "in_channels", IMAGE_CHANNELS))
    eps = config.eps if ATTACKS.get(config.name).bounded else None
    clean = on_grey_levels(image, image, eps)  # refuses a budget under one grey level before any crafting
    own_label = torch.tensor([read(classifier, clean)[0].label])
    purifier = purifier if purifier is not None else create_purifier("none")
    seed = config.seed + ATTACKER_SEED_OFFSET
    adversarial = craft(threat, classifier, purifier, clean, own_label, config, substitute=substitute, eot=eot, seed=seed).detach()
    return Attacked(on_grey_levels(adversarial, clean), time.perf_counter() - start, clean)


def purify_image(purifier: Purifier, image: torch.Tensor, seed: int = 0) -> Timed:
    start = time.perf_counter()
    purified = purifier.purify(image, seed=seed)
    return Timed(purified, time.perf_counter() - start)


def amplified_perturbation(clean: torch.Tensor, adversarial: torch.Tensor) -> torch.Tensor:
    """|adversarial - clean| scaled so its largest value is 1: an invisible change made visible."""
    difference = (adversarial - clean).abs()
    return difference / difference.amax().clamp_min(1e-8)


def perturbation_norms(clean: torch.Tensor, adversarial: torch.Tensor) -> dict[str, float]:
    difference = (adversarial - clean).flatten()
    return {"linf": float(difference.abs().max()), "l2": float(difference.norm())}


def session_report(facts: dict[str, str], readings: dict[str, Reading], verdicts: dict[str, Verdict]) -> str:
    """A one-page Markdown record of one lab session's readings, to keep or share.

    It holds only what the caller passes: settings and readings, never a file name or image data,
    so an upload's identifiers cannot end up in it."""
    lines = ["# PurifyLab session report", "", "Research tool, not a diagnostic device.", ""]
    lines += [f"- **{name}:** {value}" for name, value in facts.items()]
    lines += ["", "| panel | reading | confidence | verdict |", "|---|---|---|---|"]
    for panel, reading in readings.items():
        outcome = verdicts[panel].text if panel in verdicts else "–"
        lines.append(f"| {panel} | {reading.class_name} | {shown_percent(reading.confidence)} | {outcome} |")
    return "\n".join(lines) + "\n"
