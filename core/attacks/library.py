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
`LabelledTPGD`, `Restarts`, `BestLossIterates`, `ClassCountedAttack`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator

import torch
from torch import nn

from core.attacks import ATTACKS
from core.attacks.config import AttackConfig
from core.defended import BUILT_NETWORK, DefendedClassifier, check_built, frozen_eval
from core.errors import PurifyLabError

try:
    import torchattacks
    from torchattacks.attack import Attack
except ImportError:  # installed apart from the engine, see scripts/install.sh
    raise PurifyLabError("torchattacks is not installed: run `pip install --no-deps torchattacks==3.5.1` (scripts/install.sh does this step)") from None

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


# The builders each spec in core.attacks names (`AttackSpec.build`): one per attack, on its config.
Builder = Callable[[nn.Module, "AttackConfig", int], Attack]


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


def _autoattack(version: str) -> Builder:
    def build(model: nn.Module, c: AttackConfig, num_classes: int) -> Attack:
        return torchattacks.AutoAttack(
            DLRReferenceLogits(model), norm=TORCHATTACKS_NORM[c.norm], eps=c.eps, version=version,
            n_classes=num_classes, seed=c.seed,
        )  # fmt: skip

    return build


_autoattack_standard, _autoattack_rand = _autoattack("standard"), _autoattack("rand")


def _fgsm(model: nn.Module, c: AttackConfig, num_classes: int) -> Attack:
    return torchattacks.FGSM(model, eps=c.eps)


def _tpgd(model: nn.Module, c: AttackConfig, num_classes: int) -> Attack:
    return LabelledTPGD(model, eps=c.eps, alpha=c.step_size, steps=c.steps)


def _deepfool(model: nn.Module, c: AttackConfig, num_classes: int) -> Attack:
    return BoxDeepFool(model, steps=c.steps)


def _cw(model: nn.Module, c: AttackConfig, num_classes: int) -> Attack:
    return torchattacks.CW(model, steps=c.steps)


def _square(model: nn.Module, c: AttackConfig, num_classes: int) -> Attack:
    # Square is gradient-free: its "steps" are queries to the model.
    return torchattacks.Square(model, norm=TORCHATTACKS_NORM[c.norm], eps=c.eps, n_queries=c.steps, n_restarts=c.restarts, seed=c.seed)


def _ead(model: nn.Module, c: AttackConfig, num_classes: int) -> Attack:
    # torchattacks checks for early abort every max_iterations // 10 steps: needs >= 10 steps.
    return torchattacks.EADEN(model, max_iterations=c.steps, abort_early=c.steps >= 10)


def check_attack_config(attack: object) -> None:
    """The one refusal of an attack named by string or given as a dict (create_attack, craft, EvaluationConfig)."""
    check_built("attack", attack, AttackConfig, "an AttackConfig (build one with AttackConfig(name='pgd', ...))")


def answered_classes(model: nn.Module, images: torch.Tensor) -> int:
    """How many classes `model` answers: a registered classifier's `num_classes` (for a defended model, its
    classifier's), else the width of the bare network's output on one image; never a forward through the
    purifier, which would spend a draw of the attack's sequence."""
    bare = model.classifier if isinstance(model, DefendedClassifier) else model
    if isinstance(getattr(bare, "num_classes", None), int):
        return bare.num_classes
    with torch.no_grad(), frozen_eval(bare):
        return int(bare(images[:1]).shape[1])


class ClassCountedAttack(Attack):
    """The attack `create_attack` returns, built on its first images with the class count the model answers.

    APGD-T and AutoAttack fix their target classes when built, and a plain network tells its class count
    only by answering; an assumed 2 gave a 10-class MNIST model 1 target class instead of 9.
    """

    def __init__(self, build: Callable[[int], Attack], model: nn.Module, num_classes: int | None):
        super().__init__("ClassCounted", model)
        self.build = build
        self.num_classes = num_classes
        self.built: Attack | None = None

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        with _GLOBAL_RNG:  # answering freezes the shared model: under the lock every attack on it holds
            if self.built is None:
                answered = answered_classes(self.model, images)
                if self.num_classes not in (None, answered):
                    raise PurifyLabError(f"num_classes={self.num_classes}, but the model answers {answered} classes; leave num_classes out to take the model's")
                self.built = self.build(answered)
        return self.built(images, labels)


def create_attack(model: nn.Module, config: AttackConfig, num_classes: int | None = None) -> Attack:
    """The configured torchattacks attack on `model` (inputs in [0, 1]), seeded and eval-mode safe.
    `num_classes` None: the count the model answers (see `ClassCountedAttack`); a count given is checked against it."""
    check_built("model", model, nn.Module, BUILT_NETWORK)
    check_attack_config(config)
    spec = ATTACKS.get(config.name)

    def build(classes: int) -> Attack:
        inner = spec(model, config, classes)
        if spec.best_loss_against_noise and draws_noise(model):
            inner = keep_best_loss_iterates(inner)
        return SeededAttack(inner, model, config.seed)

    return ClassCountedAttack(build, model, num_classes)
