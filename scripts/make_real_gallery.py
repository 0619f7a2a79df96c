"""Ship a small gallery of real chest X-rays from the public half of the Kermany test cohort.

The images are CC BY 4.0 (Kermany, Zhang, Goldbaum, Mendeley Data v2, doi:10.17632/rscbjbr9sj.2),
so a few may be redistributed with attribution: `count` per class, one per patient, evenly spaced
through the sorted file names (no choice by how a model reads them), resized to the models' 128 px
and written as PNG with their true label in assets/gallery/real/gallery.json. They come from the
test cohort, which no model trains or tunes on.

    .venv/bin/python scripts/make_real_gallery.py --data ../shared/data/chest_xray_pneumonia/test --count 6
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from core.data.groups import kermany_patient
from core.data.locations import portable_path
from core.io import load_image, save_image, to_model_input

OUT_DIR = Path(__file__).resolve().parents[1] / "assets" / "gallery" / "real"
ATTRIBUTION = (
    "Chest X-rays from Kermany D, Zhang K, Goldbaum M, 'Labeled Optical Coherence Tomography (OCT) and Chest X-Ray "
    "Images for Classification', Mendeley Data v2, doi:10.17632/rscbjbr9sj.2 (CC BY 4.0); Kermany et al., Cell "
    "172(5):1122-1131, 2018. Resized to 128 x 128 px by PurifyLab."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the test cohort folder (CLASS/IMAGE files)")
    parser.add_argument("--count", type=int, default=6, help="images per class")
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for old in OUT_DIR.glob("*.png"):
        old.unlink()
    entries = []
    for label, class_name in enumerate(("NORMAL", "PNEUMONIA")):
        first_of_patient: dict[str, Path] = {}
        for path in sorted((args.data / class_name).glob("*.jpeg")):
            first_of_patient.setdefault(kermany_patient(f"{class_name}/{path.name}") or path.name, path)
        files = list(first_of_patient.values())
        for number, index in enumerate(np.linspace(0, len(files) - 1, args.count).round().astype(int), start=1):
            source = files[index]
            name = f"{class_name.lower()}_{number}.png"
            save_image(to_model_input(load_image(source), args.size), OUT_DIR / name)
            entries.append({"file": name, "label": label, "class": class_name, "source": f"{class_name}/{source.name}"})
    record = {
        "attribution": ATTRIBUTION,
        "license": "CC BY 4.0",
        "source_folder": portable_path(args.data),
        "image_size": args.size,
        "selection": f"{args.count} per class, one per patient, evenly spaced through the sorted file names",
        "images": entries,
    }
    (OUT_DIR / "gallery.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"{len(entries)} images written to {OUT_DIR}")


if __name__ == "__main__":
    main()
