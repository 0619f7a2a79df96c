"""The one interface every purifier follows.

A purifier maps images in [0, 1] (N, C, H, W) to purified images in [0, 1]. It is an `nn.Module`
so that it can sit in front of a classifier as one differentiable model (see DefendedClassifier):

* `forward(x, generator=None)` is the differentiable mode: gradients flow to `x` (a purifier whose
  recorded graph would hold many denoiser calls checkpoints each of them, so that a white-box attack
  through the whole chain fits in memory; see `checkpoints`);
* `purify(x, seed=0)` is the fast mode: no graph, and the same seed gives the same output.

Parameters live in a typed dataclass (`config`), validated before any work starts, so the CLI, the
evaluator and the app can pass `k=v` strings and get a one-line error for a bad value.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from core.errors import PurifyLabError, check_types

# Keeping every recorded denoiser call's activations costs about 4-7 KB per input element per call
# (measured on the MNIST and X-ray UNets); up to this many element-calls the graph stays under about
# half a gigabyte, and checkpointing would only buy a second forward of every call.
CHECKPOINT_ABOVE_ELEMENT_CALLS = 100_000


def recomputed_in_backward(graph_calls: int, elements: int) -> bool:
    """Whether a differentiable pass through `graph_calls` denoiser calls on a batch of `elements`
    input elements checkpoints them (each call then runs forward again in the backward). One call
    gains nothing (its activations are needed once either way); a short chain on a small batch is
    faster kept."""
    return graph_calls > 1 and graph_calls * elements > CHECKPOINT_ABOVE_ELEMENT_CALLS


@dataclass(frozen=True)
class PurifierConfig:
    """Base for each purifier's parameters; subclasses add fields and override `validate`, which runs
    once, when the config is built (so a config that exists is a valid one)."""

    def __post_init__(self) -> None:
        check_types(self)  # an int field refuses 2.5, a float field True or None, before any range check
        self.validate()

    def validate(self) -> None:
        """Raise PurifyLabError naming the bad value and its allowed range."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def parse_params(config_type: type[PurifierConfig], params: dict[str, Any]) -> PurifierConfig:
    """Build a config from `k=v` strings or values, converting each to its field's type."""
    field_types = typing.get_type_hints(config_type)
    converted = {}
    for key, value in params.items():
        if key not in field_types:
            allowed = ", ".join(field_types) or "none"
            raise PurifyLabError(f"unknown parameter '{key}' for this purifier; allowed: {allowed}")
        converted[key] = _convert(key, value, field_types[key])
    return config_type(**converted)


def _convert(key: str, value: Any, field_type: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if field_type is bool:
            if value.lower() not in {"true", "false", "1", "0", "yes", "no"}:
                raise ValueError
            return value.lower() in {"true", "1", "yes"}
        if field_type in (int, float):
            return field_type(value)
        if field_type == (int | None):
            return None if value.lower() == "none" else int(value)
        if field_type == (float | None):
            return None if value.lower() == "none" else float(value)
    except ValueError:
        raise PurifyLabError(f"parameter {key}='{value}' is not a valid {getattr(field_type, '__name__', field_type)}") from None
    return value


class Purifier(nn.Module):
    """Base class: subclasses set `name`, `display_name`, `stochastic`, `config_type` and implement `forward`.

    `weights` names the shipped network (weights/<stem>.safetensors) the purifier reads by default,
    weights or noise schedule: its card hash joins every table cell's key. `sweeps` maps a sweep kind
    ("tstar", "depth") to the config field that sweep varies.
    """

    name: ClassVar[str]
    display_name: ClassVar[str]
    stochastic: ClassVar[bool] = False
    config_type: ClassVar[type[PurifierConfig]] = PurifierConfig
    weights: ClassVar[str | None] = None
    sweeps: ClassVar[dict[str, str]] = {}
    num_train_timesteps: int = 0  # T of the noise schedule; 0 for purifiers without one
    # Whether its output sits exactly on 0 or 1 where the input does (identity, linear filters): before
    # session 19 the white-box gradient was zero at such pixels (core.defended.clamp_to_unit).
    keeps_saturated_pixels: ClassVar[bool] = False
    # False for the identity: a verdict then speaks of the defense, never of a purification.
    changes_image: ClassVar[bool] = True

    def __init__(self, config: PurifierConfig | None = None):
        super().__init__()
        self.config = config if config is not None else self.config_type()
        self._weights_sha256: dict[str, str] = {}  # see `record_shipped_weights`

    def record_shipped_weights(self, stem: str, card: dict[str, Any]) -> None:
        """Remember the shipped network this purifier loaded (weights/<stem>.safetensors) by the SHA-256
        its card pinned, which the file was checked against at load: an output names the exact network."""
        self._weights_sha256 = {f"{stem}.safetensors": card["sha256"]}

    def loaded_weights(self) -> dict[str, str]:
        """File name -> SHA-256 of the shipped network this purifier runs; {} without one (model-free, or a
        network handed in, as tests do)."""
        return dict(self._weights_sha256)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    @property
    def input_channels(self) -> tuple[int, ...]:
        """Channel counts `purify` accepts: grey or RGB for a purifier that works channel by channel;
        a denoiser's own count for one that feeds the image to its network whole."""
        from core.io import IMAGE_CHANNELS

        return IMAGE_CHANNELS

    @classmethod
    def calls(cls, config: PurifierConfig, num_train_timesteps: int) -> int:
        """Denoiser calls per image for `config` on a T-step schedule (0 for model-free purifiers).

        A fact of the class and its config, so a job is priced before any weights or diffusers load.
        """
        return 0

    @classmethod
    def shipped_timesteps(cls, config: PurifierConfig) -> int:
        """T of the schedule the shipped weights that `config` names were trained with (0: none)."""
        return 0

    def nfe(self) -> int:
        """Denoiser calls per image at the current setting."""
        return self.calls(self.config, self.num_train_timesteps)

    def graph_calls(self) -> int:
        """Denoiser calls one recorded autograd graph holds: every call of a differentiable pass."""
        return self.nfe()

    def checkpoints(self, sample: torch.Tensor) -> bool:
        """Whether a denoiser call on `sample` is checkpointed: while a graph is recorded, and only
        where keeping every call of it would be large (`recomputed_in_backward`)."""
        return torch.is_grad_enabled() and recomputed_in_backward(self.graph_calls(), sample.numel())

    @torch.inference_mode()
    def purify(self, x: torch.Tensor, seed: int | None = 0) -> torch.Tensor:
        from core.io import validate_image_tensor

        x = validate_image_tensor(x, channels=self.input_channels)
        generator = None
        if self.stochastic and seed is not None:
            generator = torch.Generator(device=x.device).manual_seed(seed)
        return self(x, generator=generator).clamp(0, 1)

    def describe(self) -> dict[str, Any]:
        return {"purifier": self.name, "stochastic": self.stochastic, "nfe": self.nfe(), **self.config.to_dict()}
