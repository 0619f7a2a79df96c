"""Ship a small gallery of real chest X-rays from the public half of the Kermany test cohort.

The images are CC BY 4.0 (Kermany, Zhang, Goldbaum, Mendeley Data v2, doi:10.17632/rscbjbr9sj.2),
so a few may be redistributed with attribution: `count` per class, one per patient, evenly spaced
through the sorted file names (no choice by how a model reads them), resized to the models' 128 px
and written as PNG with their true label in assets/gallery/real/gallery.json. They come from the
test cohort, which no model trains or tunes on.

    .venv/bin/python scripts/make_real_gallery.py --data ../shared/data/chest_xray_pneumonia/test --count 6
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.options import BenchmarkParser, positive_int, refuse
from core.data.groups import kermany_patient
from core.data.locations import portable_path
from core.errors import PurifyLabError
from core.io import load_image, save_image, to_model_input

OUT_DIR = Path(__file__).resolve().parents[1] / "assets" / "gallery" / "real"
CLASSES = ("NORMAL", "PNEUMONIA")
ATTRIBUTION = (
    "Chest X-rays from Kermany D, Zhang K, Goldbaum M, 'Labeled Optical Coherence Tomography (OCT) and Chest X-Ray "
    "Images for Classification', Mendeley Data v2, doi:10.17632/rscbjbr9sj.2 (CC BY 4.0); Kermany et al., Cell "
    "172(5):1122-1131, 2018. Resized to 128 x 128 px by PurifyLab."
)


def one_per_patient(data: Path, class_name: str, count: int) -> list[Path]:
    """`count` files of one class, one per patient, evenly spaced through the sorted names; refused
    before anything is written when the class has fewer patients (a repeat would pass as another)."""
    first_of_patient: dict[str, Path] = {}
    for path in sorted((data / class_name).glob("*.jpeg")):
        first_of_patient.setdefault(kermany_patient(f"{class_name}/{path.name}") or path.name, path)
    files = list(first_of_patient.values())
    if len(files) < count:
        refuse(f"--data {data}: {class_name}/ has {len(files)} patient(s) with .jpeg images, fewer than --count {count}")
    return [files[index] for index in np.linspace(0, len(files) - 1, count).round().astype(int)]


def replace_folder(built: Path, out_dir: Path) -> None:
    """Swap the complete new gallery in for the old one with two renames, so no failure leaves a
    gallery.json naming images that are gone."""
    if not out_dir.exists():
        built.rename(out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-old-", dir=out_dir.parent))
    try:
        os.replace(out_dir, old / out_dir.name)
    except OSError:
        old.rmdir()
        raise
    try:
        built.rename(out_dir)
    except OSError:
        os.replace(old / out_dir.name, out_dir)
        old.rmdir()
        raise
    shutil.rmtree(old)


def main() -> None:
    parser = BenchmarkParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="the test cohort folder (CLASS/IMAGE files)")
    parser.add_argument("--count", type=positive_int, default=6, help="images per class")
    parser.add_argument("--size", type=positive_int, default=128)
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help=f"the gallery folder, replaced whole (default {portable_path(OUT_DIR)})")
    args = parser.parse_args()
    if not args.data.is_dir():
        refuse(f"--data {args.data}: not a folder")
    if args.out_dir.exists() and not args.out_dir.is_dir():
        refuse(f"--out-dir {args.out_dir}: not a folder")

    chosen = {class_name: one_per_patient(args.data, class_name, args.count) for class_name in CLASSES}
    try:
        args.out_dir.parent.mkdir(parents=True, exist_ok=True)
        built = Path(tempfile.mkdtemp(prefix=f".{args.out_dir.name}-new-", dir=args.out_dir.parent))
    except OSError as error:
        refuse(f"--out-dir {args.out_dir}: {error.strerror or error}")
    try:
        entries = []
        for label, class_name in enumerate(CLASSES):
            for number, source in enumerate(chosen[class_name], start=1):
                try:
                    image = load_image(source)
                except PurifyLabError as error:
                    raise PurifyLabError(f"{source}: {error}") from None
                name = f"{class_name.lower()}_{number}.png"
                save_image(to_model_input(image, args.size), built / name)
                entries.append({"file": name, "label": label, "class": class_name, "source": f"{class_name}/{source.name}"})
        record = {
            "attribution": ATTRIBUTION,
            "license": "CC BY 4.0",
            "source_folder": portable_path(args.data),
            "image_size": args.size,
            "selection": f"{args.count} per class, one per patient, evenly spaced through the sorted file names",
            "images": entries,
        }
        (built / "gallery.json").write_text(json.dumps(record, indent=2) + "\n")
        built.chmod(0o755)  # mkdtemp's 0700 would hide the gallery from the app's user
        replace_folder(built, args.out_dir)
    except (PurifyLabError, OSError) as error:
        refuse(f"{error}; {args.out_dir} is unchanged")
    finally:
        shutil.rmtree(built, ignore_errors=True)
    print(f"{len(entries)} images written to {args.out_dir}")


if __name__ == "__main__":
    main()
