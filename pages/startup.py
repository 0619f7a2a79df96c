"""The engine's warm-up, started once per server process: at server start under `python app.py`,
otherwise by the first visitor's first page."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

SPACE_XSRF_COOKIE = "--server.xsrfCookieSameSite=none"

_lock = threading.Lock()
_thread: threading.Thread | None = None


def launch_arguments(options: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """Streamlit options for `python app.py`: the caller's, plus the cross-site XSRF cookie inside a
    Hugging Face Space (SPACE_ID set), whose HTTPS iframe needs it for uploads. Nowhere else: the cookie
    is HTTPS-only, so a container served over plain HTTP would refuse every upload."""
    if "SPACE_ID" in environ and not any(option.startswith("--server.xsrfCookieSameSite") for option in options):
        return [*options, SPACE_XSRF_COOKIE]
    return list(options)


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


# A deep link to this helper on a fresh server runs it as a page (Streamlit's v1 pages folder):
# leave for app.py's declared pages instead of showing a blank one.
if __name__ == "__main__":
    through_app_navigation()
