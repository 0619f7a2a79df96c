"""Heavy modules imported on first use (diffusers, timm's models), one thread at a time.

A package's first import on two threads at once fails: diffusers hands the second thread its
half-built lazy module (ImportError: cannot import name 'UNet2DModel'), and timm's model modules,
which import one another, end in `_DeadlockError`. The apps do this (a warm-up thread builds models
while a page builds its own), so the lazy imports that build networks (classifiers by name, purifiers
by name, the UNet) go through this one lock; a scheduler imported after its UNet finds diffusers whole.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

# Reentrant: a module imported under the lock may itself import lazily.
_IMPORT_LOCK = threading.RLock()


def lazy_import(module: str, name: str) -> Any:
    """`from module import name`, under the lock: the attribute too, since diffusers imports its
    submodules on attribute access."""
    with _IMPORT_LOCK:
        return getattr(importlib.import_module(module), name)
