"""Where a figure was measured: hardware, library versions, git commit, and the GPU's bf16 peak for MFU."""

from __future__ import annotations

import argparse
import json
import os
import platform
from importlib import metadata
from pathlib import Path

import torch

from benchmarks.options import invocation, report_options

REPO_ROOT = Path(__file__).resolve().parents[1]

# Dense (no sparsity) bf16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s. Matched in order on
# torch.cuda.get_device_name(), so the more specific names come first ("L40S" before "L4").
BF16_DENSE_PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756.5),
    ("H100", 989.4),  # SXM5; also the "H100 80GB HBM3" name
    ("H200", 989.4),
    ("A100", 312.0),
    ("L40S", 362.05),
    ("L4", 121.0),
)

PACKAGES = ("torch", "torchvision", "diffusers", "timm", "torchattacks", "numpy", "accelerate")


def bf16_peak_tflops(device_name: str) -> float | None:
    """The bf16 dense peak for a GPU name, or None when it is not in the table (MFU is then not reported)."""
    for key, peak in BF16_DENSE_PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def git_commit() -> dict[str, object]:
    """HEAD and whether the working tree differs from it (a dirty tree's figures are not HEAD's), as
    every other output's provenance says them (core.results)."""
    from core.results import git_commit as head
    from core.results import git_dirty

    return {"commit": head(), "dirty": git_dirty()}


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["cuda"] = torch.version.cuda
    found["cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    return found


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: torch.device) -> dict[str, object]:
    """The machine, and the load on it: a shared CPU's figures are only comparable at a similar load."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    info: dict[str, object] = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gb": round(memory / 2**30, 1) if memory else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "gpu": None,
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info["gpu"] = {
            "name": properties.name,
            "capability": f"{properties.major}.{properties.minor}",
            "memory_gb": round(properties.total_memory / 2**30, 1),
            "count": torch.cuda.device_count(),
            "bf16_dense_peak_tflops": bf16_peak_tflops(properties.name),
        }
    return info


def write_report(path: Path, report: dict, args: argparse.Namespace) -> None:
    """The report, and its resolved options beside it (NAME.config.json), as every PurifyLab output."""
    from core.cli.reporting import write_with_config

    path.parent.mkdir(parents=True, exist_ok=True)
    # both at once, the provenance read first: written after the report, it called the tree dirty by the report itself
    write_with_config(path, json.dumps(report, indent=2) + "\n", {"command": invocation(), **report_options(args)})
    print(f"written to {path}")


def write_cpu_report(args: argparse.Namespace, rows: list[dict], threads: int | list[int], **extra: object) -> None:
    """A standalone CPU benchmark's JSON at args.out: when, at which commit, on what, with which versions, and its rows.

    `threads` (a list when several were timed) is the report's only thread count: this process's own
    (hardware's torch_threads) is not what micro_batch's spawned workers or serve_latency's server ran at."""
    from datetime import UTC, datetime

    machine = {key: value for key, value in hardware(torch.device("cpu")).items() if key != "torch_threads"}
    report = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"), "git": git_commit(), "hardware": machine,
        "versions": versions(), **extra, "threads": threads, "rows": rows,
    }  # fmt: skip
    write_report(args.out, report, args)
