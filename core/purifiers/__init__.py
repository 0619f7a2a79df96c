"""Purifiers by name: `create_purifier("ddpm", t_star=0.04)`; see base.py for the interface.

The shipped purifiers are registered by name, description and where their class lives, without
torch: a mistyped name is refused before torch and diffusers load. A class is imported on the first
`PURIFIERS.get` of its name (its settings, facts and calls are class attributes).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from core.lazy_import import lazy_import
from core.registry import Registry

if TYPE_CHECKING:
    from core.purifiers.base import Purifier, PurifierConfig


class _PurifierRegistry(Registry["type[Purifier]"]):
    """A Registry whose shipped entries are 'module:Class' paths, imported on first `get`; a class
    registered directly (as tests do) is returned as it is."""

    def get(self, name: str) -> type[Purifier]:
        entry = super().get(name)
        if isinstance(entry, str):
            entry = lazy_import(*entry.split(":"))
            self._entries[name] = entry
        return entry


PURIFIERS = _PurifierRegistry("purifier")

for _name, _where, _doc in (
    ("none", "simple:IdentityPurifier", "no purification (the undefended baseline)"),
    ("blur", "simple:GaussianBlurPurifier", "Gaussian blur baseline (sigma in pixels)"),
    (
        "gaussian",
        "simple:GaussianNoisePurifier",
        "randomized smoothing's noise: x + N(0, sigma^2) in [0, 1] pixels, no model (Cohen et al. 2019)",
    ),
    ("noise", "noise:NoisePurifier", "NoiseDefense: forward-process Gaussian noise at t*, no model"),
    ("ddpm", "ddpm:DDPMPurifier", "DDPM purification: noise to t*, reverse DDPM chain (DiffPure-style)"),
    ("one_shot", "one_shot:OneShotPurifier", "one-shot denoiser: noise to t*, one UNet call, Tweedie's x0 estimate (Carlini et al. 2023)"),
    ("ddim", "ddim:DDIMPurifier", "stochastic DDIM from depth T* with time-step skips (threat-model-agnostic, Alg. 2)"),
    ("diffdefense", "diffdefense:DiffDefensePurifier", "DiffDefense, affordable: optimise the noise so a short DDIM chain reproduces the input"),
    (
        "diffdefense_paper",
        "diffdefense:DiffDefensePaperPurifier",
        (
            "DiffDefense as published (Alg. 1): z ~ N(0, I), stochastic chain from T*, gradient steps; "
            "at these defaults (NFE 500) it reconstructs X-rays poorly (about 10 dB PSNR): tune T*, lr and L (docs/TRAINING.md)"
        ),
    ),
    ("cold_blur", "cold:ColdBlurPurifier", "cold diffusion, blurred only: D(x, depth)"),
    ("cold_direct", "cold:ColdDirectPurifier", "cold diffusion, direct reconstruction: R(D(x, depth), depth), 1 UNet call"),
    ("cold_recon", "cold:ColdReconPurifier", "cold diffusion, reconstruction: improved sampling from depth to 0 (steps UNet calls)"),
):
    PURIFIERS.register(_name, _doc)(f"{__name__}.{_where}")


def create_purifier(name: str, **params: Any) -> Purifier:
    """Build a purifier by name; `params` may be typed values or the CLI's `k=v` strings."""
    cls = PURIFIERS.get(name)
    return cls(purifier_config(name, **params))


def purifier_config(name: str, **params: Any) -> PurifierConfig:
    """The typed, checked settings of purifier `name` at `params`, without building it (no weights load)."""
    config_type = PURIFIERS.get(name).config_type
    from core.purifiers.base import parse_params

    return parse_params(config_type, params)


def planned_calls(name: str, **params: Any) -> int:
    """Denoiser calls per image of the shipped purifier `name` at `params`, without building it: the
    app prices a job (and the lab lists its purifiers) before any weights or diffusers load."""
    cls = PURIFIERS.get(name)
    config = purifier_config(name, **params)
    return cls.calls(config, cls.shipped_timesteps(config))


def weights_stem(name: str, params: Mapping[str, Any]) -> str | None:
    """The file stem in weights/ that purifier `name` loads at `params`: its `denoiser` if given, else its
    class's own (None: model-free). A table cell's key and a table's provenance name the same file."""
    return params.get("denoiser", PURIFIERS.get(name).weights)


def list_purifiers() -> dict[str, str]:
    return PURIFIERS.describe()


def __getattr__(name: str) -> Any:
    """`from core.purifiers import Purifier` still works: the torch-based interface loads on first use (PEP 562)."""
    if name in ("Purifier", "PurifierConfig"):
        return getattr(importlib.import_module("core.purifiers.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PURIFIERS", "Purifier", "PurifierConfig", "create_purifier", "list_purifiers", "planned_calls", "purifier_config", "weights_stem"]
