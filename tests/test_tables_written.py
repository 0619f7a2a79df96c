"""A table's outputs are written whole, and only over outputs of its own settings, even when another
run writes the same folder meanwhile; the quick table's title counts the images a --limit keeps."""

from __future__ import annotations

import json

import pytest
from full_disk import run_on_a_full_disk

from core.errors import PurifyLabError
from core.sweeps import sweep_preset
from core.tables import load_preset, run_preset
from core.tables.render import write_outputs


def _sweep(data, limit: int):
    """A one-cell table of the shipped student CNN: seconds on a CPU."""
    return sweep_preset("tstar", "noise", (0.01,), classifier="student_cnn", data=str(data), split="all", limit=limit, batch_size=8)


def test_another_runs_table_written_meanwhile_is_kept_and_the_run_refused(xray_test_dir, tmp_path):
    """Two `table` runs into one --out-dir at once both exited 0, and the later silently replaced the
    other's table of other settings: the folder was checked only before the compute."""
    store, out = tmp_path / "s.sqlite", tmp_path / "out"
    other = run_preset(_sweep(xray_test_dir, 4), store, tmp_path / "other", progress=False)

    def the_other_run_writes(done: int, total: int) -> None:  # what the other run does while this one computes
        if done == total:
            write_outputs(_sweep(xray_test_dir, 4), other.records, out)

    with pytest.raises(PurifyLabError, match=r"other settings \(limit differ\).*while this run computed; its cells are kept in") as refusal:
        run_preset(_sweep(xray_test_dir, 8), store, out, progress=False, on_cell=the_other_run_writes)
    assert "\n" not in str(refusal.value)
    assert json.loads((out / other.paths["config"].name).read_text())["limit"] == 4
    assert run_preset(_sweep(xray_test_dir, 8), store, tmp_path / "elsewhere", progress=False).computed == []  # its cells were kept


def test_a_full_disk_keeps_the_earlier_outputs_whole(xray_test_dir, tmp_path):
    """A full disk left a truncated PRESET.json (the app's Curves page then failed) and a traceback."""
    outcome = run_preset(_sweep(xray_test_dir, 4), tmp_path / "s.sqlite", tmp_path / "out", progress=False)
    before = {path.name: path.read_bytes() for path in (tmp_path / "out").iterdir()}
    (tmp_path / "records.json").write_text(json.dumps(outcome.records))
    write = (
        "import json\nfrom pathlib import Path\nfrom core.tables import load_preset\nfrom core.tables.render import write_outputs\n"
        f"out = Path({str(tmp_path / 'out')!r})\n"
        f"write_outputs(load_preset(out / {outcome.paths['config'].name!r}), json.loads(Path({str(tmp_path / 'records.json')!r}).read_text()), out)"
    )
    done = run_on_a_full_disk(3000, write)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: cannot write {tmp_path / 'out'}/"), done.stderr
    assert lines[0].endswith("File too large")
    assert {path.name: path.read_bytes() for path in (tmp_path / "out").iterdir()} == before


def test_the_quick_tables_title_counts_the_images_a_limit_keeps():
    """`table quick --limit 8` was titled "... on 32 X-rays"; without --limit it still says 32."""
    assert " on 8 X-rays " in load_preset("quick").with_overrides(limit=8).title
    assert load_preset("quick").with_overrides(limit=32).title == load_preset("quick").title
    assert " on 32 X-rays " in load_preset("quick").title


def test_a_tables_config_names_the_code_weights_and_data_that_produced_it(xray_test_dir, tmp_path):
    """PRESET.config.json held the preset alone, while every other command's config names its code, its
    weights' SHA-256s and (in its result) its data hash: a table read apart from the store said none of it."""
    from core.results import software_provenance
    from core.weights import WEIGHTS_DIR, read_card

    preset = sweep_preset("depth", "cold_direct", (2.0,), classifier="student_cnn", data=str(xray_test_dir), split="all", limit=4, batch_size=8)
    outcome = run_preset(preset, tmp_path / "s.sqlite", tmp_path / "out", progress=False)
    provenance = json.loads(outcome.paths["config"].read_text())["provenance"]
    assert provenance["software"] == software_provenance()
    assert provenance["weights"] == {f"{stem}.safetensors": read_card(WEIGHTS_DIR / f"{stem}.safetensors")["sha256"] for stem in ("cold_unet", "student_cnn")}
    assert provenance["data_hashes"] == sorted({record["config"]["data"]["hash"] for record in outcome.records})


def test_a_written_config_replays_and_a_rerun_at_another_commit_replaces_it(xray_test_dir, tmp_path):
    """The provenance beside a table is no setting: `table PRESET.config.json` reads it as the preset it
    was, and a rerun at a later commit replaces the table rather than refusing it as other settings."""
    from core.results import git_commit

    store, out = tmp_path / "s.sqlite", tmp_path / "out"
    config_path = run_preset(_sweep(xray_test_dir, 4), store, out, progress=False).paths["config"]
    written = json.loads(config_path.read_text())
    written["provenance"]["software"]["git_commit"] = "0" * 40  # as a table written at an earlier commit
    config_path.write_text(json.dumps(written))
    replayed = run_preset(load_preset(config_path), store, out, progress=False)
    assert replayed.computed == [] and replayed.reused
    assert json.loads(config_path.read_text())["provenance"]["software"]["git_commit"] == git_commit()
