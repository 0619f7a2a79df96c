"""Do the shipped X-ray denoisers purify validation X-rays they were trained on better than new ones?

`ddpm_unet` and `cold_unet` were trained (sessions 3-4) on the train part of the old image-level
split of the Kermany train folder (4,152 images), before the project moved to the patient split;
616 of today's 778 validation X-rays were in it. Every t*, depth and defense choice since was made on
that validation part, so this measures, on the 778, whether purification is better on the 616 seen
images than on the 162 unseen ones: reconstruction PSNR against the clean image and the shipped
`resnet`'s accuracy after purification, per purifier at its shipped setting.

    .venv/bin/python scripts/denoiser_overlap.py --out results/denoiser-overlap/denoiser_overlap.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.options import BenchmarkParser, positive_int  # noqa: E402
from core.data.groups import ONE_GROUP_PER_IMAGE, Grouping, group_images  # noqa: E402
from core.data.loading import project_split  # noqa: E402
from core.data.locations import XRAY_TRAIN_DIR  # noqa: E402
from core.data.sources import load_dataset  # noqa: E402
from core.data.splits import make_splits  # noqa: E402
from core.metrics import clopper_pearson  # noqa: E402
from core.models import create_classifier  # noqa: E402
from core.paths import CACHE_DIR  # noqa: E402
from core.purifiers import create_purifier  # noqa: E402

PURIFIERS = (("one_shot", {"t_star": 0.16}), ("ddpm", {"t_star": 0.16}), ("cold_direct", {}))
OLD_SPLIT = {"val": 0.1, "test": 0.1, "seed": 0}  # what the denoisers' cards record: by image, 80/10/10


def group_figures(purified: torch.Tensor, clean: torch.Tensor, predictions: torch.Tensor, labels: torch.Tensor) -> dict:
    correct = predictions == labels
    k, n = int(correct.sum()), len(labels)
    low, high = clopper_pearson(k, n)
    psnr = 10 * torch.log10(1 / (purified - clean).pow(2).flatten(1).mean(1))
    balanced = float(np.mean([float(correct[labels == c].float().mean()) for c in (0, 1)]))
    return {"n": n, "accuracy": k / n, "accuracy_ci95": [low, high], "balanced_accuracy": balanced, "mean_psnr_db": float(psnr.mean())}


def main() -> None:
    parser = BenchmarkParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=positive_int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = load_dataset(XRAY_TRAIN_DIR, size=128, channels=1, progress=False, cache_dir=CACHE_DIR)
    val = np.asarray(project_split(images, group_images(images.sources, XRAY_TRAIN_DIR)).indices["val"])
    by_image = Grouping(tuple(images.sources), ONE_GROUP_PER_IMAGE)
    old_train = np.asarray(make_splits(images, val=OLD_SPLIT["val"], test=OLD_SPLIT["test"], seed=OLD_SPLIT["seed"], grouping=by_image).indices["train"])
    seen = torch.from_numpy(np.isin(val, old_train))
    clean, labels = images.images[val].float().div(255), images.labels[val]
    classifier = create_classifier("resnet").eval()
    results = {}
    for name, params in PURIFIERS:
        torch.manual_seed(0)
        purifier = create_purifier(name, **params).eval()
        with torch.no_grad():
            purified = torch.cat([purifier.purify(batch) for batch in clean.split(32)])
            predictions = torch.cat([classifier(batch).argmax(1) for batch in purified.split(64)])
        results[name] = {
            "params": params,
            **{group: group_figures(purified[mask], clean[mask], predictions[mask], labels[mask]) for group, mask in (("seen", seen), ("unseen", ~seen))},
        }
        print(name, json.dumps(results[name]))
    report = {
        "command": "python scripts/denoiser_overlap.py " + " ".join(sys.argv[1:]),
        "validation_images": len(val), "seen_in_denoiser_training": int(seen.sum()), "old_split": OLD_SPLIT,
        "classifier": "resnet", "image_size": 128, "threads": args.threads, "results": results,
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
