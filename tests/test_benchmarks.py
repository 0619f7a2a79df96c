"""The performance suite (benchmarks/, `purifylab bench`) in its smoke preset: tiny seeded models, every
section and every registered purifier, in seconds. Checks the report's schema and that our path and
the naive reference agree; nothing here asserts a speed."""

from __future__ import annotations

import json
import os
import runpy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli import main
from core.purifiers import list_purifiers

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEED_KEYS = {"images_per_s", "latency_s", "images", "seconds"}
SMOKE = ("bench", "--preset", "smoke", "--bf16", "--compile")


@pytest.fixture(scope="module")
def report_path(tmp_path_factory) -> Path:
    """One smoke run through the CLI, with two GPU switches on: a CPU run must report them skipped."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    with pytest.raises(SystemExit) as exit_info:
        main([*SMOKE, "--out", str(out)])
    assert exit_info.value.code in (0, None)
    return out


@pytest.fixture(scope="module")
def report(report_path) -> dict:
    return json.loads(report_path.read_text())


def test_report_names_where_and_how_it_was_measured(report):
    assert report["schema"] == "purifylab-bench/1"
    assert set(report["git"]) == {"commit", "dirty"}
    assert {"cpu", "cpu_count", "torch_threads", "load_average", "gpu"} <= set(report["hardware"])
    assert report["hardware"]["gpu"] is None
    assert {"python", "torch", "diffusers", "timm", "torchattacks"} <= set(report["versions"])
    assert report["settings"]["preset"] == "smoke" and report["settings"]["tiny"] is True
    assert report["optimisations"] == {
        "bf16": "skipped: no CUDA", "channels_last": "off", "compile": "skipped: no CUDA", "cuda_graphs": "off",
    }  # fmt: skip
    assert set(report["sections"]) == {"purify", "attack", "train", "app"}


def test_every_figure_has_ours_naive_and_speedup(report):
    for rows in report["sections"].values():
        for row in rows:
            assert SPEED_KEYS <= set(row["ours"]) and SPEED_KEYS <= set(row["naive"])
            assert row["ours"]["images_per_s"] > 0 and row["naive"]["images_per_s"] > 0
            assert row["speedup"] == pytest.approx(row["ours"]["images_per_s"] / row["naive"]["images_per_s"], rel=1e-2)


def test_every_purifier_at_batch_1_and_the_large_batch_matches_the_naive_loop(report):
    rows = {(row["name"], row["batch"]): row for row in report["sections"]["purify"]}
    assert set(rows) == {(name, batch) for name in list_purifiers() for batch in (1, 2)}
    for (name, batch), row in rows.items():
        check = row["check"]
        if batch == 1 or not row["stochastic"]:  # same noise draws: pixels comparable
            assert check["max_abs_diff"] <= 1e-4, (name, batch)
        else:
            assert check["max_abs_diff"] is None
        assert check["prediction_agreement"] == 1.0 and check["within_0_5_points"], (name, batch)
        assert row["mfu"] is None  # no GPU, no peak to compare against
    assert rows[("ddpm", 1)]["nfe"] == 10 and rows[("ddpm", 1)]["flops_per_image"] > 0
    assert rows[("ddpm", 1)]["gflops_per_s"] > 0


def test_attacks_on_the_classifier_and_through_purifiers(report):
    rows = report["sections"]["attack"]
    alone = [row for row in rows if row["purifier"] is None]
    assert {(row["attack"], row["batch"]) for row in alone} == {("pgd", 1), ("pgd", 2), ("apgd", 1), ("apgd", 2)}
    for row in alone:
        if row["batch"] == 1:
            assert row["check"]["max_abs_diff"] == 0.0  # the same attack from the same random start
    chained = {(row["purifier"], row["threat"], row["attack"]) for row in rows if row["purifier"]}
    settings = report["settings"]
    assert chained == {(p, t, a) for p in settings["chain_purifiers"] for t in settings["chain_threats"] for a in ("pgd", "apgd")}
    for row in rows:
        if row["purifier"] == "ddpm" and row["threat"] == "bpda-eot":
            assert row["eot"] == settings["chain_eot"] and row["gradient_evaluations_per_image"] == row["steps"] * row["eot"]


def test_training_and_app_paths_agree(report):
    assert {(row["name"], row["batch"]) for row in report["sections"]["train"]} == {
        ("ddpm_unet", 1), ("ddpm_unet", 2), ("vit", 1), ("vit", 2),
    }  # fmt: skip
    for row in report["sections"]["train"]:
        assert row["check"]["loss_abs_diff"] <= 1e-6 and row["flops_per_image"] > 0
    assert [row["name"] for row in report["sections"]["app"]] == ["step", "slider"]
    for row in report["sections"]["app"]:
        assert row["check"]["readings_agree"] and row["check"]["max_abs_diff_probabilities"] <= 1e-6
    assert report["checks_passed"] == {"purify": True, "attack": True, "app": True}


def test_markdown_tables_render_from_the_report(report):
    from benchmarks.report import markdown

    text = markdown(report)
    for title in ("Purification", "Attacks", "Training", "App CPU path"):
        assert title in text
    assert "| ddpm | 10 | 1 |" in text


def test_a_named_thread_count_is_the_app_sections_too(tmp_path):
    """`bench --threads 1` said 1 torch thread in its header while the app rows ran at the preset's
    app_threads (2): a named count now holds for every section, and each app row says what it ran at."""
    import torch

    from benchmarks.settings import BenchSettings

    out, before = tmp_path / "bench.json", torch.get_num_threads()
    try:  # 2, not the smoke preset's 1, so a run that ignored --threads would show
        with pytest.raises(SystemExit) as exit_info:
            main([*SMOKE, "--sections", "app", "--threads", "2", "--out", str(out)])
    finally:
        torch.set_num_threads(before)  # the run leaves its count set; the other tests run at conftest's
    assert exit_info.value.code in (0, None)
    report = json.loads(out.read_text())
    assert report["hardware"]["torch_threads"] == 2 and [row["threads"] for row in report["sections"]["app"]] == [2, 2]
    assert BenchSettings.from_preset("cpu", threads=1).app_threads == 1
    assert BenchSettings.from_preset("cpu").app_threads == 2  # no count named: the Space's 2 cores


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sections", "purify,nope"], "unknown section(s) nope"),
        (["--purifiers", "ddpm,nope"], "unknown purifier 'nope'"),
        (["--chain-eot", "1"], "chain_eot=1 is outside the allowed range [2, 1000]"),
        (["--cuda-graphs"], "cuda_graphs needs compile"),
        (["--device", "tpu"], "device 'tpu' is not one of: cpu, cuda"),
    ],
)
def test_bad_settings_give_one_line_and_exit_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--preset", "smoke", *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("purifier", ["diffdefense_paper", "diffdefense"])
def test_a_chain_purifier_without_exact_gradients_is_refused_before_anything_is_measured(purifier, tmp_path, capsys):
    """White-box refused it only when its attack row was built: after the purify section and the grey-box
    attacks had run, with no report written. Without the attack section there is nothing to refuse."""
    from benchmarks.settings import BenchSettings

    out = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--preset", "smoke", "--purifiers", "none", "--chain-purifiers", purifier, "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err == f"error: purifier '{purifier}' has no exact gradients; attack it with threat 'bpda' or 'bpda-eot'\n"
    assert not out.exists()
    assert BenchSettings.from_preset("smoke", chain_purifiers=(purifier,), chain_threats=("bpda-eot",)).chain_purifiers == (purifier,)
    assert BenchSettings.from_preset("smoke", sections=("purify",), chain_purifiers=(purifier,)).chain_threats == ("bpda-eot", "white")


def test_python_m_benchmarks_is_the_same_command(monkeypatch, capsys):
    """In-process (`runpy`), as a subprocess would only add the import of torch."""
    monkeypatch.setattr(sys, "argv", ["benchmarks", "--preset", "smoke", "--sections", "nope"])
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("benchmarks", run_name="__main__")
    assert exit_info.value.code == 2 and "unknown section(s) nope" in capsys.readouterr().err


def test_diffdefense_batch1_times_every_table3_column_at_each_thread_count(tmp_path, monkeypatch, capsys):
    """The MNIST latency benchmark builds its purifiers from the preset's Table 3, not a copy of it."""
    from benchmarks import diffdefense_batch1
    from core.tables import load_preset

    out = tmp_path / "batch1.json"
    # argv[0] as `python -m benchmarks.diffdefense_batch1` sets it: the module's file
    monkeypatch.setattr(sys, "argv", [diffdefense_batch1.__file__, "--threads", "1", "--digits", "2", "--out", str(out)])
    diffdefense_batch1.main()
    rows = json.loads(out.read_text())["rows"]
    table3 = next(table for table in load_preset("mnist-diffdefense").tables if table.name == "table3")
    assert [row["column"] for row in rows] == [column.label for column in table3.columns]
    assert all(row["threads"] == 1 and row["digits"] == 2 and row["median_seconds_per_digit"] > 0 for row in rows)
    assert json.loads(out.read_text())["threads"] == [1]  # the list timed, not its largest
    config = json.loads(out.with_name("batch1.config.json").read_text())  # resolved options beside the report
    assert config["command"].startswith("python -m benchmarks.diffdefense_batch1") and config["digits"] == 2
    theirs = tmp_path / "theirs.json"
    theirs.write_text("my notes")
    monkeypatch.setattr(sys, "argv", [diffdefense_batch1.__file__, "--threads", "1", "--digits", "2", "--out", str(theirs)])
    with pytest.raises(SystemExit) as exit_info:
        diffdefense_batch1.main()
    assert exit_info.value.code == 2 and "exists and purifylab did not write it" in capsys.readouterr().err
    assert theirs.read_text() == "my notes"


def test_a_cpu_report_records_only_the_thread_counts_its_work_ran_at(tmp_path, monkeypatch):
    """micro_batch's report said its parent's 2 threads (hardware's torch_threads) for work its spawned
    workers ran at 1, and diffdefense_batch1's said 2 for a run of 1 and 2: one count now, the work's."""
    import argparse

    import torch

    from benchmarks.environment import write_cpu_report

    monkeypatch.setattr(sys, "argv", ["benchmarks/micro_batch.py"])
    out = tmp_path / "report.json"
    assert torch.get_num_threads() == 1  # conftest's, not the counts below
    write_cpu_report(argparse.Namespace(out=out, overwrite=False), [{"threads": 2}], [1, 2])
    report = json.loads(out.read_text())
    assert report["threads"] == [1, 2] and "torch_threads" not in report["hardware"] and report["hardware"]["cpu_count"] >= 1


@pytest.mark.slow  # inductor compiles the MNIST UNet's forward and backward graphs: about half a minute
def test_diffdefense_batch1_compiled_path_reconstructs_the_same_digits(tmp_path, monkeypatch):
    """`--compile` adds the compiled time, its compile warm-up and how far its reconstructions move from eager ones."""
    from benchmarks import diffdefense_batch1

    out = tmp_path / "batch1.json"
    monkeypatch.setattr(sys, "argv", ["diffdefense_batch1", "--threads", "1", "--digits", "1", "--compile", "--out", str(out)])
    diffdefense_batch1.main()
    rows = json.loads(out.read_text())["rows"]
    assert all(row["compiled_median_seconds_per_digit"] > 0 and row["compile_seconds"] > 0 for row in rows)
    assert all(row["compiled_max_pixel_difference"] < 1e-3 for row in rows)  # fused kernels round differently, nothing more


def test_micro_batch_benchmark_times_whole_calls_and_restores_the_chunk_sizes():
    from benchmarks.micro_batch import whole_calls
    from core import micro_batch

    before = dict(micro_batch.PIXELS)
    with whole_calls():
        assert min(micro_batch.PIXELS.values()) >= 2**62 and set(micro_batch.PIXELS) == set(before)
    assert micro_batch.PIXELS == before


def test_the_report_reader_refuses_what_is_not_a_bench_report_in_one_line(tmp_path, capsys):
    """`python -m benchmarks.report` read sys.argv[1] unchecked: a traceback for no argument or any other
    file; then it refused with exit 1, not the CLI's 2."""
    from benchmarks.report import main

    other = tmp_path / "other.json"
    other.write_text('{"rows": []}')
    for path, message in ((tmp_path / "missing.json", "not a readable bench report"), (other, "not a purifylab bench report")):
        with pytest.raises(SystemExit) as exit_info:
            main([str(path)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_a_part_of_a_run_does_not_replace_a_report_of_other_settings(report_path, tmp_path, capsys):
    """BENCHMARKS.md's `--sections purify --purifiers ...` line, with no --out, replaced the committed
    four-section bench_cpu.json with a purify-only report: purifylab wrote the file, so it passed."""
    out = tmp_path / "bench.json"
    for source in (report_path, report_path.with_name("bench.config.json")):
        shutil.copy(source, tmp_path / source.name)
    full = out.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main([*SMOKE, "--sections", "app", "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "other settings (sections differ)" in err and out.read_bytes() == full
    for extra in (["--overwrite"], []):  # replaced when asked; then the same settings rerun in place
        with pytest.raises(SystemExit) as exit_info:
            main([*SMOKE, "--sections", "app", "--out", str(out), *extra])
        assert exit_info.value.code in (0, None)
        assert set(json.loads(out.read_text())["sections"]) == {"app"}


def test_the_committed_cpu_report_is_kept_from_a_partial_run_and_rerun_by_its_own_command():
    """Against the committed report's own config, read only: the documented full CPU command may
    rerun into it, the audit's purify-only run may not."""
    from benchmarks.options import check_same_settings
    from benchmarks.settings import BenchSettings
    from core.errors import PurifyLabError

    committed = REPO_ROOT / "results" / "benchmarks" / "bench_cpu.json"

    def config(**overrides) -> dict:
        return {"command": "bench", "data": None, **BenchSettings.from_preset("cpu", **overrides).to_dict()}

    check_same_settings(committed, config())
    with pytest.raises(PurifyLabError, match=r"other settings \(purifiers, purify_batch, sections differ\)"):
        check_same_settings(committed, config(sections=("purify",), purifiers=("blur",), purify_batch=8))


STANDALONE = ("micro_batch", "white_box_levers", "evaluate_cohort", "diffdefense_batch1", "serve_latency", "refusals")


@pytest.mark.parametrize(
    ("module", "args", "message"),
    [
        *((name, ["--threads", value], f"argument --threads: must be >= 1, got {value}") for name in STANDALONE[:5] for value in ("0", "-1")),
        ("diffdefense_batch1", ["--threads", "1,0"], "argument --threads: must be >= 1, got 0"),
        ("diffdefense_batch1", ["--digits", "0"], "argument --digits: must be >= 1, got 0"),
        ("micro_batch", ["--threads", "two"], "argument --threads: expected a whole number >= 1, got 'two'"),
        ("serve_latency", ["--repeats", "0"], "argument --repeats: must be >= 1, got 0"),
        ("refusals", ["--repeats", "0"], "argument --repeats: must be >= 1, got 0"),
        ("evaluate_cohort", ["--data", "no-such-folder"], "--data no-such-folder is not a folder"),
    ],
)
def test_standalone_benchmarks_refuse_bad_counts_in_one_line_before_any_work(module, args, message, tmp_path, monkeypatch, capsys):
    """--threads 0 gave a 33-line traceback from torch.set_num_threads after the imports and model
    builds (serve_latency: a server timeout that never happened); --repeats 0 crashed refusals at the end."""
    import importlib

    benchmark = importlib.import_module(f"benchmarks.{module}")
    out = tmp_path / "report.json"
    monkeypatch.setattr(sys, "argv", [benchmark.__file__, *args, "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main()
    assert exit_info.value.code == 2 and capsys.readouterr().err == f"error: {message}\n"
    assert not out.exists()


COMMITTED_STANDALONE = {  # report -> the module that wrote it (its config's command names it)
    "micro_batch_cpu": "benchmarks.micro_batch",
    "white_box_levers_cpu": "benchmarks.white_box_levers",
    "evaluate_test_cpu": "benchmarks.evaluate_cohort",
    "diffdefense_batch1_cpu": "benchmarks.diffdefense_batch1",
    "serve_latency_cpu": "benchmarks.serve_latency",
    "refusals": "benchmarks.refusals",
    "load_5_sessions_cpu": "scripts.load_test",
}


class ReachedMeasuring(Exception):
    pass


@pytest.mark.parametrize("name", sorted(COMMITTED_STANDALONE))
def test_a_committed_standalone_report_reruns_by_its_own_command_and_not_by_another(name, tmp_path, monkeypatch, capsys):
    """Their configs, reconstructed in session 21, carry no provenance block: the documented reruns were
    refused as 'purifylab did not write it', and --overwrite, the way round, let any run (another
    thread count, a few digits) replace the committed report; none compared settings at all. A
    reconstructed config records only what its command line typed: the rest are the parser's defaults
    (refusals' --repeats 1, the load test's --torch-threads 1)."""
    import importlib
    import shlex

    import benchmarks.options

    committed = REPO_ROOT / "results" / "benchmarks"
    for suffix in (".json", ".config.json"):
        shutil.copy(committed / f"{name}{suffix}", tmp_path / f"{name}{suffix}")
    out, report = tmp_path / f"{name}.json", (tmp_path / f"{name}.json").read_bytes()
    recorded = json.loads((committed / f"{name}.config.json").read_text())
    words = shlex.split(recorded["command"])  # e.g. "python -m benchmarks.micro_batch --threads 1"
    words = words[next(index for index, word in enumerate(words) if word.endswith(("load_test.py", COMMITTED_STANDALONE[name]))) + 1 :]
    documented = [word for index, word in enumerate(words) if "--out" not in (word, words[index - 1] if index else None)]
    real_check = benchmarks.options.check_report_out

    def check_then_stop(args, parser) -> None:
        real_check(args, parser)
        raise ReachedMeasuring

    module = importlib.import_module(COMMITTED_STANDALONE[name])
    monkeypatch.setattr(benchmarks.options, "check_report_out", check_then_stop)
    if hasattr(module, "check_report_out"):
        monkeypatch.setattr(module, "check_report_out", check_then_stop)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    monkeypatch.setattr(sys, "argv", [module.__file__, *documented, "--out", str(out)])
    with pytest.raises(ReachedMeasuring):
        module.main()
    changed = {"refusals": ("--repeats", "2"), "load_5_sessions_cpu": ("--torch-threads", "2")}.get(name, ("--threads", "3"))
    monkeypatch.setattr(sys, "argv", [module.__file__, *documented, *changed, "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        module.main()
    assert exit_info.value.code == 2 and "holds a report measured with other settings" in capsys.readouterr().err
    assert out.read_bytes() == report


def test_a_standalone_benchmark_refuses_another_benchmarks_report_whatever_the_settings(tmp_path, monkeypatch, capsys):
    """micro_batch --threads 1 --out refusals.json passed: only settings both configs record were compared,
    the command line that names the benchmark was left out, and refusals' config records none."""
    import benchmarks.micro_batch

    committed = REPO_ROOT / "results" / "benchmarks"
    for suffix in (".json", ".config.json"):
        shutil.copy(committed / f"refusals{suffix}", tmp_path / f"refusals{suffix}")
    out, report = tmp_path / "refusals.json", (tmp_path / "refusals.json").read_bytes()
    monkeypatch.setattr(sys, "argv", [benchmarks.micro_batch.__file__, "--threads", "1", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        benchmarks.micro_batch.main()
    message = f"error: --out {out} holds a report of benchmarks.refusals, not of benchmarks.micro_batch; pass --overwrite to replace it or choose "
    message += "another --out\n"
    assert exit_info.value.code == 2 and capsys.readouterr().err == message and out.read_bytes() == report


def test_standalone_benchmarks_write_under_purifylab_results_and_refuse_a_foreign_report_with_exit_2(tmp_path):
    """Their default --out was REPO/results/benchmarks/... whatever PURIFYLAB_RESULTS said, and a refused
    --out exited 1. A fresh process, since core.paths reads the variable at import."""
    script = (
        "import importlib, os, sys\n"
        "from pathlib import Path\n"
        f"for name in {STANDALONE!r}:\n"
        "    benchmark = importlib.import_module('benchmarks.' + name)\n"
        "    if not benchmark.OUT.is_relative_to(Path(os.environ['PURIFYLAB_RESULTS'])):  # never touch the repository's reports\n"
        "        print(name, 'elsewhere', benchmark.OUT, flush=True)\n"
        "        continue\n"
        "    benchmark.OUT.parent.mkdir(parents=True, exist_ok=True)\n"
        "    benchmark.OUT.write_text('my notes')\n"
        "    sys.argv = [benchmark.__file__]\n"
        "    try:\n"
        "        benchmark.main()\n"
        "    except SystemExit as exit:\n"
        "        print(name, exit.code, benchmark.OUT, flush=True)\n"
    )
    env = {**os.environ, "PURIFYLAB_RESULTS": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    exits = [line.split(" ", 2) for line in done.stdout.splitlines()]
    assert [name for name, _, _ in exits] == list(STANDALONE), done.stderr
    for (_, code, path), error in zip(exits, done.stderr.strip().splitlines(), strict=True):
        assert code == "2" and Path(path).parent == tmp_path / "benchmarks" and Path(path).read_text() == "my notes"
        assert error == f"error: --out: {path} exists and purifylab did not write it; pass --overwrite or choose another name"


def test_serve_latency_says_the_servers_own_refusal_not_a_timeout(tmp_path):
    """A server that exits at once was reported as 'the server did not answer within 240 s'."""
    from benchmarks.serve_latency import ServerExited, connect, free_port

    port, log = free_port(), tmp_path / "server.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [sys.executable, "-m", "core", "serve", "--port", str(port), "--threads", "0"], cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT
        )
    with pytest.raises(ServerExited) as refused:
        connect(port, server, log, timeout_s=120)
    assert refused.value.status == 2
    assert str(refused.value) == "python -m core serve exited with status 2 before answering: --threads must be >= 1, got 0"


def test_evaluate_cohort_records_and_prints_the_note_of_a_classifier_read_without_its_purifier(xray_test_dir, tmp_path):
    """resnet_smooth was recorded and printed at 0.792 with nothing saying its card's 0.886 is read
    through Gaussian noise; `purifylab evaluate` says so. Two real test X-rays per class keep it short."""
    from benchmarks.evaluate_cohort import cohort_row, row_text

    data = tmp_path / "test"
    for label in ("NORMAL", "PNEUMONIA"):
        (data / label).mkdir(parents=True)
        for image in sorted((xray_test_dir / label).glob("*.jpeg"))[:2]:
            shutil.copy(image, data / label)
    smooth, plain = (cohort_row(name, data, tmp_path / name) for name in ("resnet_smooth", "student_cnn"))
    assert smooth["n"] == plain["n"] == 4 and smooth["purifier"] == plain["purifier"] == {"purifier": "none"}
    assert smooth["reads_through_note"].startswith("resnet_smooth was trained and calibrated to read X-rays through the 'gaussian' purifier (sigma 0.5)")
    assert row_text(smooth).splitlines()[1] == f"note: {smooth['reads_through_note']}"
    assert "reads_through_note" not in plain and len(row_text(plain).splitlines()) == 1


def test_the_committed_bench_report_reruns_by_its_documented_command_without_overwrite(tmp_path):
    """The committed bench configs predate the provenance block: `python -m benchmarks --preset cpu` was
    refused as 'purifylab did not write it', and its --overwrite also skipped the same-settings check."""
    from benchmarks.options import check_same_settings
    from benchmarks.settings import BenchSettings
    from core.cli.preflight import check_output
    from core.errors import PurifyLabError

    committed = REPO_ROOT / "results" / "benchmarks"
    for name in ("bench_cpu.json", "bench_cpu.config.json"):
        shutil.copy(committed / name, tmp_path / name)
    out = tmp_path / "bench_cpu.json"
    assert check_output(out, "--out", suffix=".json", creates_folder=True) == out
    check_same_settings(out, {"command": "bench", "data": None, **BenchSettings.from_preset("cpu").to_dict()})
    with pytest.raises(PurifyLabError, match=r"other settings \(purifiers, sections differ\)"):
        check_same_settings(out, {"command": "bench", "data": None, **BenchSettings.from_preset("cpu", sections=("purify",), purifiers=("blur",)).to_dict()})
    config = json.loads((tmp_path / "bench_cpu.config.json").read_text())
    (tmp_path / "bench_cpu.config.json").write_text(json.dumps({**config, "command": "my own tool"}))  # another tool's JSON is still refused
    with pytest.raises(PurifyLabError, match="exists and purifylab did not write it"):
        check_output(out, "--out", suffix=".json", creates_folder=True)
