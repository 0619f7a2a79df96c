"""Dependencies between layers that the code's shape alone does not show."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_training_and_clean_evaluation_import_no_attacks():
    """Training a model (and measuring it) must not need torchattacks; adversarial training imports it when asked.
    A fresh interpreter, since other tests load the attacks into this one."""
    modules = "core.train.classifier, core.train.diffusion, core.train.cold, core.evaluate"
    code = f"import sys, {modules}; print(sorted(m for m in sys.modules if m == 'torchattacks' or m.startswith('core.attacks')))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
