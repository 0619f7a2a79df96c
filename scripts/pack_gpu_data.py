"""Copy an image folder for the device tool's 64 MiB transfer: every image as a 128-px grey JPEG.

The X-ray train folder (42 MB of 224-px RGB JPEGs) and the tracked tree do not fit one transfer
together. Re-encoded at the models' input size it is 32 MB; the loader then reads the same file
names, labels and patient split, with a mean pixel difference of 0.8 / 255 at quality 95 (session 16).
Cards of models trained on such a copy are refitted and re-measured on the originals before they ship.

    python scripts/pack_gpu_data.py ../shared/data/chest_xray_pneumonia/train .gpudata/chest_xray_pneumonia/train
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.options import BenchmarkParser, positive_int, refuse  # noqa: E402
from core.data.decode import prepare_image  # noqa: E402
from core.data.sources import is_image_file  # noqa: E402


def files_to_pack(source: Path, target: Path) -> list[Path]:
    """Every file under `source`, refused before any is written when there is no image to pack or
    when `target` is `source` or inside it: the lossy re-encode would replace the originals."""
    if not source.is_dir():
        refuse(f"source {source}: not a folder")
    files = sorted(p for p in source.rglob("*") if p.is_file())
    if not any(is_image_file(path) for path in files):
        refuse(f"source {source}: holds no image files")
    if target.resolve().is_relative_to(source.resolve()):
        refuse(f"target {target} is the source or inside it: the re-encoded copies would replace or mix with the originals")
    return files


def main() -> None:
    parser = BenchmarkParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--size", type=positive_int, default=128)
    parser.add_argument("--quality", type=int, default=95)
    args = parser.parse_args()
    for path in files_to_pack(args.source, args.target):
        out = args.target / path.relative_to(args.source)
        out.parent.mkdir(parents=True, exist_ok=True)
        if is_image_file(path):  # the name (and so the patient id) is kept; only the pixels are re-encoded
            with Image.open(path) as image:
                pixels = prepare_image(image, channels=1, size=args.size)[0]
            Image.fromarray(pixels).save(out, "JPEG", quality=args.quality)
        else:
            shutil.copy(path, out)


if __name__ == "__main__":
    main()
