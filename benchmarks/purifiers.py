"""Latency and NFE of every registered purifier at its default setting.

CPU: seconds per single X-ray (224 px on disk, resized to the purifier's resolution, then purified)
with the given number of threads, median of --repeats runs after one warm-up. GPU (when CUDA is
present): images per second at --batch (64 by default) in fast mode. Purifiers whose weights are
not trained yet are listed as missing rather than failing the run.

    .venv/bin/python benchmarks/purifiers.py --threads 2 --out results/benchmarks/purifiers_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from core.errors import PurifyLabError
from core.io import load_image, to_model_input
from core.purifiers import create_purifier, list_purifiers

SAMPLE_XRAY = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "chest_xray_pneumonia" / "train" / "NORMAL"


def sample_image() -> torch.Tensor:
    """A real X-ray when the shared data is there, else a fixed random image of the same size."""
    files = sorted(SAMPLE_XRAY.glob("*.jpeg"))[:1]
    if files:
        return load_image(files[0]).pixels
    return torch.rand(1, 224, 224, generator=torch.Generator().manual_seed(0))


def cpu_latency(purifier, image: torch.Tensor, repeats: int) -> float:
    size = getattr(purifier, "image_size", None)

    def once() -> float:
        started = time.perf_counter()
        x = to_model_input(image, size) if size is not None else image[None]
        purifier.purify(x, seed=0)
        return time.perf_counter() - started

    once()
    return statistics.median(once() for _ in range(repeats))


def gpu_throughput(purifier, image: torch.Tensor, batch: int, repeats: int) -> float:
    device = torch.device("cuda")
    purifier = purifier.to(device)
    size = getattr(purifier, "image_size", None)
    x = (to_model_input(image, size) if size is not None else image[None]).to(device).expand(batch, -1, -1, -1).contiguous()
    purifier.purify(x, seed=0)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeats):
        purifier.purify(x, seed=0)
    torch.cuda.synchronize()
    return batch * repeats / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--purifiers", default=",".join(list_purifiers()), help="comma-separated names")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = sample_image()
    rows = []
    for name in args.purifiers.split(","):
        try:
            purifier = create_purifier(name)
        except PurifyLabError as error:
            rows.append({"purifier": name, "missing": str(error)})
            continue
        row = {"purifier": name, "nfe": purifier.nfe(), "config": purifier.config.to_dict(),
               "cpu_seconds_per_image": round(cpu_latency(purifier, image, args.repeats), 4)}
        if torch.cuda.is_available():
            row[f"gpu_images_per_second_batch{args.batch}"] = round(gpu_throughput(purifier, image, args.batch, args.repeats), 1)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "config"}), flush=True)
    result = {"cpu_threads": args.threads, "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "results": rows}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
