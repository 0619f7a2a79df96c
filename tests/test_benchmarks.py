"""The performance suite (benchmarks/, `purifylab bench`) in its smoke preset: tiny seeded models, every
section and every registered purifier, in seconds. Checks the report's schema and that our path and
the naive reference agree; nothing here asserts a speed."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

from core.cli import main
from core.purifiers import list_purifiers

REPO_ROOT = Path(__file__).resolve().parents[1]
SPEED_KEYS = {"images_per_s", "latency_s", "images", "seconds"}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """One smoke run through the CLI, with two GPU switches on: a CPU run must report them skipped."""
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--preset", "smoke", "--bf16", "--compile", "--out", str(out)])
    assert exit_info.value.code in (0, None)
    return json.loads(out.read_text())


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


def test_python_m_benchmarks_is_the_same_command(monkeypatch, capsys):
    """In-process (`runpy`), as a subprocess would only add the import of torch."""
    monkeypatch.setattr(sys, "argv", ["benchmarks", "--preset", "smoke", "--sections", "nope"])
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("benchmarks", run_name="__main__")
    assert exit_info.value.code == 2 and "unknown section(s) nope" in capsys.readouterr().err


def test_diffdefense_batch1_times_every_table3_column_at_each_thread_count(tmp_path, monkeypatch):
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
    config = json.loads(out.with_name("batch1.config.json").read_text())  # resolved options beside the report
    assert config["command"].startswith("python -m benchmarks.diffdefense_batch1") and config["digits"] == 2
    theirs = tmp_path / "theirs.json"
    theirs.write_text("my notes")
    monkeypatch.setattr(sys, "argv", [diffdefense_batch1.__file__, "--threads", "1", "--digits", "2", "--out", str(theirs)])
    with pytest.raises(SystemExit, match="exists and purifylab did not write it"):
        diffdefense_batch1.main()
    assert theirs.read_text() == "my notes"


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


def test_the_report_reader_refuses_what_is_not_a_bench_report_in_one_line(tmp_path):
    """`python -m benchmarks.report` read sys.argv[1] unchecked: a traceback for no argument or any other file."""
    from benchmarks.report import main

    other = tmp_path / "other.json"
    other.write_text('{"rows": []}')
    for path, message in ((tmp_path / "missing.json", "not a readable bench report"), (other, "not a purifylab bench report")):
        with pytest.raises(SystemExit, match=f"error: .*{message}"):
            main([str(path)])
