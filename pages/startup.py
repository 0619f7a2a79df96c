"""The engine's warm-up, started once per server process: at server start under `python app.py`,
otherwise by the first visitor's first page."""

from __future__ import annotations

import threading

_lock = threading.Lock()
_thread: threading.Thread | None = None


def start_warm_up() -> threading.Thread:
    """Import the engine (torch and its kin: seconds) and load the first pages' models in a background
    thread, so the home page renders at once and the walkthrough and lab find them ready. Idempotent."""
    global _thread
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_load, name="purifylab-warm-up", daemon=True)
            _thread.start()
    return _thread


def _load() -> None:
    from pages.common import warm_up

    warm_up()
