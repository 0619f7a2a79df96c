"""Latency of `purifylab serve` through gradio_client: the figures README's serving table quotes.

    python -m benchmarks.serve_latency --repeats 5

Starts `python -m core serve` on a free local port (its default threads unless --threads), records
the seconds from start to its first answer, then for each call below the first round trip and the
median, min and max of --repeats more: round trips as a Python client sees them, result images
downloaded, on the gallery X-ray README's examples use and on an upload of the same file. The first
call of each endpoint pays for loading its models; later ones show what a visitor waits. The load
average is recorded beside each row because a shared 2-core machine is slower than an idle one.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.environment import REPO_ROOT, invocation, write_cpu_report
from benchmarks.options import REPORTS_DIR, BenchmarkParser, add_report_options, add_threads_option, check_report_out, positive_int, refuse
from core.data.gallery import gallery

OUT = REPORTS_DIR / "serve_latency_cpu.json"
SAMPLE = "real pneumonia #1"
START_TIMEOUT_S = 240  # importing gradio, torch and diffusers takes 40 s on a loaded 2-core machine


def calls(upload: object) -> list[tuple[str, str, tuple]]:
    """(endpoint, what, arguments) in the order a visitor meets them; arguments as README shows."""
    return [
        ("/classify", "gallery X-ray, vit", (None, SAMPLE, "vit")),
        ("/classify", "uploaded PNG, vit", (upload, None, "vit")),
        ("/attack", "PGD-10, eps 0.03, vit", (None, SAMPLE, "vit", "pgd", 0.03)),
        ("/attack", "FGSM, eps 0.03, vit", (None, SAMPLE, "vit", "fgsm", 0.03)),
        ("/purify", "cold_direct, vit", (None, SAMPLE, "vit", "cold_direct")),
        ("/purify", "ddpm, vit", (None, SAMPLE, "vit", "ddpm")),
        ("/attack_and_purify", "PGD-10 eps 0.03 + cold_direct, vit", (None, SAMPLE, "vit", "pgd", 0.03, "cold_direct")),
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerExited(RuntimeError):
    """The server ended before it answered (it refused its options, or crashed): no timeout to blame."""

    def __init__(self, status: int, log: Path) -> None:
        lines = log.read_text().strip().splitlines()
        last = lines[-1].removeprefix("error: ") if lines else "(no output)"  # its own one-line refusal, or a traceback's last line
        super().__init__(f"python -m core serve exited with status {status} before answering: {last}")
        self.status = status


def connect(port: int, server: subprocess.Popen, log: Path, timeout_s: float = START_TIMEOUT_S):
    """A client of the server once it serves its config; ServerExited with its last line if it ends
    first, RuntimeError with its log if it is still starting after `timeout_s`."""
    import httpx
    from gradio_client import Client

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return Client(f"http://127.0.0.1:{port}/", verbose=False)
        except (httpx.HTTPError, ValueError):  # not listening yet, or its config not served yet
            if server.poll() is not None:
                raise ServerExited(server.returncode, log) from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server did not answer within {timeout_s:.0f} s:\n{log.read_text()[-2000:]}") from None
            time.sleep(0.5)


def measure(client, upload: object, repeats: int) -> list[dict]:
    rows = []
    for endpoint, what, arguments in calls(upload):
        seconds = []
        for _ in range(1 + repeats):
            started = time.perf_counter()
            client.predict(*arguments, api_name=endpoint)
            seconds.append(time.perf_counter() - started)
        first, rest = seconds[0], seconds[1:]
        row = {
            "endpoint": endpoint, "what": what, "first_call_s": round(first, 2), "repeats": repeats,
            "median_s": round(statistics.median(rest), 2), "min_s": round(min(rest), 2), "max_s": round(max(rest), 2),
            "load_average_1min": round(os.getloadavg()[0], 2),
        }  # fmt: skip
        print(f"{endpoint:<19} {what:<36} first {first:6.2f} s, median {row['median_s']:6.2f} s ({row['min_s']:.2f}-{row['max_s']:.2f})")
        rows.append(row)
    return rows


def main() -> None:
    parser = BenchmarkParser(description=__doc__.splitlines()[0])
    add_report_options(parser, OUT)
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed calls per endpoint after its first")
    add_threads_option(parser, None, help="the server's torch threads (default: its own)")
    args = parser.parse_args()
    check_report_out(args, parser)
    from gradio_client import handle_file

    port = free_port()
    command = [sys.executable, "-m", "core", "serve", "--port", str(port)]
    command += [] if args.threads is None else ["--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "server.log"
        env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_TEMP_DIR": str(Path(scratch) / "gradio")}
        started = time.perf_counter()
        with log.open("w") as sink:
            server = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            try:
                client = connect(port, server, log)
            except ServerExited as error:
                refuse(str(error), error.status)
            first_answer = time.perf_counter() - started
            print(f"server answered {first_answer:.1f} s after start")
            rows = measure(client, handle_file(str(gallery()[SAMPLE][0])), args.repeats)
        finally:
            server.terminate()
            server.wait(timeout=30)
    threads = args.threads if args.threads is not None else torch.get_num_threads()
    write_cpu_report(args, rows, threads, command=invocation(), server_first_answer_s=round(first_answer, 1), sample=SAMPLE)


if __name__ == "__main__":
    main()
