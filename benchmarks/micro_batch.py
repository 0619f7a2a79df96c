"""Network calls on a CPU whole vs in micro-batches (`core.micro_batch`), workload by workload.

Each workload and mode runs in a fresh process (a process that has already made the white-box
step's large allocations runs later whole calls up to twice as fast as a new one, which is not
what a `purifylab` command sees), once to warm up and once timed, on the same X-rays. The JSON
records the load average beside the times, since on a shared 2-core machine they move with it.

    white-box step   PGD's forward + backward through `one_shot` t* = 0.16 + `resnet`, 16 X-rays x
                     EOT 8 (the tables' batch: 128 rows)
    purified scoring `one_shot` + `resnet` on 100 X-rays in inference mode (`predict_probabilities`)
    certificate      CERTIFY of one X-ray with `resnet_smooth` at sigma 0.5: n0 + n = 1,100 noisy
                     copies in batches of 250, no denoiser (the named defense `smoothing`)

    python -m benchmarks.micro_batch --threads 1
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext

import torch

from benchmarks.environment import write_cpu_report
from benchmarks.options import REPORTS_DIR, BenchmarkParser, add_report_options, add_threads_option, check_report_out
from core import micro_batch
from core.certify import CertifyConfig, certify_image
from core.data.loading import load_split
from core.data.locations import XRAY_TEST_DIR
from core.defended import DefendedClassifier
from core.evaluate import predict_probabilities
from core.models import create_classifier
from core.purifiers import create_purifier

OUT = REPORTS_DIR / "micro_batch_cpu.json"
EOT = 8


@contextmanager
def whole_calls():
    """Every network call whole, as before session 17."""
    saved = dict(micro_batch.PIXELS)
    micro_batch.PIXELS.update(dict.fromkeys(saved, 2**62))
    try:
        yield
    finally:
        micro_batch.PIXELS.update(saved)


def white_box_step(images: torch.Tensor) -> Callable[[], None]:
    model = DefendedClassifier(create_purifier("one_shot", t_star=0.16), create_classifier("resnet"), eot=EOT, seed=0).eval()

    def run() -> None:
        x = images[:16].clone().requires_grad_(True)
        model(x).log_softmax(1)[:, 0].sum().backward()

    return run


def purified_scoring(images: torch.Tensor) -> Callable[[], None]:
    classifier, purifier = create_classifier("resnet"), create_purifier("one_shot", t_star=0.16)
    return lambda: predict_probabilities(classifier, images[:100], purifier=purifier)


def certificate(images: torch.Tensor) -> Callable[[], None]:
    classifier = create_classifier("resnet_smooth").eval()
    return lambda: certify_image(classifier, None, images[:1], CertifyConfig(sigma=0.5), seed=0)


# label, builder, images per run (to report seconds per image)
WORKLOADS = (
    ("white-box step: one_shot + resnet, 16 X-rays x EOT 8", white_box_step, 16),
    ("purified scoring: one_shot + resnet, 100 X-rays", purified_scoring, 100),
    ("certificate: resnet_smooth, sigma 0.5, n0 + n = 1,100 copies", certificate, 1),
)


def seconds(workload: int, whole: bool, threads: int) -> float:
    """One timed run of WORKLOADS[workload] after a warm-up (oneDNN primitives, allocator)."""
    torch.set_num_threads(threads)
    run = WORKLOADS[workload][1](load_split(XRAY_TEST_DIR, "all", 128, limit=100).floats())
    with whole_calls() if whole else nullcontext():
        run()
        started = time.perf_counter()
        run()
        return time.perf_counter() - started


def in_fresh_process(workload: int, whole: bool, threads: int) -> float:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(seconds, (workload, whole, threads))


def main() -> None:
    parser = BenchmarkParser(description=__doc__.splitlines()[0])
    add_report_options(parser, OUT)
    add_threads_option(parser, 1)
    args = parser.parse_args()
    check_report_out(args, parser)
    rows = []
    for index, (label, _, per_run) in enumerate(WORKLOADS):
        whole, micro = (in_fresh_process(index, mode, args.threads) for mode in (True, False))
        rows.append({
            "workload": label, "images": per_run, "seconds_whole": round(whole, 2), "seconds_micro_batches": round(micro, 2),
            "speed_up": round(whole / micro, 2), "load_average_1min": round(os.getloadavg()[0], 2),
        })  # fmt: skip
        print(f"{label:<62} whole {whole:7.2f} s  micro-batches {micro:7.2f} s  x{whole / micro:.2f}")
    write_cpu_report(args, rows, args.threads, pixels_per_chunk=dict(micro_batch.PIXELS))


if __name__ == "__main__":
    main()
