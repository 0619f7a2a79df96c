"""Purifier and classifier as one model, so every torchattacks attack goes through the defense.

This is DiffPure's construction: the attacker differentiates `classifier(purifier(x))`. Two knobs
give the threat models of Blau et al. (threat_model_agnostic_diffusion_defense.md):

* `bpda=True` runs the purifier without a graph and passes gradients straight through
  (identity backward, Athalye et al.'s BPDA), for purifiers too deep or non-differentiable to
  back-propagate;
* `eot > 1` draws the purifier's randomness `eot` times in one batched forward and averages the
  class probabilities, so each attack step follows the expected prediction of a stochastic defense.

The module owns a seeded generator: successive forwards draw fresh randomness, but the sequence
of draws, and hence the attack, repeats exactly for the same seed.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from core.attacks import MAX_EOT
from core.errors import PurifyLabError, check_range, typed
from core.io import IMAGE_CHANNELS, validate_image_tensor
from core.purifiers.base import Purifier

# Purifier draws at test time (worst or majority of k): one bound for every path that takes --redraws.
MAX_REDRAWS = 1000

BUILT_NETWORK = "a built network (create_classifier(name) returns one)"


def check_built(name: str, value: object, kind: type, expected: str) -> None:
    """One line for a registry name or a dict where a built object belongs: the README names everything
    by string, so passing the name is a natural slip, which would otherwise surface as an AttributeError
    deep inside (sometimes naming another object)."""
    if isinstance(value, kind):
        return
    if isinstance(value, nn.Module):  # its repr is its whole layer tree: named by class and registry name
        shown = f" '{value.name}'" if isinstance(getattr(value, "name", None), str) else ""
    else:
        shown = f" {reprlib.repr(value)}"
    raise PurifyLabError(f"{name} must be {expected}, got {type(value).__name__}{shown}")


@contextmanager
def frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients while attacking, scoring or predicting; restores both afterwards,
    so a caller's model (perhaps mid-training) is handed back as it came."""
    check_built("model", model, nn.Module, BUILT_NETWORK)
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


def clamp_to_unit(x: torch.Tensor) -> torch.Tensor:
    """x clamped to [0, 1], with the gradient of the identity on the closed interval.

    `torch.clamp` passes no gradient at exactly 0 or 1, so a white-box attacker would never move a
    saturated pixel (2.7 % of the test X-rays' pixels) through a purifier that keeps it saturated
    (none, blur). Only values strictly outside [0, 1] lose their gradient here, as they should.
    """
    return torch.where((x >= 0.0) & (x <= 1.0), x, x.clamp(0.0, 1.0))


class _IdentityBackward(torch.autograd.Function):
    """Forward: the purifier without a graph. Backward: the incoming gradient unchanged."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, purifier: Purifier, generator: torch.Generator | None) -> torch.Tensor:
        return clamp_to_unit(purifier(x, generator=generator))

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output, None, None


def bpda_purify(purifier: Purifier, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """purifier(x) in the forward pass, d/dx treated as the identity in the backward pass."""
    return _IdentityBackward.apply(x, purifier, generator)


class DefendedClassifier(nn.Module):
    """x in [0, 1] (N, C, H, W) -> logits (N, K) of classifier(purifier(x)); log mean probabilities when eot > 1."""

    def __init__(self, purifier: Purifier, classifier: nn.Module, eot: int = 1, bpda: bool = False, seed: int = 0):
        super().__init__()
        check_built("purifier", purifier, Purifier, "a built purifier (create_purifier(name, ...) returns one)")
        check_built("classifier", classifier, nn.Module, BUILT_NETWORK)
        typed("eot", eot, int)  # 2.5 would run int(2.5) draws while the budget counts 2.5
        check_range("eot", eot, 1, MAX_EOT)
        self.purifier = purifier
        self.classifier = classifier
        self.eot = eot
        self.bpda = typed("bpda", bpda, bool)  # bool("false") is True
        self.seed = typed("seed", seed, int)  # int(1.7) would run seed 1 and record 1.7
        self._generator: torch.Generator | None = None

    @property
    def stochastic(self) -> bool:
        """Whether two forwards of one image can differ, so that an attack's verdict on one is a noisy one."""
        return self.purifier.stochastic

    @property
    def draws(self) -> int:
        """Purifier draws per forward: a deterministic purifier gives the same output every time."""
        return self.eot if self.stochastic else 1

    def reset(self, seed: int | None = None) -> None:
        """Restart the sequence of purifier draws (from `seed` if given)."""
        if seed is not None:
            self.seed = typed("seed", seed, int)  # as in __init__: int(1.7) would run seed 1
        self._generator = None

    def _generator_on(self, device: torch.device) -> torch.Generator | None:
        if not self.purifier.stochastic:
            return None
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def purified(self, x: torch.Tensor) -> torch.Tensor:
        generator = self._generator_on(x.device)
        if self.bpda:
            return bpda_purify(self.purifier, x, generator)
        return clamp_to_unit(self.purifier(x, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A 0-255 image would come out of `clamp_to_unit` white and read as confident nonsense. Only
        # checked, never replaced by the check's clamped copy: that would zero the gradient at 0 and 1.
        validate_image_tensor(x, channels=getattr(self.classifier, "in_channels", IMAGE_CHANNELS))
        x = x.float()  # float64 or float16 in, as `purify` takes them; the cast keeps the graph
        draws = self.draws
        if draws == 1:
            return self.classifier(self.purified(x))
        repeated = x.repeat(draws, *([1] * (x.ndim - 1)))
        log_probs = self.classifier(self.purified(repeated)).log_softmax(dim=1)
        log_probs = log_probs.view(draws, x.shape[0], -1)
        return torch.logsumexp(log_probs, dim=0) - math.log(draws)
