"""Attacks by CLI name, each a thin configuration of a torchattacks 3.5.1 class.

Two things are added around torchattacks:

* `SeededAttack` runs the attack under `torch.random.fork_rng` with the config's seed, so random
  starts and Square's proposals repeat exactly and the caller's global RNG is left untouched; the
  global RNG is one per process, so attacks hold a process-wide lock while they use it (two app
  visitors attacking at once would otherwise draw from each other's seeds); it also freezes the
  model's parameters for the duration (CW and EAD call `.backward()`, which would otherwise
  accumulate `.grad` on a shared, cached model) and keeps the model in eval mode.
* `DLRReferenceLogits`: the DLR losses of APGD-T and AutoAttack read the 3rd and 4th largest
  logits, which a 2-class model does not have (torchattacks raises IndexError). The adapter
  appends reference logits one unit below the smallest real logit, so the argmax, the targeted
  class and the success criterion are unchanged and DLR reduces to -margin / (|margin| + 1).

Where torchattacks' behaviour misfits the lab, a small class says why: `BoxDeepFool`,
`LabelledTPGD`, `Restarts`, `BestLossIterates`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from core.defended import DefendedClassifier
from core.errors import PurifyLabError
from core.registry import Registry

try:
    import torchattacks
    from torchattacks.attack import Attack
except ImportError:  # installed apart from the engine, see scripts/install.sh
    raise PurifyLabError("torchattacks is not installed: run `pip install --no-deps torchattacks==3.5.1` (scripts/install.sh does this step)") from None

if TYPE_CHECKING:
    from core.attacks.config import AttackConfig

DLR_MIN_CLASSES = 4
TORCHATTACKS_NORM = {"linf": "Linf", "l2": "L2"}


class DLRReferenceLogits(nn.Module):
    """Pads logits to 4 columns with references below the smallest logit (see module docstring)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        # Only this wrapper's flag: torchattacks restores train mode on exit when it finds True.
        self.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        missing = DLR_MIN_CLASSES - logits.shape[1]
        if missing <= 0:
            return logits
        reference = logits.min(dim=1, keepdim=True).values - 1.0
        return torch.cat([logits, reference.expand(-1, missing)], dim=1)


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients while attacking; restores both afterwards."""
    modes = [(module, module.training) for module in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        # Module by module: a wrapper's own flag must not overwrite a shared model's mode.
        for module, mode in modes:
            module.training = mode


# torchattacks draws random starts from torch's global RNG: one per process, shared by threads.
_GLOBAL_RNG = threading.RLock()


class SeededAttack(Attack):
    """A torchattacks attack run with a fixed seed, frozen parameters and the model in eval mode."""

    def __init__(self, inner: Attack, model: nn.Module, seed: int):
        super().__init__(f"Seeded{inner.attack}", model)
        self.inner = inner
        self.seed = seed
        self.set_model_training_mode(model_training=False, batchnorm_training=False, dropout_training=False)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        # Around torchattacks' own __call__, whose exit would switch a wrapper (and with it the
        # shared classifier) back to train mode when the wrapper's flag says so.
        devices = [images.device.index or 0] if images.device.type == "cuda" else []
        with _GLOBAL_RNG, frozen_eval(self.model), torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            adversarial = super().__call__(images, labels)
        return adversarial.detach().clamp(0.0, 1.0)

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.inner(images, labels)


class BoxDeepFool(torchattacks.DeepFool):
    """DeepFool whose linear step moves only pixels that can move inside [0, 1]; batched.

    torchattacks' DeepFool steps towards the nearest linearised boundary and then clips to [0, 1].
    Where that step points out of the box (a saturated pixel, most of an MNIST digit), clipping
    removes its share, the boundary is approached geometrically and never crossed: on the shipped
    MNIST CNN 70 % of 64 digits survived 50 or 200 steps. Here every class's gradient is masked to
    the coordinates free to move its way before the nearest boundary and the step are computed, so
    the step (with overshoot) crosses it as DeepFool intends.
    """

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        adversarial = images.clone().detach().to(self.device)
        labels = labels.to(self.device)
        rows = torch.arange(len(labels), device=self.device)
        for _ in range(self.steps):
            adversarial.requires_grad_(True)
            logits = self.get_logits(adversarial)
            active = logits.argmax(1) == labels
            if not active.any():
                break
            classes = logits.shape[1]
            gradients = torch.stack([torch.autograd.grad(logits[:, k].sum(), adversarial, retain_graph=k < classes - 1)[0] for k in range(classes)], 1)
            adversarial = adversarial.detach()
            gap = (logits - logits.gather(1, labels[:, None])).detach()  # f_k - f_label, < 0 while correct
            direction = gradients - gradients[rows, labels][:, None]  # w_k - w_label
            point = adversarial[:, None]
            direction = direction * (((direction > 0) & (point < 1)) | ((direction < 0) & (point > 0)))
            norm = direction.flatten(2).norm(dim=2)
            distance = (gap.abs() + 1e-4) / norm.clamp_min(1e-12)
            distance[rows, labels] = float("inf")
            nearest = distance.argmin(1)
            step = distance[rows, nearest, None, None, None] * direction[rows, nearest] / norm[rows, nearest, None, None, None].clamp_min(1e-12)
            adversarial = torch.where(active[:, None, None, None], adversarial + (1 + self.overshoot) * step, adversarial).clamp(0, 1)
        return adversarial.detach()


class LabelledTPGD(torchattacks.TPGD):
    """TRADES' adversary for an attacker who knows the labels: a misread image is returned as it is.

    TPGD ignores labels and pushes away from the clean prediction, which on an image the model
    already misreads points towards the true class: it would undo a misreading the attacker has for
    free, and the image would then count as robust.
    """

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Without labels it is TRADES' own label-free adversary, as TRADES training uses it."""
        adversarial = super().forward(images, labels)
        if labels is None:
            return adversarial
        images, labels = images.clone().detach().to(self.device), labels.to(self.device)
        with torch.no_grad():
            misread = self.get_logits(images).argmax(1) != labels
        return torch.where(misread[:, None, None, None], images, adversarial)


class Restarts(Attack):
    """Runs `attacks` in turn, each after the first only on the images none before it fooled.

    torchattacks' MultiAttack does the same but returns the input for an image no run fooled; here
    every image keeps its latest iterate, so a purifier downstream still meets a perturbed image (an
    iterate that did not fool the bare classifier may fool the defended one). An attack that hands an
    image back unchanged (Square and FAB where they fail) found nothing there: the image keeps the
    attempt before. "Fooled" is judged on the model the attacks were built on, as MultiAttack judges it.
    """

    def __init__(self, attacks: list[Attack]):
        super().__init__("Restarts", attacks[0].model)
        self.attacks = attacks

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images, labels = images.clone().detach().to(self.device), labels.to(self.device)
        adversarial = images.clone()
        unfooled = torch.arange(len(images), device=images.device)
        for attack in self.attacks:
            attempt = attack(images[unfooled], labels[unfooled])
            moved = (attempt != images[unfooled]).flatten(1).any(1)
            adversarial[unfooled[moved]] = attempt[moved]
            with torch.no_grad():
                fooled = self.get_logits(adversarial[unfooled]).argmax(1) != labels[unfooled]
            unfooled = unfooled[~fooled]
            if len(unfooled) == 0:
                break
        return adversarial


class BestLossIterates(Attack):
    """An APGD or APGD-T attack against a model that draws noise (a stochastic purifier inside it).

    torchattacks returns the input for every image its runs did not fool, and does not attack an image
    it misreads at the start. Against noise both verdicts rest on one draw, so the defense was scored on
    images never attacked (the smoothing defense's APGD-EOT worst of 5 read 20.00, 15.00 keeping the
    iterates, on the 16 X-rays of adaptive-convergence). Here every image is attacked; one a run fooled
    keeps that run's fooling iterate, every other its best-loss iterate over the runs, as `Restarts` keeps
    the latest.
    """

    def __init__(self, apgd: torchattacks.APGD | torchattacks.APGDT):
        super().__init__(f"BestLoss{apgd.attack}", apgd.model)
        self.apgd = apgd

    def _runs(self) -> Iterator[None]:
        """APGD's restarts; APGD-T's restarts for each target class in turn, as its `perturb` runs them."""
        targets = range(2, self.apgd.n_target_classes + 2) if isinstance(self.apgd, torchattacks.APGDT) else [None]
        for target in targets:
            if target is not None:
                self.apgd.target_class = target
            for _ in range(self.apgd.n_restarts):
                yield

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images, labels = images.clone().detach().to(self.device), labels.clone().detach().to(self.device)
        torch.random.manual_seed(self.apgd.seed)  # the random starts, seeded as torchattacks' perturb seeds them
        torch.cuda.random.manual_seed(self.apgd.seed)
        adversarial = images.clone()
        best_loss = torch.full((len(images),), -math.inf, device=self.device)
        unfooled = torch.arange(len(images), device=self.device)
        for _ in self._runs():
            if len(unfooled) == 0:
                break
            best, still_right, loss, fooling = self.apgd.attack_single_run(images[unfooled], labels[unfooled])
            fooled = still_right == 0
            improved = ~fooled & (loss > best_loss[unfooled])
            adversarial[unfooled[fooled]] = fooling[fooled]
            adversarial[unfooled[improved]] = best[improved]
            best_loss[unfooled[improved]] = loss[improved]
            unfooled = unfooled[~fooled]
        return adversarial


def keep_best_loss_iterates(attack: Attack) -> Attack:
    """`attack` with each APGD / APGD-T run in it wrapped in `BestLossIterates`; AutoAttack's sub-attacks
    then run in `Restarts`, whose images keep their latest attempt where MultiAttack would return the input."""
    if isinstance(attack, torchattacks.AutoAttack):
        return Restarts([keep_best_loss_iterates(sub_attack) for sub_attack in attack._autoattack.attacks])
    if isinstance(attack, (torchattacks.APGD, torchattacks.APGDT)):
        return BestLossIterates(attack)
    return attack


def draws_noise(model: nn.Module) -> bool:
    """Whether two forwards of one image can differ: a defended model with a stochastic purifier."""
    return isinstance(model, DefendedClassifier) and model.stochastic


Builder = Callable[[nn.Module, "AttackConfig", int], Attack]


@dataclass(frozen=True)
class AttackSpec:
    """How one CLI name maps onto torchattacks, and which settings mean something for it."""

    build: Builder
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
        return self.build(model, config, num_classes)


ATTACKS: Registry[AttackSpec] = Registry("attack")


def _with_restarts(attacks: list[Attack]) -> Attack:
    """One restart is the torchattacks attack itself, bit for bit (stored results depend on it)."""
    return attacks[0] if len(attacks) == 1 else Restarts(attacks)


def _pgd(model: nn.Module, c: AttackConfig, num_classes: int) -> Attack:
    attack_class = torchattacks.PGD if c.norm == "linf" else torchattacks.PGDL2
    return _with_restarts([attack_class(model, eps=c.eps, alpha=c.step_size, steps=c.steps) for _ in range(c.restarts)])


def _eotpgd(model: nn.Module, c: AttackConfig, num_classes: int) -> Attack:
    return _with_restarts([torchattacks.EOTPGD(model, eps=c.eps, alpha=c.step_size, steps=c.steps, eot_iter=c.eot_iter) for _ in range(c.restarts)])


def _apgd(model: nn.Module, c: AttackConfig, num_classes: int) -> Attack:
    return torchattacks.APGD(
        model, norm=TORCHATTACKS_NORM[c.norm], eps=c.eps, steps=c.steps, n_restarts=c.restarts,
        seed=c.seed, loss="ce", eot_iter=c.eot_iter,
    )  # fmt: skip


def _apgdt(model: nn.Module, c: AttackConfig, num_classes: int) -> Attack:
    return torchattacks.APGDT(
        DLRReferenceLogits(model), norm=TORCHATTACKS_NORM[c.norm], eps=c.eps, steps=c.steps,
        n_restarts=c.restarts, seed=c.seed, eot_iter=c.eot_iter, n_classes=num_classes,
    )  # fmt: skip


# What torchattacks 3.5.1's AutoAttack runs: its sub-attacks at their own defaults (10 steps),
# one restart, targeted ones once per other class; `steps` and `eot_iter` reach none of them.
AUTOATTACK_SCHEDULES = {
    "standard": "own schedule: APGD-CE 10 steps, APGD-T and FAB-T 10 steps per target class, Square 5000 queries",
    "rand": "own schedule: APGD-CE and APGD-DLR, 10 steps each, EOT 20",
}


def _autoattack(version: str) -> Builder:
    def build(model: nn.Module, c: AttackConfig, num_classes: int) -> Attack:
        return torchattacks.AutoAttack(
            DLRReferenceLogits(model), norm=TORCHATTACKS_NORM[c.norm], eps=c.eps, version=version,
            n_classes=num_classes, seed=c.seed,
        )  # fmt: skip

    return build


def _square(model: nn.Module, c: AttackConfig, num_classes: int) -> Attack:
    # Square is gradient-free: its "steps" are queries to the model.
    return torchattacks.Square(model, norm=TORCHATTACKS_NORM[c.norm], eps=c.eps, n_queries=c.steps, n_restarts=c.restarts, seed=c.seed)


def _ead(model: nn.Module, c: AttackConfig, num_classes: int) -> Attack:
    # torchattacks checks for early abort every max_iterations // 10 steps: needs >= 10 steps.
    return torchattacks.EADEN(model, max_iterations=c.steps, abort_early=c.steps >= 10)


_LINF, _L2, _BOTH = ("linf",), ("l2",), ("linf", "l2")

for _name, _spec, _doc in (
    ("fgsm", AttackSpec(lambda m, c, k: torchattacks.FGSM(m, eps=c.eps), _LINF, single_step=True), "FGSM, one signed-gradient step (L-inf)"),
    ("pgd", AttackSpec(_pgd, _BOTH, restarts=True, step_size=True), "PGD with random start (L-inf; PGDL2 for l2)"),
    ("pgdl2", AttackSpec(_pgd, _L2, restarts=True, step_size=True), "PGD under an L2 budget (torchattacks PGDL2)"),
    ("eotpgd", AttackSpec(_eotpgd, _LINF, restarts=True, eot=True, step_size=True), "PGD on gradients averaged over eot_iter calls"),
    (
        "tpgd",
        AttackSpec(lambda m, c, k: LabelledTPGD(m, eps=c.eps, alpha=c.step_size, steps=c.steps), _LINF, step_size=True, revision=1),
        "TRADES' adversary: PGD on the KL divergence from the clean prediction; misread images left as they are (L-inf)",
    ),
    (
        "apgd",
        AttackSpec(_apgd, _BOTH, restarts=True, eot=True, keeps_only_successes=True, best_loss_against_noise=True),
        "Auto-PGD with cross-entropy loss (APGD-CE)",
    ),
    (
        "apgdt",
        AttackSpec(_apgdt, _BOTH, restarts=True, eot=True, keeps_only_successes=True, best_loss_against_noise=True),
        "targeted Auto-PGD with the DLR loss (APGD-T)",
    ),
    (
        "autoattack",
        AttackSpec(_autoattack("standard"), _BOTH, keeps_only_successes=True, best_loss_against_noise=True, schedule=AUTOATTACK_SCHEDULES["standard"]),
        "AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square",
    ),
    (
        "autoattack-rand",
        AttackSpec(_autoattack("rand"), _BOTH, keeps_only_successes=True, best_loss_against_noise=True, schedule=AUTOATTACK_SCHEDULES["rand"]),
        "AutoAttack rand: APGD-CE and APGD-DLR with EOT 20",
    ),
    ("square", AttackSpec(_square, _BOTH, restarts=True, keeps_only_successes=True), "Square attack, score-based black-box (steps = queries)"),
    (
        "deepfool",
        AttackSpec(lambda m, c, k: BoxDeepFool(m, steps=c.steps), _L2, bounded=False, revision=1),
        "DeepFool, minimal L2 perturbation to the nearest boundary (ignores eps)",
    ),
    (
        "cw",
        AttackSpec(lambda m, c, k: torchattacks.CW(m, steps=c.steps), _L2, bounded=False, keeps_only_successes=True),
        "Carlini-Wagner L2, minimal perturbation (ignores eps)",
    ),
    ("ead", AttackSpec(_ead, _L2, bounded=False, keeps_only_successes=True), "elastic-net attack EAD (L1 + L2, EN rule; ignores eps)"),
):
    ATTACKS.register(_name, _doc)(_spec)


def create_attack(model: nn.Module, config: AttackConfig, num_classes: int = 2) -> Attack:
    """The configured torchattacks attack on `model` (inputs in [0, 1]), seeded and eval-mode safe."""
    spec = ATTACKS.get(config.name)
    inner = spec(model, config, num_classes)
    if spec.best_loss_against_noise and draws_noise(model):
        inner = keep_best_loss_iterates(inner)
    return SeededAttack(inner, model, config.seed)


def list_attacks() -> dict[str, str]:
    return ATTACKS.describe()
