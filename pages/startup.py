"""The engine's warm-up, started once per server process: at server start under `python app.py`,
otherwise by the first visitor's first page."""

from __future__ import annotations

import threading

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

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


def through_app_navigation() -> None:
    """Streamlit treats a folder named `pages/` as a v1 multipage app until `st.navigation` has run once
    in the process, so a deep link on a fresh server ran the page without app.py and listed every module
    in the folder as a page. Leave that mode and rerun: app.py then declares the pages and opens the URL's.
    Only on a session's first run: AppTest re-enters that mode on every run, and a rerun there would
    drop the click that started it."""
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        if not st.session_state:
            st.rerun()
