"""How long the CLI takes to refuse bad input: `python -m benchmarks.refusals [--repeats N] [--out FILE]`.

Each case is a fresh `python -m core ...` process, as a user runs it, timed from start to exit: every
file of the hostile catalogue through `purify` (with the diffusion purifier) and `attack`, an `--out`
that is a folder, a missing `--data` or a `--json` that is a folder for `evaluate`, `certify` and
`table`, and a mistyped classifier or attack name for `evaluate` and `attack`. Each must exit 2 with
one `error:` line; the target is <= 2 s on 2 cores. The machine's load average is recorded beside the
wall times, since a loaded machine is what makes imports slow, and so is each process's CPU time
(user + system), which is about what it takes on an idle machine.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.environment import write_report
from benchmarks.options import REPORTS_DIR, BenchmarkParser, add_report_options, check_report_out, positive_int

REPO = Path(__file__).resolve().parents[1]
OUT = REPORTS_DIR / "refusals.json"
TARGET_S = 2.0


def _hostile_files(folder: Path) -> list[Path]:
    """The catalogue lives with the tests, whose fixture it is; it is imported from there, not copied."""
    sys.path.insert(0, str(REPO / "tests"))
    from hostile_files import HOSTILE

    paths = []
    for name, build in sorted(HOSTILE.items()):
        path = folder / name
        path.write_bytes(build())
        paths.append(path)
    return paths


def _cases(folder: Path) -> dict[str, list[str]]:
    out_png, a_folder, missing = folder / "o.png", folder / "out.png", folder / "missing"
    a_folder.mkdir()
    good = folder / "grey.png"
    good.write_bytes(_grey_png())
    cases = {}
    for path in _hostile_files(folder):
        cases[f"purify {path.name}"] = ["purify", str(path), "--purifier", "ddpm", "--out", str(out_png)]
        cases[f"attack {path.name}"] = ["attack", str(path), "--out", str(out_png)]
    cases["purify --out FOLDER"] = ["purify", str(good), "--out", str(a_folder)]
    cases["attack --out FOLDER"] = ["attack", str(good), "--out", str(a_folder)]
    cases["evaluate --data MISSING"] = ["evaluate", "--data", str(missing)]
    cases["evaluate --json FOLDER"] = ["evaluate", "--data", str(folder), "--json", str(a_folder)]
    cases["certify --data MISSING"] = ["certify", "--data", str(missing)]
    cases["certify --json FOLDER"] = ["certify", "--data", str(folder), "--json", str(a_folder)]
    cases["table --data MISSING"] = ["table", "quick", "--data", str(missing)]
    data = _class_folders(folder / "data", good)
    for option in ("--classifier", "--attack"):
        cases[f"evaluate {option} NOSUCH"] = ["evaluate", "--data", str(data), option, "nosuch"]
        cases[f"attack {option} NOSUCH"] = ["attack", str(good), option, "nosuch", "--out", str(out_png)]
    return cases


def _class_folders(folder: Path, image: Path) -> Path:
    """A two-class data set of one valid image each, so that only the name is wrong."""
    for label in ("NORMAL", "PNEUMONIA"):
        (folder / label).mkdir(parents=True)
        (folder / label / image.name).write_bytes(image.read_bytes())
    return folder


def _grey_png() -> bytes:
    """A valid 64 x 64 PNG, so that only the output path is wrong."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (64, 64), 128).save(buffer, "PNG")
    return buffer.getvalue()


def _run(args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cpu_before = _children_cpu_s()
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    cpu_seconds = _children_cpu_s() - cpu_before
    lines = done.stderr.strip().splitlines()
    one_line = done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ")
    return {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "exit": done.returncode,
        "one_line": one_line,
        "message": lines[-1] if lines else "",
    }


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> int:
    parser = BenchmarkParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=positive_int, default=1, help="runs per case; the slowest is reported")
    add_report_options(parser, OUT)
    options = parser.parse_args(argv)
    check_report_out(options, parser)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        cases = _cases(Path(tmp))
        results = {}
        for label, args in cases.items():
            runs = [_run(args) for _ in range(options.repeats)]
            results[label] = max(runs, key=lambda run: run["seconds"])
            print(
                f"{results[label]['seconds']:6.2f} s  CPU {results[label]['cpu_seconds']:5.2f} s  {'ok ' if results[label]['one_line'] else 'BAD'}  {label}",
                flush=True,
            )
    slowest = max(results.items(), key=lambda item: item[1]["seconds"])
    report = {
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "target_s": TARGET_S,
        "max_s": slowest[1]["seconds"],
        "max_cpu_s": max(run["cpu_seconds"] for run in results.values()),
        "slowest": slowest[0],
        "all_one_line_exit_2": all(run["one_line"] for run in results.values()),
        "cases": results,
    }
    write_report(options.out, report, options)
    print(
        f"max {report['max_s']:.2f} s ({slowest[0]}), max CPU {report['max_cpu_s']:.2f} s, load average {report['load_average_before']} -> "
        f"{report['load_average_after']}; all one line, exit 2: {report['all_one_line_exit_2']}; report: {options.out}"
    )
    return 0 if report["all_one_line_exit_2"] else 1


if __name__ == "__main__":
    sys.exit(main())
