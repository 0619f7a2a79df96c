"""Dependencies between layers that the code's shape alone does not show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_training_and_clean_evaluation_import_no_attacks():
    """Training a model (and measuring it) must not need torchattacks; adversarial training imports it when asked.
    A fresh interpreter, since other tests load the attacks into this one. The attack tables and configs
    (core.attacks, core.attacks.config) import no torch and may load."""
    modules = "core.train.classifier, core.train.diffusion, core.train.cold, core.evaluate"
    light = ("core.attacks", "core.attacks.config")
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if m == 'torchattacks' or m.startswith('core.attacks') and m not in {light!r}))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def _loaded_after(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has imported after running `code`."""
    probe = f"import sys\n{code}\nprint(sorted(m for m in {modules!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1])


def test_home_page_needs_no_torch():
    """The home page renders while app.py's warm-up imports the engine (seconds) in the background."""
    code = "import pages.model_table; pages.model_table.shipped_models_table()"
    assert _loaded_after(code, ("torch", "torchattacks", "diffusers")) == []


def test_the_labs_default_defense_runs_without_diffusers():
    """diffusers costs seconds to import, so only the purifiers that run a UNet load it: the lab's and
    the walkthrough's first render (recommended defense, Blurred) never wait for it."""
    code = "\n".join(
        [
            "import torch",
            "from pages.common import DEFAULT_DEFENSE, DEFAULT_DEPTH, DEFAULT_RECON_STEPS, DEFAULT_T_STAR, denoiser_calls, purifier_variants",
            "from core.purifiers import create_purifier",
            "variants = purifier_variants(DEFAULT_DEPTH, DEFAULT_T_STAR, DEFAULT_RECON_STEPS)",
            "costs = [denoiser_calls(*variant) for variant in variants.values()]",
            "for label in DEFAULT_DEFENSE:",
            "    create_purifier(variants[label][0], **dict(variants[label][1])).purify(torch.rand(1, 1, 128, 128))",
        ]
    )
    assert _loaded_after(code, ("diffusers",)) == []
