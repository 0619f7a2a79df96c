"""What one benchmark run measures and at which sizes, as one typed, validated record.

The sizes are explicit because the CPU and GPU settings differ by orders of magnitude: an attack
through a 10-step diffusion chain with EOT 20 takes minutes per image on 2 CPU cores. Every figure
in the report carries the settings it was measured at, so a CPU figure is never read as the GPU one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from typing import Any

from core.errors import PurifyLabError, check_range
from core.purifiers import PURIFIERS

SECTIONS = ("purify", "attack", "train", "app")
ATTACKS = ("pgd", "apgd")  # PGD-10 and APGD (cross-entropy), the two attacks
DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Optimisations:
    """GPU speed-ups, each a separate switch so its effect can be measured; CPU runs skip them all."""

    bf16: bool = False  # torch.autocast(cuda, bfloat16) around every model call of our path
    channels_last: bool = False  # NHWC weights for the convolutions (tensor-core friendly)
    compile: bool = False  # torch.compile of the UNets and the classifier, in place
    cuda_graphs: bool = False  # compile mode "reduce-overhead" (CUDA graphs); needs compile

    def validate(self) -> None:
        if self.cuda_graphs and not self.compile:
            raise PurifyLabError("cuda_graphs needs compile (CUDA graphs come from torch.compile's reduce-overhead mode)")


@dataclass(frozen=True)
class BenchSettings:
    preset: str = "custom"
    device: str = "cpu"
    threads: int | None = 2  # torch intra-op threads (None: torch's default)
    sections: tuple[str, ...] = SECTIONS
    purifiers: tuple[str, ...] | None = None  # None: every registered purifier
    # Settings other than a purifier's defaults, by name (the smoke preset shortens the longest chain).
    purifier_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    tiny: bool = False  # tiny seeded untrained models instead of the shipped weights (smoke test)
    seed: int = 0
    # Purification and training: `warmup` untimed runs, then `repeats` timed ones at batch 1 and at the large batch.
    purify_batch: int = 4
    train_batch: int = 16
    warmup: int = 1
    repeats: int = 2
    # Attacks on the classifier alone.
    eps: float = 0.03
    attack_steps: int = 10
    attack_batch: int = 8
    # Attacks through a purifier (bpda-eot / white): the expensive part, hence its own sizes.
    chain_purifiers: tuple[str, ...] = ("ddpm", "ddim", "cold_recon")
    chain_threats: tuple[str, ...] = ("bpda-eot", "white")
    chain_steps: int = 1
    chain_eot: int = 2
    chain_batch: int = 2
    attack_warmup: int = 0
    attack_repeats: int = 1
    # The naive attack works one image at a time, so its images/s does not depend on how many images
    # it is timed on: None times it on the whole batch, a number on at most that many (a GPU saver).
    naive_attack_images: int | None = None
    # The app's CPU path (one X-ray), always on the CPU: at the Space's 2 cores, or at `threads` when a
    # run names it (from_preset), so `--threads 1` times every section at 1.
    app_threads: int = 2
    app_repeats: int = 3
    optimisations: Optimisations = field(default_factory=Optimisations)

    def validate(self) -> None:
        if self.device not in DEVICES:
            raise PurifyLabError(f"device '{self.device}' is not one of: {', '.join(DEVICES)}")
        unknown = [name for name in self.sections if name not in SECTIONS]
        if unknown or not self.sections:
            raise PurifyLabError(f"unknown section(s) {', '.join(unknown) or '(none given)'}; choose from: {', '.join(SECTIONS)}")
        for name in (*(self.purifiers or ()), *self.chain_purifiers, *self.purifier_params):
            PURIFIERS.get(name)  # one-line error naming the registered ones
        from core.attacks.threats import THREAT_MODELS, threat_model

        chain = [name for name, threat in THREAT_MODELS.items() if threat.goes_through_purifier]
        bad_threats = [name for name in self.chain_threats if not threat_model(name).goes_through_purifier]
        if bad_threats:
            raise PurifyLabError(f"chain threat(s) {', '.join(bad_threats)} not one of: {', '.join(chain)}")
        if "attack" in self.sections:  # the attack row would refuse it only after the purify section's minutes
            for name in self.chain_purifiers:
                for threat in self.chain_threats:
                    threat_model(threat).check_purifier(PURIFIERS.get(name))
        for name in ("threads", "naive_attack_images"):
            if getattr(self, name) is not None:
                check_range(name, getattr(self, name), 1, 100_000)
        for name in (
            "purify_batch",
            "train_batch",
            "repeats",
            "attack_steps",
            "attack_batch",
            "chain_steps",
            "chain_batch",
            "attack_repeats",
            "app_threads",
            "app_repeats",
        ):
            check_range(name, getattr(self, name), 1, 100_000)
        for name in ("warmup", "attack_warmup"):
            check_range(name, getattr(self, name), 0, 1000)
        check_range("eps", self.eps, 0.0, 1.0, low_open=True)
        if "bpda-eot" in self.chain_threats:
            check_range("chain_eot", self.chain_eot, 2, 1000, note="bpda-eot needs at least 2 purifier draws")
        self.optimisations.validate()

    @property
    def images_needed(self) -> int:
        """The largest batch any section uses: that many X-rays are loaded once."""
        return max(self.purify_batch, self.train_batch, self.attack_batch, self.chain_batch)

    def naive_attack_count(self, batch: int) -> int:
        return batch if self.naive_attack_images is None else min(batch, self.naive_attack_images)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> BenchSettings:
        """cpu: a full run in ~10 min on 2 cores; gpu: the issue's sizes; smoke: tiny models, seconds.

        `overrides` replace preset values (None leaves them); optimisation switches are given by name.
        A given `threads` is the app section's count too, unless `app_threads` is given as well.
        """
        if name not in PRESETS:
            raise PurifyLabError(f"unknown bench preset '{name}'; choose one of: {', '.join(PRESETS)}")
        switches = {f.name for f in fields(Optimisations)}
        given = {key: value for key, value in overrides.items() if value is not None}
        if "threads" in given:
            given.setdefault("app_threads", given["threads"])
        known = {f.name for f in fields(cls)} | switches
        unknown = sorted(set(given) - known)
        if unknown:
            raise PurifyLabError(f"unknown bench setting(s) {', '.join(unknown)}")
        preset = dict(PRESETS[name])
        optimisations = replace(preset.pop("optimisations", Optimisations()), **{k: v for k, v in given.items() if k in switches})
        settings = replace(cls(), preset=name, optimisations=optimisations, **(preset | {k: v for k, v in given.items() if k not in switches}))
        settings.validate()
        return settings


PRESETS: dict[str, dict[str, Any]] = {
    "cpu": dict(device="cpu", threads=2),  # the field defaults are the CPU sizes
    "gpu": dict(
        device="cuda",
        threads=None,
        purify_batch=64,
        train_batch=64,
        warmup=3,
        repeats=5,
        attack_batch=64,
        chain_steps=10,
        chain_eot=20,
        chain_batch=16,
        attack_warmup=1,
        attack_repeats=2,
        naive_attack_images=1,
        optimisations=Optimisations(bf16=True, channels_last=True, compile=True),
    ),
    "smoke": dict(
        device="cpu",
        threads=1,
        tiny=True,
        purify_batch=2,
        train_batch=2,
        warmup=0,
        repeats=1,
        attack_steps=2,
        attack_batch=2,
        chain_purifiers=("ddpm", "cold_direct"),
        purifier_params={"diffdefense_paper": {"t_start": 0.01}},  # 10 of its default 100 steps: seconds, not minutes
        chain_steps=1,
        chain_eot=2,
        chain_batch=2,
        app_threads=1,
        app_repeats=1,
    ),
}
