"""Clean accuracy of every shipped classifier on blurred, noised and purified X-rays.

A classifier trained on clean images can collapse on the images a purifier hands it, so before any
attack we measure each (classifier, purifier) pair on clean X-rays of the test cohort. Each purifier runs
once; its outputs are cached (safetensors under results/cache/) and every classifier reads them, so
retraining one classifier recomputes only that classifier's cells. Cells go through the results
store, so a killed run resumes.

    python scripts/input_shift.py --threads 2
writes results/input-shift/input-shift.{md,json} and the resolved config beside them. Outputs written
with other settings (another --limit, --columns, --threads, ...) are refused before any compute, as
`purifylab table` refuses them: pass --overwrite or another --out-dir.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchmarks.options import BenchmarkParser, positive_int  # noqa: E402
from core.data.loading import load_split  # noqa: E402
from core.data.locations import XRAY_TEST_DIR, dataset_of, portable_path  # noqa: E402
from core.errors import PurifyLabError  # noqa: E402
from core.evaluate import predict_probabilities  # noqa: E402
from core.metrics import classification_metrics  # noqa: E402
from core.models import create_classifier, list_classifiers  # noqa: E402
from core.paths import CACHE_DIR, RESULTS_DIR, RESULTS_STORE  # noqa: E402
from core.purifiers import create_purifier, weights_stem  # noqa: E402
from core.results import ResultStore, canonical_json, run_cells, software_provenance  # noqa: E402
from core.tables import check_replaceable  # noqa: E402
from core.tables.render import written_config  # noqa: E402
from core.tables.runner import model_identity  # noqa: E402  (weights and calibration: a refit re-reads)
from core.weights import shipped_cards  # noqa: E402

# (column label, purifier name, parameters): the degradations first, then every purifier at its default.
COLUMNS = [
    ("clean", "none", {}),
    ("Gaussian blur σ 1", "blur", {"sigma": 1.0}),
    ("Gaussian blur σ 2", "blur", {"sigma": 2.0}),
    ("Gaussian blur σ 3", "blur", {"sigma": 3.0}),
    ("noise (t* default)", "noise", {}),
    ("cold_blur", "cold_blur", {}),
    ("cold_direct", "cold_direct", {}),
    ("cold_recon", "cold_recon", {}),
    ("one_shot", "one_shot", {}),
    ("ddpm", "ddpm", {}),
    ("ddim", "ddim", {}),
    ("diffdefense", "diffdefense", {}),
]
IMAGE_SIZE = 128


@dataclass(frozen=True)
class InputShiftRun:
    """This table's settings in the shape `check_replaceable` and `written_config` read a table preset
    (name, data, resolved()), so its outputs obey the same replace rule as every `purifylab table`."""

    settings: dict
    name: str = "input-shift"

    @property
    def data(self) -> str:
        return self.settings["data"]

    def resolved(self) -> dict:
        return self.settings


def purified_images(name: str, params: dict, images: torch.Tensor, data_hash: str, seed: int, batch_size: int) -> tuple[torch.Tensor, int]:
    """The purifier's outputs for `images` (uint8), computed once and cached on disk, and its NFE."""
    purifier = create_purifier(name, **params)
    weights = {stem: card["sha256"] for stem, card in shipped_cards().items() if stem in ("ddpm_unet", "cold_unet")}
    identity = canonical_json(
        {"purifier": purifier.describe(), "data": data_hash, "n": len(images), "seed": seed, "weights": weights, "batch_size": batch_size}
    )
    cache = CACHE_DIR / "input-shift" / f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.safetensors"
    if cache.is_file():
        stored = load_file(cache)
        if bytes(stored["identity"].tolist()).decode() == identity:
            return stored["images"].float(), purifier.nfe()
    outputs = []
    for start in tqdm(range(0, len(images), batch_size), desc=name, unit="batch", leave=False):
        batch = images[start : start + batch_size].float().div(255.0)
        outputs.append(purifier.purify(batch, seed=seed + start).half())
    result = torch.cat(outputs)
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_file({"images": result, "identity": torch.tensor(list(identity.encode()), dtype=torch.uint8)}, cache)
    return result.float(), purifier.nfe()


def main() -> None:
    parser = BenchmarkParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(XRAY_TEST_DIR))
    parser.add_argument("--split", default="all")
    parser.add_argument("--limit", type=positive_int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--threads", type=positive_int, default=None)
    parser.add_argument("--store", default=str(RESULTS_STORE))
    parser.add_argument("--out-dir", default=str(RESULTS_DIR / "input-shift"))
    parser.add_argument("--columns", default=None, help="comma-separated purifier names to keep (default: all)")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs in --out-dir written with other settings")
    args = parser.parse_args()
    columns = COLUMNS
    if args.columns:
        keep = set(args.columns.split(","))
        unknown = keep - {name for _, name, _ in COLUMNS}
        if unknown:
            parser.error(f"unknown column purifier(s): {', '.join(sorted(unknown))}")
        columns = [column for column in COLUMNS if column[1] in keep]
    cards = shipped_cards()
    classifiers = [name for name in list_classifiers() if name in cards and dataset_of(name) == "xray"]
    out = Path(args.out_dir)
    settings = {key: value for key, value in vars(args).items() if key != "overwrite"}
    run_settings = InputShiftRun(
        settings
        | {
            "data": portable_path(args.data),
            "store": portable_path(args.store),
            "out_dir": portable_path(args.out_dir),
            "columns": columns,
            "classifiers": classifiers,
            "image_size": IMAGE_SIZE,
        }
    )
    try:
        check_replaceable(run_settings, out, args.overwrite)
    except PurifyLabError as error:
        parser.exit(2, f"error: {error}\n")
    if args.threads:
        torch.set_num_threads(args.threads)

    data = load_split(args.data, args.split, IMAGE_SIZE, limit=args.limit)
    cells = [
        {"kind": "input-shift", "column": label, "purifier": name, "params": params, "classifier": classifier,
         "classifier_identity": model_identity(classifier, None), "data": data.data_hash, "split": args.split,
         "n": len(data.labels), "seed": args.seed, "batch_size": args.batch_size}
        for label, name, params in columns for classifier in classifiers
    ]  # fmt: skip
    purified: dict[str, tuple[torch.Tensor, int]] = {}

    def compute(cell) -> dict:
        if cell["column"] not in purified:
            purified.clear()  # one purifier's outputs in memory at a time
            purified[cell["column"]] = purified_images(cell["purifier"], cell["params"], data.images, data.data_hash, args.seed, args.batch_size)
        model = create_classifier(cell["classifier"])
        images, nfe = purified[cell["column"]]
        probabilities = predict_probabilities(model, images)
        metrics = classification_metrics(data.labels.numpy(), probabilities, bootstrap=1000, seed=args.seed).to_dict()
        return {**metrics, "nfe": nfe}

    with ResultStore(args.store) as store:
        run = run_cells(cells, compute, store)
    results = [{"cell": cell, "metrics": metrics} for cell, metrics in zip(cells, run.metrics, strict=True)]

    by = {(r["cell"]["column"], r["cell"]["classifier"]): r["metrics"] for r in results}
    header = "| classifier | " + " | ".join(label for label, _, _ in columns) + " |"
    lines = [
        f"Balanced accuracy on clean X-rays of {portable_path(args.data)} ({args.split}, n = {len(data.labels)}) after each degradation or purifier "
        "at its default setting; AUROC in brackets. No attack.",
        "",
        header,
        "|" + "---|" * (len(columns) + 1),
    ]
    for classifier in classifiers:
        cells_text = [f"{by[(label, classifier)]['balanced_accuracy']:.3f} ({by[(label, classifier)]['auroc']:.3f})" for label, _, _ in columns]
        lines.append(f"| {classifier} | " + " | ".join(cells_text) + " |")
    markdown = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "input-shift.md").write_text(markdown)
    document = {"title": f"Clean accuracy after each degradation or purifier ({args.split}, n = {len(data.labels)})", "results": results}
    (out / "input-shift.json").write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    # what produced the table, as `purifylab table` records it beside its settings (check_replaceable compares the settings only)
    weights = {f"{cell['classifier']}.safetensors": cell["classifier_identity"]["sha256"] for cell in cells}
    weights |= {f"{stem}.safetensors": cards[stem]["sha256"] for _, name, params in columns if (stem := weights_stem(name, params))}
    provenance = {"software": software_provenance(), "weights": dict(sorted(weights.items())), "data_hashes": [data.data_hash]}
    (out / "input-shift.config.json").write_text(json.dumps({**written_config(run_settings), "provenance": provenance}, indent=1) + "\n")
    print(markdown)
    print(f"cells computed {len(run.computed)}, reused {len(run.reused)}", file=sys.stderr)


if __name__ == "__main__":
    main()
