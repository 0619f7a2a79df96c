"""`purifylab sweep`: its refusals of mistyped names come before torch is imported."""

from __future__ import annotations

import os
import subprocess
import sys


def test_sweep_refuses_a_mistyped_name_before_torch_is_imported(tmp_path):
    """A typo in the kind, purifier, classifier or threat was refused only after torch and torchvision
    loaded (the kinds were read off every purifier class, and --attack built its config first)."""
    sweep = ["sweep", "tstar", "--purifier", "ddpm", "--values", "0.1", "--store", str(tmp_path / "s.sqlite"), "--out-dir", str(tmp_path / "out")]
    cases = {
        "sweep 'foo' is unknown; choose one of: depth, tstar": ["sweep", "foo", *sweep[2:]],
        "unknown purifier 'ddpmx'; choose one of: ": [*sweep, "--purifier", "ddpmx"],
        "unknown classifier 'vitx'; choose one of: ": [*sweep, "--classifier", "vitx"],
        "unknown threat model 'whitex'; choose one of: ": [*sweep, "--attack", "pgd", "--threat", "whitex"],
    }
    for message, args in cases.items():
        code = f"import sys\nfrom core.cli import main\ntry:\n    main({args!r})\nexcept SystemExit as exit:\n    print(exit.code, 'torch' in sys.modules)"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.stdout.strip().splitlines()[-1] == "2 False", (args, done.stdout, done.stderr)
        assert done.stderr.startswith(f"error: {message}") and len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
