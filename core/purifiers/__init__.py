"""Purifiers by name: `create_purifier("ddpm", t_star=0.04)`; see base.py for the interface."""

from __future__ import annotations

from typing import Any

from core.purifiers.base import Purifier, PurifierConfig, parse_params
from core.purifiers.cold import ColdBlurPurifier, ColdDirectPurifier, ColdReconPurifier
from core.purifiers.ddim import DDIMPurifier
from core.purifiers.ddpm import DDPMPurifier
from core.purifiers.diffdefense import DiffDefensePaperPurifier, DiffDefensePurifier
from core.purifiers.noise import NoisePurifier
from core.purifiers.one_shot import OneShotPurifier
from core.purifiers.simple import GaussianBlurPurifier, GaussianNoisePurifier, IdentityPurifier
from core.registry import Registry

PURIFIERS: Registry[Purifier] = Registry("purifier")

for _cls, _doc in (
    (IdentityPurifier, "no purification (the undefended baseline)"),
    (GaussianBlurPurifier, "Gaussian blur baseline (sigma in pixels)"),
    (GaussianNoisePurifier, "randomized smoothing's noise: x + N(0, sigma^2) in [0, 1] pixels, no model (Cohen et al. 2019)"),
    (NoisePurifier, "NoiseDefense: forward-process Gaussian noise at t*, no model"),
    (DDPMPurifier, "DDPM purification: noise to t*, reverse DDPM chain (DiffPure-style)"),
    (OneShotPurifier, "one-shot denoiser: noise to t*, one UNet call, Tweedie's x0 estimate (Carlini et al. 2023)"),
    (DDIMPurifier, "stochastic DDIM from depth T* with time-step skips (threat-model-agnostic, Alg. 2)"),
    (DiffDefensePurifier, "DiffDefense, affordable: optimise the noise so a short DDIM chain reproduces the input"),
    (
        DiffDefensePaperPurifier,
        (
            "DiffDefense as published (Alg. 1): z ~ N(0, I), stochastic chain from T*, gradient steps; "
            "at these defaults (NFE 500) it reconstructs X-rays poorly (about 10 dB PSNR): tune T*, lr and L (docs/TRAINING.md)"
        ),
    ),
    (ColdBlurPurifier, "cold diffusion, blurred only: D(x, depth)"),
    (ColdDirectPurifier, "cold diffusion, direct reconstruction: R(D(x, depth), depth), 1 UNet call"),
    (ColdReconPurifier, "cold diffusion, reconstruction: improved sampling from depth to 0 (steps UNet calls)"),
):
    PURIFIERS.register(_cls.name, _doc)(_cls)


def create_purifier(name: str, **params: Any) -> Purifier:
    """Build a purifier by name; `params` may be typed values or the CLI's `k=v` strings."""
    cls = PURIFIERS.get(name)
    return cls(parse_params(cls.config_type, params))


def purifier_config(name: str, **params: Any) -> PurifierConfig:
    """The typed, checked settings of purifier `name` at `params`, without building it (no weights load)."""
    return parse_params(PURIFIERS.get(name).config_type, params)


def planned_calls(name: str, **params: Any) -> int:
    """Denoiser calls per image of the shipped purifier `name` at `params`, without building it: the
    app prices a job (and the lab lists its purifiers) before any weights or diffusers load."""
    cls = PURIFIERS.get(name)
    config = purifier_config(name, **params)
    return cls.calls(config, cls.shipped_timesteps(config))


def list_purifiers() -> dict[str, str]:
    return PURIFIERS.describe()


__all__ = ["PURIFIERS", "Purifier", "PurifierConfig", "create_purifier", "list_purifiers", "planned_calls", "purifier_config"]
