"""The shipped sample X-rays (assets/gallery): one listing for the Streamlit pages and the Gradio server."""

from __future__ import annotations

import json
from pathlib import Path

from core.paths import GALLERY_DIR

REAL_GALLERY_DIR = GALLERY_DIR / "real"


def gallery() -> dict[str, tuple[Path, str | None]]:
    """Sample name -> (file, true class): real test-cohort X-rays (CC BY 4.0, never trained or tuned
    on; scripts/make_real_gallery.py) first, then synthetic ones (true class None)."""
    samples: dict[str, tuple[Path, str | None]] = {}
    record = REAL_GALLERY_DIR / "gallery.json"
    if record.is_file():
        for entry in json.loads(record.read_text())["images"]:
            number = entry["file"].rsplit("_", 1)[-1].removesuffix(".png")
            samples[f"real {entry['class'].lower()} #{number}"] = (REAL_GALLERY_DIR / entry["file"], entry["class"])
    for path in sorted(GALLERY_DIR.glob("synthetic_*.png")):
        samples[f"synthetic #{path.stem.rsplit('_', 1)[-1]} (no true label)"] = (path, None)
    return samples


def gallery_attribution() -> str:
    record = REAL_GALLERY_DIR / "gallery.json"
    return json.loads(record.read_text())["attribution"] if record.is_file() else ""
