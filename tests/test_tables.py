"""Tables from presets on a tiny student CNN trained here on real X-rays: outputs agree, the same
seed gives the same table, an interrupted run resumes, and the masking checks raise their flags."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_models import QuantisePurifier

from core.attacks import AttackConfig
from core.data.loading import load_split
from core.errors import PurifyLabError
from core.models import create_classifier
from core.purifiers import PURIFIERS
from core.results import ResultStore, cell_key
from core.sweeps import sweep_preset
from core.tables import AttackRow, PresetRunner, list_presets, load_preset, preset_from_dict, run_preset
from core.tables.render import markdown_tables
from core.tables.verdict import Verdict
from core.weights import save_weights

IMAGE_SIZE = 32


@pytest.fixture()
def quantise_registered(monkeypatch) -> str:
    """A preset names its purifiers, so the masking defense is registered, and only while a test uses it:
    other test files list the shipped registry in this process."""
    monkeypatch.setitem(PURIFIERS._entries, QuantisePurifier.name, QuantisePurifier)
    monkeypatch.setitem(PURIFIERS._descriptions, QuantisePurifier.name, "test only: quantisation that masks gradients")
    return QuantisePurifier.name


@pytest.fixture(scope="module")
def weights(xray_train_dir, tmp_path_factory):
    torch.manual_seed(0)
    model = create_classifier("student_cnn", pretrained=False, image_size=IMAGE_SIZE, widths=(8, 16, 16, 16))
    train = load_split(xray_train_dir, "train", IMAGE_SIZE, limit=1024)
    images, labels = train.images.float() / 255, train.labels
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(150):
        batch = torch.randint(0, len(labels), (64,), generator=order)
        loss = torch.nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    path = tmp_path_factory.mktemp("weights") / "student_cnn.safetensors"
    save_weights(model.eval(), path, {"architecture": model.architecture}, fp16=False)
    return str(path)


def _raw(data, weights, **changes) -> dict:
    model = {"name": "student_cnn", "weights": weights, "label": "tiny-cnn"}
    raw = {
        "title": "tiny table",
        "data": str(data), "split": "val", "limit": 16, "seed": 0, "batch_size": 8, "bootstrap": 50,
        "redraws": 2, "eot": 2,
        "tables": [
            {
                "name": "grey", "caption": "Grey-box table.", "classifiers": [model],
                "rows": [{"label": "Clean"}, {"label": "FGSM", "name": "fgsm"}, {"label": "PGD", "name": "pgd", "steps": 3}],
                "columns": [
                    {"label": "Original"},
                    {"label": "Blur", "purifier": "blur", "params": {"sigma": 1.0}, "trained_on": "linf:0.03"},
                ],
                "averages": True,
            },
            {
                "name": "threats", "caption": "Threat models.", "classifiers": [model],
                "rows": [{"label": "PGD", "name": "pgd", "steps": 3}],
                "columns": [{"label": "Noise", "purifier": "noise", "params": {"t_star": 0.02}}],
                "threats": ["grey", "bpda-eot", "white"],
            },
        ],
        "sanity": {"collapse_eps": [0.03, 0.3], "collapse_steps": 5},
    }  # fmt: skip
    return {**raw, **changes}


def _preset(data, weights, name="tiny", **changes):
    return preset_from_dict(_raw(data, weights, **changes), name)


def test_outputs_exist_and_agree(xray_train_dir, weights, tmp_path):
    outcome = run_preset(_preset(xray_train_dir, weights), tmp_path / "store.sqlite", tmp_path / "out", progress=False)
    paths = outcome.paths
    assert {"markdown", "csv", "json", "html", "config"} <= set(paths) and all(p.is_file() for p in paths.values())
    document = json.loads(paths["json"].read_text())
    rows = list(csv.DictReader(paths["csv"].open()))
    table_results = [r for r in document["results"] if "table" in r]
    assert len(rows) == len(table_results) == 2 * 3 + 3
    by_key = {r["key"]: r for r in table_results}
    for row in rows:
        metrics = by_key[row["key"]]["metrics"]
        assert float(row["one_shot_accuracy"]) == pytest.approx(metrics["one_shot_accuracy"])
        assert row["threat"] == by_key[row["key"]]["threat"]
        assert f"{100 * metrics['one_shot_accuracy']:.2f}" in outcome.markdown
    # the threat model is stated in the caption and, where a table mixes them, in the header
    assert "attacker sees the classifier only" in outcome.markdown
    assert "Noise [white]" in outcome.markdown and "Noise [bpda-eot]" in outcome.markdown
    assert json.loads(paths["config"].read_text())["limit"] == 16
    assert "plotly" in paths["html"].read_text()[:5000].lower()
    # stochastic cells show one-shot / worst-of-2
    noise = next(r for r in table_results if r["column"] == "Noise" and r["threat"] == "white")
    assert noise["metrics"]["redraws"] == 2 and noise["metrics"]["worst_case_accuracy"] <= noise["metrics"]["one_shot_accuracy"]
    assert "Sanity checks" in outcome.markdown and "white is not weaker than bpda-eot" in outcome.markdown
    # AwT / AoA: the mean over attack rows; AwT leaves out the threat a column was trained on
    attacked = [r["metrics"]["one_shot_accuracy"] for r in table_results if r["table"] == "grey" and r["column"] == "Original" and r["row"] != "Clean"]
    mean = f"{100 * sum(attacked) / len(attacked):.2f}"
    assert any(line.startswith(f"| AwT | {mean} | n/a") for line in outcome.markdown.splitlines())
    assert any(line.startswith(f"| AoA | {mean} |") for line in outcome.markdown.splitlines())
    # a balanced-accuracy table averages balanced accuracy, not plain accuracy
    raw = _raw(xray_train_dir, weights)
    raw["tables"][0]["metric"] = "balanced_accuracy"
    records = copy.deepcopy(table_results)
    attacked = [r for r in records if r["table"] == "grey" and r["column"] == "Original" and r["row"] != "Clean"]
    for record, balanced in zip(attacked, (0.2, 0.6), strict=True):
        record["metrics"].update(balanced_accuracy=balanced, one_shot_accuracy=0.9)
    balanced_markdown = markdown_tables(preset_from_dict(raw, "tiny"), records, [])
    assert any(line.startswith("| AoA | 40.00 |") for line in balanced_markdown.splitlines())
    # EOT is spent on stochastic purifiers only: a deterministic column is named as drawn once
    assert "EOT 2 purifier draws per attack step" in outcome.markdown and "drawn once" not in outcome.markdown
    raw["tables"][1]["columns"].append({"label": "Blur", "purifier": "blur", "params": {"sigma": 1.0}})
    assert "EOT 2 purifier draws per attack step (Blur: deterministic, drawn once)" in markdown_tables(preset_from_dict(raw, "tiny"), records, [])
    # rows with their own eot_iter: test_eot_statements_count_the_draws_the_cells_ran


def test_same_seed_gives_identical_table_json(xray_train_dir, weights, tmp_path):
    preset = _preset(xray_train_dir, weights)
    first = run_preset(preset, tmp_path / "a.sqlite", tmp_path / "a", progress=False)
    again = run_preset(preset, tmp_path / "b.sqlite", tmp_path / "b", progress=False)
    assert again.computed and not again.reused  # a fresh store: everything recomputed
    one, two = (json.loads(o.paths["json"].read_text()) for o in (first, again))
    assert one["results"] == two["results"] and one["sanity_checks"] == two["sanity_checks"]


def test_interrupted_run_resumes_without_recomputing(xray_train_dir, weights, tmp_path):
    preset = _preset(xray_train_dir, weights)
    store_path = tmp_path / "store.sqlite"
    finished = []

    with ResultStore(store_path) as store:
        runner = PresetRunner(preset, store, progress=False)
        real_compute = runner.compute

        def compute_then_fail(cell):
            if len(finished) == 4:
                raise KeyboardInterrupt("simulated interruption")
            metrics = real_compute(cell)
            finished.append(cell_key(cell))
            return metrics

        runner.compute = compute_then_fail
        with pytest.raises(KeyboardInterrupt):
            runner.run()
        assert len(store.cells()) == 4

    recomputed = []
    with ResultStore(store_path) as store:
        runner = PresetRunner(preset, store, progress=False)
        real_compute = runner.compute
        runner.compute = lambda cell: recomputed.append(cell_key(cell)) or real_compute(cell)
        records = runner.run()
    assert not set(recomputed) & set(finished)
    assert sorted(runner.last_reused) == sorted(finished)
    assert len(recomputed) + len(finished) == len({r["key"] for r in records})


def test_sanity_flags_appear_in_the_table(xray_train_dir, weights, tmp_path, quantise_registered):
    raw = _raw(xray_train_dir, weights)
    raw["tables"] = [{
        "name": "masking", "caption": "A gradient-masking defense.",
        "classifiers": [{"name": "student_cnn", "weights": weights, "label": "tiny-cnn"}],
        "rows": [{"label": "PGD", "name": "pgd", "eps": 0.1, "steps": 5}],
        "columns": [{"label": "Quantise", "purifier": quantise_registered}],
        "threats": ["bpda", "white"],
    }]  # fmt: skip
    raw["sanity"] = {"collapse_eps": [0.001], "collapse_steps": 2}  # far too small to collapse: must flag
    outcome = run_preset(preset_from_dict(raw, "masking"), tmp_path / "s.sqlite", tmp_path / "out", progress=False)
    checks = json.loads(outcome.paths["json"].read_text())["sanity_checks"]
    white_vs_bpda = next(c for c in checks if c["name"] == "white is not weaker than bpda")
    collapse = next(c for c in checks if c["name"] == "undefended accuracy collapses at large eps")
    assert not white_vs_bpda["passed"] and not collapse["passed"]
    assert "| FLAG |" in outcome.markdown and "FLAG: fails 'white is not weaker than bpda' (Quantise)" in outcome.markdown
    # the failed collapse check voids every row of its classifier, in the table and in the CSV
    assert "FLAG: fails 'undefended accuracy collapses at large eps' (undefended tiny-cnn)" in outcome.markdown
    rows = list(csv.DictReader(outcome.paths["csv"].open()))
    assert rows and all("FLAG: fails 'undefended accuracy collapses" in row["flags"] for row in rows)


def test_shipped_presets_load_and_validate():
    names = list_presets()
    for name in (
        "quick",
        "paper-table1",
        "paper-table2",
        "ddpm-defense",
        "blau",
        "diffdefense",
        "mnist-diffdefense",
        "cifar10-blau",
        "greybox-target",
        "adaptive",
    ):
        assert name in names
        preset = load_preset(name)
        assert preset.name == name and (preset.tables or preset.sweeps or preset.detection)
    quick = load_preset("quick")
    assert quick.limit == 32 and [m.name for m in quick.tables[0].classifiers] == ["vit"]
    assert "blur" in {c.purifier for c in load_preset("paper-table1").tables[0].columns}
    # The papers' own data sets: a relative data path in a preset is relative to the repository.
    mnist = load_preset("mnist-diffdefense")
    assert mnist.data.endswith("mnist/t10k-images-idx3-ubyte.gz") and Path(mnist.data).is_absolute()
    assert load_preset("cifar10-blau").tables[0].columns[1].params["denoiser"] == "ddpm_unet_cifar10"


def test_command_line_overrides_are_validated_like_the_preset():
    blau = load_preset("blau")
    assert blau.with_overrides(limit=8, eot=4).eot == 4 and blau.eot == 20
    with pytest.raises(PurifyLabError, match="bpda-eot: set eot >= 2"):
        blau.with_overrides(eot=1)
    with pytest.raises(PurifyLabError, match="--limit must be a positive"):
        blau.with_overrides(limit=0)
    with pytest.raises(PurifyLabError, match="--only depht: preset 'blau' has table1, table2, depth"):
        blau.with_overrides(only=["depht"])


def test_only_part_of_a_preset_computes_the_same_cells_the_whole_preset_would(tmp_path):
    """`--only` is for a CPU computing part of a GPU-sized preset: a later full run must reuse its cells."""
    from core.results import ResultStore, cell_key

    blau = load_preset("blau").with_overrides(limit=4, eot=2)
    part = blau.with_overrides(only=["table1", "depth"])
    assert [t.name for t in part.tables] == ["table1"] and [s.name for s in part.sweeps] == ["depth"]
    assert "Part of the preset only: table1, depth (the whole preset: table1, table2, depth)" in part.notes
    with ResultStore(tmp_path / "store.sqlite") as store:
        keys = {name: {cell_key(cell) for _, cell in PresetRunner(preset, store, progress=False).all_entries()}
                for name, preset in (("whole", blau), ("part", part))}  # fmt: skip
    assert keys["part"] < keys["whole"]


def test_a_cell_names_its_images_by_content_so_the_store_serves_any_checkout(xray_test_dir, tmp_path):
    """The same images reached by another path (another clone, another mount) keep every cell's key."""
    from core.results import ResultStore, cell_key

    elsewhere = tmp_path / "mounted-elsewhere"
    elsewhere.symlink_to(xray_test_dir, target_is_directory=True)
    quick = load_preset("quick").with_overrides(limit=4)
    with ResultStore(tmp_path / "store.sqlite") as store:
        keys = [[cell_key(cell) for _, cell in PresetRunner(preset, store, progress=False).all_entries()]
                for preset in (quick, quick.with_overrides(data=str(elsewhere)))]  # fmt: skip
    assert keys[0] == keys[1] and len(keys[0]) > 1


def test_a_purifier_cell_names_its_network_by_hash_not_by_file_name():
    """Spelling out the default denoiser keeps a stored cell's key; another denoiser changes it and
    stays in the parameters the runner builds the purifier from."""
    from core.tables.runner import purifier_identity

    implicit = purifier_identity("ddpm", {"t_star": 0.04})
    explicit = purifier_identity("ddpm", {"t_star": 0.04, "denoiser": "ddpm_unet"})
    other = purifier_identity("ddpm", {"t_star": 0.04, "denoiser": "ddpm_unet_mnist"})
    assert implicit == explicit and "denoiser" not in implicit["params"]
    assert other["params"] == {**implicit["params"], "denoiser": "ddpm_unet_mnist"}
    assert None not in (implicit["weights_sha256"], other["weights_sha256"])  # both are shipped
    assert other["weights_sha256"] != implicit["weights_sha256"]
    # what the runner builds from a cell: the named network (28-px MNIST), not the X-ray default
    from core.purifiers import create_purifier

    assert create_purifier(other["name"], **other["params"]).image_size == 28


def test_bad_presets_are_refused_in_one_line(tmp_path, xray_train_dir, weights):
    with pytest.raises(PurifyLabError, match="not found"):
        load_preset("no-such-preset")
    raw = _raw(xray_train_dir, weights)
    raw["tables"][0]["threats"] = ["grey", "telepathy"]
    with pytest.raises(PurifyLabError, match="telepathy"):
        preset_from_dict(raw, "bad")
    raw = _raw(xray_train_dir, weights, colour="blue")
    with pytest.raises(PurifyLabError, match="unknown key 'colour'"):
        preset_from_dict(raw, "bad")
    broken = tmp_path / "broken.yaml"
    broken.write_text("tables: [unclosed")
    with pytest.raises(PurifyLabError, match="not valid YAML"):
        load_preset(broken)
    raw = _raw(xray_train_dir, weights)  # the collapse check is placed by title: one title, one model
    raw["tables"][1]["classifiers"] = [{"name": "student_cnn", "label": "tiny-cnn"}]
    with pytest.raises(PurifyLabError, match="title 'tiny-cnn' names two models"):
        preset_from_dict(raw, "bad")


def test_a_table_refuses_data_whose_classes_its_classifier_does_not_answer(xray_paths, tmp_path):
    """Labels index the data's classes: scored against a folder whose classes are others (here the same
    X-rays under swapped names), a cell would store the inverse of the model's accuracy."""
    for folder, files in (("a_pneumonia", xray_paths["PNEUMONIA"][:4]), ("b_normal", xray_paths["NORMAL"][:4])):
        (tmp_path / "swapped" / folder).mkdir(parents=True)
        for file in files:
            (tmp_path / "swapped" / folder / file.name).symlink_to(file)
    with pytest.raises(PurifyLabError, match="answers 2 classes .*has 2 \\(a_pneumonia, b_normal\\)"):
        # the shipped student_cnn, whose card names its classes
        run_preset(_preset(tmp_path / "swapped", None, split="all", limit=8), tmp_path / "s.sqlite", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_repeated_labels_and_a_sweep_transfer_without_substitute_are_refused(xray_train_dir, weights):
    """A repeated row label showed the first row's number in both rows; a transfer sweep crashed on
    its missing substitute after loading models."""
    raw = _raw(xray_train_dir, weights)
    raw["tables"][0]["rows"].append({"label": "FGSM", "name": "fgsm", "eps": 0.0001})
    with pytest.raises(PurifyLabError, match="row labels must be unique; repeated: FGSM"):
        preset_from_dict(raw, "bad")
    raw = _raw(xray_train_dir, weights)
    raw["tables"][1]["name"] = "grey"
    with pytest.raises(PurifyLabError, match="names must be unique; repeated: grey"):
        preset_from_dict(raw, "bad")
    with pytest.raises(PurifyLabError, match="uses transfer: it needs a substitute model"):
        sweep_preset("tstar", "noise", (0.1,), attack=AttackRow("PGD", AttackConfig(name="pgd", steps=2)), threat="transfer")


def test_sweep_writes_accuracy_against_the_parameter(xray_train_dir, weights, tmp_path):
    preset = sweep_preset(
        "tstar", "noise", (0.01, 0.05), classifier="student_cnn", classifier_weights=weights,
        attack=AttackRow("PGD", AttackConfig(name="pgd", steps=2)), data=str(xray_train_dir), limit=8, batch_size=8,
    )  # fmt: skip
    outcome = run_preset(preset, tmp_path / "s.sqlite", tmp_path / "sweep", progress=False)
    rows = list(csv.DictReader(outcome.paths["csv"].open()))
    assert [r["column"] for r in rows] == ["t_star=0.01", "t_star=0.01", "t_star=0.05", "t_star=0.05"]
    assert "accuracy (%) vs t_star" in outcome.markdown
    assert f"On 8 images of split 'val' of {'/'.join(xray_train_dir.parts[-2:])}, seed 0" in outcome.markdown
    with pytest.raises(PurifyLabError, match="does not apply"):
        sweep_preset("depth", "noise", (1.0,))


def test_a_clean_only_sweep_names_no_threat_model(xray_train_dir, weights, tmp_path):
    """A sweep with no --attack printed "attacked rows under threat 'grey': ..." over a Clean column only."""
    preset = sweep_preset("tstar", "noise", (0.01,), classifier="student_cnn", classifier_weights=weights, data=str(xray_train_dir), limit=4, batch_size=4)
    markdown = run_preset(preset, tmp_path / "s.sqlite", tmp_path / "sweep", progress=False).markdown
    assert "| t_star | Clean |" in markdown
    assert f"## Sweep {preset.sweeps[0].name}: accuracy (%) vs t_star\n" in markdown and "threat" not in markdown.split("## Sanity")[0]


def test_outputs_of_other_settings_or_not_ours_are_never_replaced_silently(xray_train_dir, weights, tmp_path):
    """`table quick --limit 2` would have swapped the committed 32-image table for a 2-image one; a
    user's own file of the same name would have been overwritten. Both are refused before any compute."""

    def sweep(limit: int):
        return sweep_preset(
            "tstar", "noise", (0.01,), classifier="student_cnn", classifier_weights=weights, data=str(xray_train_dir), limit=limit, batch_size=8
        )

    store, out = tmp_path / "s.sqlite", tmp_path / "out"
    first = run_preset(sweep(8), store, out, progress=False)
    markdown = first.paths["markdown"].read_text()
    assert run_preset(sweep(8), store, out, progress=False).computed == []  # the same settings: re-rendered
    with pytest.raises(PurifyLabError, match="other settings \\(limit differ\\)"):
        run_preset(sweep(4), store, out, progress=False)
    assert first.paths["markdown"].read_text() == markdown and len(ResultStore(store).cells()) == 1
    assert run_preset(sweep(4), store, out, progress=False, overwrite=True).computed
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / first.paths["csv"].name).write_text("my notes\n")
    with pytest.raises(PurifyLabError, match="purifylab did not write it"):
        run_preset(sweep(8), store, theirs, progress=False)
    assert (theirs / first.paths["csv"].name).read_text() == "my notes\n"


def test_detection_roc_and_the_detector_aware_attack(xray_train_dir, weights):
    from core.attacks import AttackConfig
    from core.purifiers.diffdefense import DiffDefenseConfig, DiffDefensePurifier
    from core.purifiers.unet import build_unet
    from core.tables.detection import detector_aware_pgd
    from core.tables.runner import detection_auroc, roc_curve

    separated = roc_curve(np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.6]))
    assert separated["fpr"][0] == 0.0 and separated["tpr"][-1] == 1.0
    assert detection_auroc(np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.6])) == 1.0
    assert detection_auroc(np.array([0.5, 0.6]), np.array([0.1, 0.2])) == 0.0

    torch.manual_seed(0)
    purifier = DiffDefensePurifier(DiffDefenseConfig(L=2, steps=1), unet=build_unet("tiny", sample_size=IMAGE_SIZE))
    classifier = create_classifier("student_cnn", weights=weights)
    data = load_split(xray_train_dir, "val", IMAGE_SIZE, limit=6)
    x, y = data.images.float() / 255, data.labels
    attack = AttackConfig(name="pgd", eps=0.03, steps=2)
    plain = detector_aware_pgd(classifier, purifier, x, y, attack, weight=0.0)
    aware = detector_aware_pgd(classifier, purifier, x, y, attack, weight=1000.0)
    for adversarial in (plain, aware):
        assert (adversarial - x).abs().max() <= 0.03 + 1e-6 and 0 <= adversarial.min() and adversarial.max() <= 1
    assert not torch.equal(plain, aware)  # the reconstruction term changes the attack
    with pytest.raises(PurifyLabError, match="L-inf"):
        detector_aware_pgd(classifier, purifier, x, y, AttackConfig(name="pgd", norm="l2", eps=1.0), weight=1.0)


def test_table_command_prints_markdown_and_writes_outputs(xray_train_dir, weights, tmp_path):
    import typer
    from typer.testing import CliRunner

    from core.cli import table_commands

    app = typer.Typer()
    table_commands.register(app, {})
    raw = _raw(xray_train_dir, weights)
    raw["tables"] = raw["tables"][:1]
    path = tmp_path / "cli-preset.yaml"
    path.write_text(yaml.safe_dump(raw))
    args = ["table", str(path), "--limit", "8", "--store", str(tmp_path / "s.sqlite"), "--out-dir", str(tmp_path / "out"), "--no-progress"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "| Attack | Original | Blur |" in first.output and "on 8 images" in first.output
    assert (tmp_path / "out" / "cli-preset.csv").is_file() and (tmp_path / "out" / "cli-preset.config.json").is_file()
    again = CliRunner().invoke(app, args)
    assert "computed 0" in again.output  # every cell from the store
    missing = CliRunner().invoke(app, ["table", "no-such-preset"])
    assert isinstance(missing.exception, PurifyLabError)


def test_white_box_cells_through_a_purifier_that_keeps_saturated_pixels_are_re_keyed(xray_train_dir, weights, tmp_path):
    """Their gradient changed with clamp_to_unit, so the store must not serve their old results;
    every other cell keeps its key (a network purifier's output never sits exactly on 0 or 1 in range)."""
    from core.attacks import AttackConfig
    from core.tables import AttackRow

    runner = PresetRunner(_preset(xray_train_dir, weights), ResultStore(tmp_path / "s.sqlite"), progress=False)
    row, model = AttackRow("PGD", AttackConfig(steps=3)), ("student_cnn", weights)
    marked = {
        (purifier, threat): "gradient" in runner.robust_cell(model, (purifier, {}), row, threat)
        for purifier in ("none", "blur", "gaussian", "noise")
        for threat in ("grey", "bpda-eot", "white")
    }
    assert {key for key, mark in marked.items() if mark} == {("none", "white"), ("blur", "white")}


def test_an_adaptive_table_prints_balanced_accuracy_and_runs_only_the_columns_threats(xray_train_dir, weights, tmp_path):
    raw = _raw(xray_train_dir, weights)
    raw["tables"] = [{
        "name": "adaptive", "caption": "Balanced accuracy per threat.", "metric": "balanced_accuracy",
        "classifiers": [{"name": "student_cnn", "weights": weights, "label": "tiny-cnn"}],
        "rows": [{"label": "Clean"}, {"label": "PGD", "name": "pgd", "eps": 0.03, "steps": 3}],
        "columns": [
            {"label": "Original", "threats": ["grey"]},
            {"label": "Noise", "purifier": "gaussian", "params": {"sigma": 0.1}},
        ],
        "threats": ["grey", "white"],
    }]  # fmt: skip
    preset = preset_from_dict(raw, "adaptive-tiny")
    placements = [p for p, _ in PresetRunner(preset, ResultStore(tmp_path / "s.sqlite"), progress=False).table_cells(preset.tables[0])]
    assert {(p["column"], p["threat"]) for p in placements} == {("Original", "grey"), ("Noise", "grey"), ("Noise", "white")}
    outcome = run_preset(preset, tmp_path / "s.sqlite", tmp_path / "out", progress=False)
    assert "Robust balanced accuracy (%) [95 % interval" in outcome.markdown
    noise_row = next(line for line in outcome.markdown.splitlines() if line.startswith("| PGD"))
    cells = [cell.strip() for cell in noise_row.strip("|").split("|")]
    # Original has no purifier, so its grey attacker is already white-box: the header says so
    assert "| Attack | Original [white = grey: no purifier] | Noise [grey] | Noise [white] |" in outcome.markdown
    low_high = cells[2].split("[")[1].split("]")[0].split(", ")
    assert float(low_high[0]) <= float(cells[2].split(" ")[0]) <= float(low_high[1]) and " / " in cells[2]
    checks = json.loads(outcome.paths["json"].read_text())["sanity_checks"]
    masking = next(c for c in checks if c["name"] == "white is not weaker than grey")
    # the check compares the balanced accuracy the table prints, and says so
    white = next(r for r in outcome.records if (r["column"], r["threat"], r["row"]) == ("Noise", "white", "PGD"))
    assert masking["metric"] == "balanced accuracy (one-shot)" and masking["values"]["white_accuracy"] == white["metrics"]["balanced_accuracy"]
    assert "row PGD, metric balanced accuracy (one-shot)): white_accuracy" in outcome.markdown
    # the chart plots the number the table prints, with its interval, and says which
    from core.tables.render import figure

    chart = figure(preset, outcome.records)
    bar = next(trace for trace in chart.data if trace.name == "Noise [white]")
    assert list(bar.y) == [100 * r["metrics"]["balanced_accuracy"] for r in outcome.records if (r.get("column"), r.get("threat")) == ("Noise", "white")]
    assert "balanced accuracy (%), bars: 95 % interval" in chart.layout.annotations[0].text
    csv_row = next(row for row in csv.DictReader(outcome.paths["csv"].open()) if (row["column"], row["threat"], row["row"]) == ("Noise", "white", "PGD"))
    assert float(csv_row["balanced_accuracy_ci_low"]) == white["metrics"]["confidence_95"]["balanced_accuracy"][0] and csv_row["split"] == "val"


def test_a_column_may_name_a_committed_defense_and_bad_column_threats_are_refused(xray_train_dir, weights):
    from core.defense import load_defense

    recommended = load_defense("recommended")
    raw = _raw(xray_train_dir, weights)
    raw["tables"][1]["columns"] = [{"label": "Recommended", "defense": "recommended"}]
    column = preset_from_dict(raw, "named").tables[1].columns[0]
    assert (column.classifier, column.purifier, column.params) == (recommended.classifier, recommended.purifier, recommended.params)
    raw["tables"][1]["columns"] = [{"label": "Noise", "purifier": "noise", "threats": ["transfer"]}]
    with pytest.raises(PurifyLabError, match="not all in the table's"):
        preset_from_dict(raw, "bad")
    raw["tables"][1]["columns"] = [{"label": "Noise", "defense": "no-such-defense"}]
    with pytest.raises(PurifyLabError, match="defense 'no-such-defense' not found; choose one of: [a-z_, ]*recommended"):
        preset_from_dict(raw, "bad")


def test_a_convergence_table_flags_an_attack_that_has_not_levelled_off(xray_train_dir, weights, tmp_path):
    raw = _raw(xray_train_dir, weights, redraws=1, eot=1)
    raw["tables"] = [{
        "name": "convergence", "caption": "Steps.", "convergence": True,
        "classifiers": [{"name": "student_cnn", "weights": weights, "label": "tiny-cnn"}],
        "rows": [
            {"label": "tiny 1", "name": "pgd", "eps": 0.0001, "steps": 1}, {"label": "tiny 3", "name": "pgd", "eps": 0.0001, "steps": 3},
            {"label": "big 1", "name": "pgd", "eps": 0.3, "steps": 1, "alpha": 0.01},
            {"label": "big 20", "name": "pgd", "eps": 0.3, "steps": 20, "alpha": 0.01},
        ],
        "columns": [{"label": "Original"}],
    }]  # fmt: skip
    outcome = run_preset(preset_from_dict(raw, "convergence-tiny"), tmp_path / "s.sqlite", tmp_path / "out", progress=False)
    checks = {
        c["values"]["more_budget"] != c["values"]["less_budget"]: c
        for c in json.loads(outcome.paths["json"].read_text())["sanity_checks"]
        if c["name"] == "grey attack converged in steps"
    }
    assert checks[False]["flag"] is None  # eps 1e-4 changes nothing whatever the steps
    assert "has not converged in steps" in checks[True]["flag"] and "FLAG: fails 'grey attack converged in steps' (Original)" in outcome.markdown


def test_a_convergence_series_varies_one_attack_setting_only(xray_train_dir, weights, tmp_path):
    """Rows apart in restarts or alpha too were sorted into the steps series (and an EOT series), so the
    check paired PGD 20 with its restarted copy and never compared PGD 1 with PGD 20."""
    raw = _raw(xray_train_dir, weights, redraws=1, eot=1)
    pgd = {"name": "pgd", "eps": 0.3, "alpha": 0.01}
    raw["tables"] = [{
        "name": "convergence", "caption": "Steps.", "convergence": True,
        "classifiers": [{"name": "student_cnn", "weights": weights, "label": "tiny-cnn"}],
        "rows": [
            {"label": "PGD 1", **pgd, "steps": 1}, {"label": "PGD 20", **pgd, "steps": 20},
            {"label": "PGD 20 x3", **pgd, "steps": 20, "restarts": 3}, {"label": "PGD 20 alpha 0.05", **pgd, "steps": 20, "alpha": 0.05},
        ],
        "columns": [{"label": "Original"}],
    }]  # fmt: skip
    outcome = run_preset(preset_from_dict(raw, "convergence-series"), tmp_path / "s.sqlite", tmp_path / "out", progress=False)
    accuracy = {r["row"]: r["metrics"]["one_shot_accuracy"] for r in outcome.records if r.get("table") == "convergence"}
    checks = [c for c in json.loads(outcome.paths["json"].read_text())["sanity_checks"] if "converged" in c["name"]]
    assert [(c["name"], c["row"]) for c in checks] == [("grey attack converged in steps", "PGD 20")]
    assert (checks[0]["values"]["more_budget"], checks[0]["values"]["less_budget"]) == (accuracy["PGD 20"], accuracy["PGD 1"])


def test_eot_statements_count_the_draws_the_cells_ran(xray_train_dir, weights, tmp_path):
    """Caption, chart subtitle and sweep header say the purifier draws per step each cell ran: the
    preset's EOT times the row's eot_iter, once for a deterministic purifier (as the budget counts them)."""
    raw = _raw(xray_train_dir, weights, limit=8, redraws=1, eot=2)
    raw["tables"] = [{
        "name": "white", "caption": "Own EOT.", "classifiers": [{"name": "student_cnn", "weights": weights, "label": "tiny-cnn"}],
        "rows": [{"label": "PGD", "name": "pgd", "steps": 2}, {"label": "EOT-PGD", "name": "eotpgd", "steps": 2, "eot_iter": 3}],
        "columns": [{"label": "Noise", "purifier": "gaussian", "params": {"sigma": 0.1}}, {"label": "Blur", "purifier": "blur", "params": {"sigma": 1.0}}],
        "threats": ["white"],
    }]  # fmt: skip
    preset = preset_from_dict(raw, "own-eot")
    outcome = run_preset(preset, tmp_path / "s.sqlite", tmp_path / "out", progress=False)
    budget = {(r["column"], r["row"]): r["metrics"]["budget"] for r in outcome.records if r.get("table") == "white"}
    ran = {row: budget["Noise", row]["gradient_evaluations"] // budget["Noise", row]["steps"] for row in ("PGD", "EOT-PGD")}
    assert ran == {"PGD": 2, "EOT-PGD": 6} and budget["Blur", "EOT-PGD"]["threat_eot"] == 1
    assert (
        "EOT per row: preset EOT 2 x the row's eot_iter purifier draws per attack step (PGD: 2, EOT-PGD: 6) (Blur: deterministic, drawn once)"
        in outcome.markdown
    )
    assert "EOT over several draws" in outcome.markdown and "each row's attack draws its own" not in outcome.markdown
    from core.tables.render import figure

    assert "(white, EOT 2-6 per step: preset EOT 2 x each row's eot_iter)" in figure(preset, outcome.records).layout.annotations[0].text
    # a deterministic purifier is drawn once whatever --eot says (the shipped student: cold_blur's schedule is in 128 px pixels)
    sweep = sweep_preset(
        "depth", "cold_blur", (1.0,), classifier="student_cnn", attack=AttackRow("PGD", AttackConfig(name="pgd", steps=1)),
        threat="white", eot=8, data=str(xray_train_dir), limit=4, batch_size=4,
    )  # fmt: skip
    swept = run_preset(sweep, tmp_path / "s.sqlite", tmp_path / "sweep", progress=False)
    assert next(r for r in swept.records if r["config"]["attack"])["metrics"]["budget"]["threat_eot"] == 1
    assert "EOT over 1 draw (cold_blur: deterministic, drawn once))" in swept.markdown and "EOT over 8" not in swept.markdown


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw["sanity"].update(collapse_eps=[]), r"sanity\.collapse_eps is empty"),
        (lambda raw: raw["sanity"].update(collapse_eps=[0.3, -0.5]), r"sanity\.collapse_eps\[1\]: eps=-0\.5 is outside the allowed range"),
        (lambda raw: raw["sanity"].update(collapse_eps=[1.5]), r"sanity\.collapse_eps\[0\]: eps=1\.5 is outside"),
        (lambda raw: raw["sanity"].update(collapse_steps=0), r"sanity\.collapse_steps=0 is outside the allowed range \[1, "),
        (lambda raw: raw["sanity"].update(tolerance=-0.1), r"sanity\.tolerance=-0\.1 is outside the allowed range \[0\.0, 1\.0\]"),
        (lambda raw: raw["tables"][0].update(threats=[]), r"table 'grey' has no threats"),
        (lambda raw: raw["tables"][1]["columns"][0].update(threats=[]), r"table 'threats', column 'Noise': threats is empty"),
    ],
)
def test_bad_sanity_settings_and_empty_threats_are_refused_before_any_cell(xray_train_dir, weights, change, message):
    """They were refused only after every cell was computed (an empty collapse cell stored, the field
    unnamed), crashed on render (no threats), or dropped a column from the table unseen."""
    raw = _raw(xray_train_dir, weights)
    change(raw)
    with pytest.raises(PurifyLabError, match=message):
        preset_from_dict(raw, "bad")


def test_minimal_perturbation_attacks_report_their_norms_and_a_stalled_one_is_flagged(xray_train_dir, weights, tmp_path):
    raw = _raw(xray_train_dir, weights, redraws=1, eot=1)
    raw["tables"] = [{
        "name": "minimal", "caption": "Unbounded attacks.",
        "classifiers": [{"name": "student_cnn", "weights": weights, "label": "tiny-cnn"}],
        "rows": [{"label": "DeepFool", "name": "deepfool", "norm": "l2", "steps": 50}, {"label": "CW 1 step", "name": "cw", "norm": "l2", "steps": 1}],
        "columns": [{"label": "Original"}, {"label": "Blur", "purifier": "blur", "params": {"sigma": 1.0}}],
        "claims": [{"row": "CW 1 step", "column": "Original", "value": 0.0}],
    }]  # fmt: skip
    outcome = run_preset(preset_from_dict(raw, "minimal-tiny"), tmp_path / "s.sqlite", tmp_path / "out", progress=False)
    cells = {(r["row"], r["column"]): r for r in outcome.records if r.get("table") == "minimal"}
    deepfool = cells[("DeepFool", "Original")]["metrics"]
    assert deepfool["one_shot_accuracy"] <= 0.10 and deepfool["perturbation"]["success_rate"] >= 0.9
    assert 0 < deepfool["perturbation"]["l2_median"] <= deepfool["perturbation"]["l2_max"]
    assert cells[("CW 1 step", "Original")]["metrics"]["one_shot_accuracy"] > 0.10
    checks = {c["values"]["undefended_accuracy"] <= 0.10: c for c in json.loads(outcome.paths["json"].read_text())["sanity_checks"] if "minimal" in c["name"]}
    assert checks[True]["flag"] is None and "has not converged" in checks[False]["flag"]  # the Blur column is a defense: not checked
    assert "FLAG: fails 'CW 1 step (minimal perturbation) converged' (Original)" in outcome.markdown
    assert "| CW 1 step | Original | 0.00 | " in outcome.markdown and "; the row is FLAGged |" in outcome.markdown  # the flag voids the verdict
    # grey-box: both columns were attacked with the same images, so they share one line
    assert "- DeepFool against Original [grey], Blur [grey]: success " in outcome.markdown


def test_purifier_facts_live_on_the_purifier_classes():
    """Display name, default network and sweep fields are declared by each purifier; the tables read them."""
    import dataclasses

    from core.tables.preset import sweep_parameter
    from core.weights import WEIGHTS_DIR

    for name in PURIFIERS.names():
        cls = PURIFIERS.get(name)
        assert cls.display_name
        fields = {f.name for f in dataclasses.fields(cls.config_type)}
        for kind, field in cls.sweeps.items():
            assert field in fields and sweep_parameter(kind, name) == field
        assert cls.weights is None or (WEIGHTS_DIR / f"{cls.weights}.safetensors").is_file()
    with pytest.raises(PurifyLabError, match="does not apply to purifier 'blur'; use one of: .*cold_blur"):
        sweep_parameter("depth", "blur")


def test_paper_claims_get_a_verdict_from_the_cell_interval_and_show_time_splits_purification(xray_train_dir, weights, tmp_path):
    raw = _raw(xray_train_dir, weights, redraws=1, eot=1)
    raw["tables"] = [{
        "name": "claims", "caption": "Claims.", "classifiers": [{"name": "student_cnn", "weights": weights, "label": "tiny-cnn"}],
        "rows": [{"label": "Clean"}, {"label": "FGSM", "name": "fgsm"}],
        "columns": [{"label": "Original"}, {"label": "Blur", "purifier": "blur", "params": {"sigma": 1.0}}],
        "show_time": True,
        "claims": [{"row": "Clean", "column": "Original", "value": 100.0}, {"row": "FGSM", "column": "Blur", "value": 0.0}],
    }]  # fmt: skip
    outcome = run_preset(preset_from_dict(raw, "claims-tiny"), tmp_path / "s.sqlite", tmp_path / "out", progress=False)
    cells = {(r["row"], r["column"]): r["metrics"] for r in outcome.records if r.get("table") == "claims"}
    expected = []
    for (row, column), paper in ((("Clean", "Original"), 1.0), (("FGSM", "Blur"), 0.0)):
        low, high = cells[(row, column)]["confidence_95"]["accuracy"]
        expected.append(Verdict(paper, cells[(row, column)]["one_shot_accuracy"], low, high).word)
        assert f"| {row} | {column} | {100 * paper:.2f} | " in outcome.markdown
    verdicts = [v["verdict"] for v in json.loads(outcome.paths["json"].read_text())["verdicts"]]
    assert verdicts == expected and all(word in outcome.markdown for word in expected)
    timing = cells[("FGSM", "Blur")]["timing"]
    assert 0 < timing["purify_seconds_per_image"] < timing["seconds_per_image"] and timing["attack_seconds_per_image"] > 0
    assert timing["purify_seconds_per_image_batch1"] > 0 and "at batch 1" in outcome.markdown
    # the FGSM examples were crafted once and reused by the Blur column: it still reports what they cost
    assert cells[("FGSM", "Original")]["timing"]["attack_seconds_per_image"] == timing["attack_seconds_per_image"]


def test_a_verdict_confirms_only_inside_a_narrow_interval():
    assert Verdict(0.90, 0.91, 0.86, 0.95).word == "confirms"
    assert Verdict(0.90, 0.91, 0.80, 0.97).word.startswith("cannot decide")
    assert Verdict(0.95, 0.07, 0.02, 0.14).word == "refutes (ours lower)"
    assert Verdict(0.05, 0.50, 0.40, 0.60).word == "refutes (ours higher)"


def test_a_claim_on_a_cell_the_table_lacks_is_refused(xray_train_dir, weights):
    raw = _raw(xray_train_dir, weights)
    raw["tables"][0]["claims"] = [{"row": "PGD 0.3", "column": "Original", "value": 95.0}]
    with pytest.raises(PurifyLabError, match="claim \\(PGD 0.3, Original\\) names no cell"):
        preset_from_dict(raw, "bad-claim")


def test_paper_figures_the_presets_hold_cells_for_are_judged_and_named_by_their_source():
    """Blau et al.'s Table 3 skip-10 row (our exact sampler) and SEViT's prose 'around 89 %' under FGSM
    had cells but no verdict; DiffDefense's clean figures, from its Table 1, sat under 'Their Table 2'.
    Judged here on the committed cells, as a re-render from the store judges them."""
    from core.paths import REPO_ROOT
    from core.tables.render import verdicts

    def committed(name: str) -> list[dict]:
        return json.loads((REPO_ROOT / "results" / name / f"{name}.json").read_text())["results"]

    table2, table3 = load_preset("cifar10-blau").tables[1:3]
    ddim = next(column for column in table2.columns if column.purifier == "ddim")
    # table2's own DDIM cells (same rows, column and threat model), so the store computes none anew
    assert (table3.rows, table3.columns, table3.threats) == (table2.rows, (ddim,), table2.threats)
    assert [(claim.row, claim.column, claim.value) for claim in table3.claims] == [
        ("L-inf 8/255", ddim.label, 61.54), ("L-inf 16/255", ddim.label, 43.66), ("L2 1", ddim.label, 63.64), ("L2 2", ddim.label, 43.56),
    ]  # fmt: skip
    ddim_cells = [{**r, "table": "table3"} for r in committed("cifar10-blau") if r.get("table") == "table2" and r["column"] == ddim.label]
    judged = verdicts(table3, ddim_cells)
    assert len(judged) == 4 and all(verdict is not None for _, verdict in judged)

    sevit = next(table for table in load_preset("paper-table2").tables if table.name == "sevit")
    assert [(claim.place(sevit), claim.value) for claim in sevit.claims] == [(("SEViT", "Original", "transfer", "FGSM"), 89.0)]
    sevit_cells = [r for r in committed("paper-table2") if r.get("table") == "sevit"]
    assert [verdict is not None for _, verdict in verdicts(sevit, sevit_cells)] == [True]

    mnist = load_preset("mnist-diffdefense").tables[0]
    assert {claim.row for claim in mnist.claims if claim.value in (99.14, 99.06)} == {"Clean"}
    assert "the paper's figures for the Clean row come from their Table 1" in mnist.caption


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw.update(limit="four"), r"preset\.limit must be an integer or None; got 'four'"),
        (lambda raw: raw.update(limit=2.5), r"preset\.limit must be an integer or None; got 2.5"),
        (lambda raw: raw.update(redraws="1"), r"preset\.redraws must be an integer; got '1'"),
        (lambda raw: raw["tables"][0]["rows"][2].update(steps=1.5), r"tables\[0\]\.rows\[2\]: steps must be an integer; got 1.5"),
        (lambda raw: raw["tables"][0]["rows"][2].update(eps="0.03"), r"tables\[0\]\.rows\[2\]: eps must be a number; got '0.03'"),
        (lambda raw: raw["tables"][0].pop("caption"), r"tables\[0\]: 'caption' is missing"),
        (lambda raw: raw["tables"][0].update(classifiers=[{"label": "ResNet"}]), r"tables\[0\]\.classifiers\[0\]: 'name' is missing"),
        (lambda raw: raw["tables"][0]["columns"][1].update(params=[1.0]), r"tables\[0\]\.columns\[1\]\.params must be a mapping"),
        (lambda raw: raw["sanity"].update(collapse_steps="two"), r"sanity\.collapse_steps must be an integer; got 'two'"),
        (lambda raw: raw["sanity"].update(collapse_eps=0.3), r"sanity\.collapse_eps must be a list; got 0.3"),
        (lambda raw: raw.update(sweeps=[5]), r"sweeps\[0\] must be a mapping"),
        (lambda raw: raw.update(sweeps=[{"name": "s", "kind": "tstar", "purifier": "noise", "values": ["abc"]}]), r"values\[0\] must be a number; got 'abc'"),
        (lambda raw: raw["tables"][0].update(rows=[]), "table 'grey' has no rows"),
        (lambda raw: raw.update(bootstrap=-5), r"bootstrap and seed must be >= 0 .*got -5"),
    ],
)
def test_preset_types_and_missing_fields_are_refused_in_one_line_naming_the_file(tmp_path, change, message):
    """Every field is checked against its annotation at load, before any model loads."""
    raw = _raw(tmp_path, "tiny.safetensors")
    change(raw)
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PurifyLabError, match=rf"^mine\.yaml: [^\n]*{message}"):
        load_preset(path)


def test_a_single_threat_may_be_written_without_a_list(tmp_path):
    raw = _raw(tmp_path, "tiny.safetensors")
    raw["tables"][1]["threats"] = "grey"
    assert preset_from_dict(raw, "one").tables[1].threats == ("grey",)


def test_the_resolved_config_beside_a_table_reloads_as_the_same_preset(tmp_path):
    """NAME.config.json records data relative to the repository (portable_path); the reader agrees."""
    from core.data.locations import portable_path

    preset = preset_from_dict(_raw("chest_xray_pneumonia/test", "tiny.safetensors"), "tiny")  # a data set inside the data folder
    written = tmp_path / "tiny.config.json"
    written.write_text(json.dumps(preset.resolved() | {"data": portable_path(preset.data)}))
    assert load_preset(written) == preset
    copied = tmp_path / "resolved.yaml"
    copied.write_text(written.read_text())
    assert load_preset(copied).data == preset.data
    with pytest.raises(PurifyLabError, match="preset file .*missing.config.json does not exist"):
        load_preset(tmp_path / "missing.config.json")


def test_committed_table_configs_reload_as_presets():
    from core.paths import REPO_ROOT

    configs = [path for path in (REPO_ROOT / "results").glob("**/*.config.json") if "title" in json.loads(path.read_text())]
    assert configs
    for path in configs:
        preset = load_preset(path)
        assert Path(preset.data).is_absolute() and (preset.tables or preset.sweeps or preset.detection)


def test_repeated_or_fractional_sweep_values_are_refused_and_a_sweep_row_has_one_cell_per_header(xray_train_dir, weights, tmp_path):
    """Values 0.01,0.01 printed both points' cells in one row under one header each (the attacked
    column showed the clean number); a depth of 2.5 became depth 2 unseen."""
    from core.sweeps import parse_values
    from core.tables.render import sweep_markdown

    with pytest.raises(PurifyLabError, match="^--values '0.02,0.020,0.1' repeats 0.02; give each value once$"):
        parse_values("0.02,0.020,0.1")
    with pytest.raises(PurifyLabError, match="^--values '0.1,,0.2' must be comma-separated numbers"):
        parse_values("0.1,,0.2")  # a typo, not a value to skip
    assert parse_values(" 0.1, 0.2 ") == (0.1, 0.2)
    sweep = {"name": "s", "kind": "tstar", "classifier": {"name": "student_cnn", "weights": weights}, "purifier": "noise", "values": [0.01, 0.010]}
    with pytest.raises(PurifyLabError, match="^sweep 's': t_star values must be unique; repeated: 0.01$"):
        preset_from_dict(_raw(xray_train_dir, weights, tables=[], sweeps=[sweep]), "bad")
    depth = {**sweep, "kind": "depth", "purifier": "cold_blur", "values": [2.5, 3]}
    with pytest.raises(PurifyLabError, match="^sweep 's': depth values must be whole blur levels >= 1, got 2.5, 3$"):
        preset_from_dict(_raw(xray_train_dir, weights, tables=[], sweeps=[depth]), "bad")
    with pytest.raises(PurifyLabError, match="params sets t_star, which the tstar sweep varies"):
        preset_from_dict(_raw(xray_train_dir, weights, tables=[], sweeps=[{**sweep, "values": [0.01], "params": {"t_star": 0.5}}]), "bad")
    # the renderer itself never puts more cells in a row than there are headers, even given repeated points
    preset = sweep_preset(
        "tstar", "noise", (0.01,), classifier="student_cnn", classifier_weights=weights,
        attack=AttackRow("FGSM", AttackConfig(name="fgsm")), data=str(xray_train_dir), limit=4, batch_size=4,
    )  # fmt: skip
    repeated = dataclasses.replace(preset, sweeps=(dataclasses.replace(preset.sweeps[0], values=(0.01, 0.01)),))
    records = PresetRunner(repeated, ResultStore(tmp_path / "s.sqlite"), progress=False).run()
    lines = [line for line in sweep_markdown(repeated, records).splitlines() if line.startswith("|")]
    assert lines[0] == "| t_star | Clean | FGSM |" and all(line.count("|") == 4 for line in lines)
    clean, fgsm = (next(r for r in records if r["row"] == label)["metrics"]["one_shot_accuracy"] for label in ("Clean", "FGSM"))
    assert lines[2] == f"| 0.01 | {100 * clean:.2f} | {100 * fgsm:.2f} |"


def test_a_defense_column_refuses_its_own_other_classifier_params_or_weights(xray_train_dir, weights):
    """A column {defense: smoothing, params: {sigma: 0.25}} was labelled 0.25 and computed sigma 0.5."""
    from core.defense import load_defense

    smoothing = load_defense("smoothing")
    raw = _raw(xray_train_dir, weights)
    for given, message in (
        ({"params": {"sigma": 0.25}}, r"defense 'smoothing' sets params \{'sigma': 0.5\}, but params \{'sigma': 0.25\} was given; drop one of them"),
        ({"classifier": "resnet"}, f"defense 'smoothing' sets classifier {smoothing.classifier}, but classifier resnet was given"),
        ({"purifier": "noise"}, f"defense 'smoothing' sets purifier {smoothing.purifier}, but purifier noise was given"),
        ({"classifier_weights": weights}, "defense 'smoothing' fixes its classifier, but classifier_weights was given"),
    ):
        raw["tables"][1]["columns"] = [{"label": "Smoothing", "defense": "smoothing", **given}]
        with pytest.raises(PurifyLabError, match=rf"^tables\[1\]\.columns\[0\]: {message}"):
            preset_from_dict(raw, "bad")
    raw["tables"][1]["columns"] = [{"label": "Smoothing", "defense": "smoothing", "classifier": smoothing.classifier, "params": dict(smoothing.params)}]
    assert preset_from_dict(raw, "same").tables[1].columns[0].params == smoothing.params  # the defense's own values repeated are fine
    for spelled in ({"sigma": "0.50"}, {"sigma": 0.5000}):  # compared as settings, as evaluate --defense compares them: not as text
        raw["tables"][1]["columns"] = [{"label": "Smoothing", "defense": "smoothing", "params": spelled}]
        assert preset_from_dict(raw, "same").tables[1].columns[0].params == smoothing.params


def _detection(weights, **changes) -> dict:
    spec = {
        "name": "roc", "classifier": {"name": "student_cnn", "weights": weights},
        "attacks": [{"label": "FGSM", "name": "fgsm", "eps": 0.3}], "adaptive_weight": 10.0, "adaptive_steps": 1, "adaptive_eps": 0.3,
    }  # fmt: skip
    return {**spec, **changes}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attacks": [{"label": "Clean"}]}, "detection 'roc': row 'Clean' names no attack"),
        ({"adaptive_weight": -5}, "detection 'roc': adaptive_weight -5 must be >= 0"),
        ({"attacks": [{"label": "A", "name": "fgsm"}, {"label": "A", "name": "fgsm", "eps": 0.1}]}, "detection 'roc': row labels must be unique; repeated: A"),
        ({"attacks": [], "adaptive_weight": 0}, "detection 'roc' has no attacks"),
        ({"adaptive_steps": 0}, r"detection 'roc': the detector-aware PGD \(adaptive_eps, adaptive_steps\): steps=0"),
    ],
)
def test_bad_detection_specs_are_refused_in_one_line(tmp_path, changes, message):
    """A clean row crashed in detection_cells; a negative weight dropped the detector-aware row unseen;
    repeated labels and an empty run were accepted."""
    raw = _raw(tmp_path, "tiny.safetensors", tables=[], detection=[_detection("tiny.safetensors", **changes)])
    path = tmp_path / "det.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PurifyLabError, match=rf"^det\.yaml: {message}"):
        load_preset(path)


def test_a_sevit_that_does_not_fit_the_detection_data_is_refused_before_any_cell(xray_train_dir, weights, tmp_path):
    """It was refused only inside the first detection cell, after every cheaper cell had run."""
    raw = _raw(xray_train_dir, weights, limit=4, detection=[_detection(weights, sevit="sevit")])
    with pytest.raises(PurifyLabError, match=f"detection 'roc': sevit 'sevit' takes 128 px, 1-channel images, .*as {IMAGE_SIZE} px"):
        run_preset(preset_from_dict(raw, "sevit-tiny"), tmp_path / "s.sqlite", tmp_path / "out", progress=False)
    assert ResultStore(tmp_path / "s.sqlite").cells() == [] and not (tmp_path / "out").exists()


def test_detection_outputs_name_each_rows_attacker_images_and_split(shared_data, tmp_path):
    """The detector-aware row was headed grey-box although its attacker sees the reconstruction error;
    n and split were missing; the CSV held no detection row."""
    raw = {
        "title": "tiny detection", "data": str(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz"), "split": "val", "limit": 4,
        "batch_size": 4, "bootstrap": 10,
        "detection": [_detection(None, classifier="mnist_cnn", purifier_params={"denoiser": "ddpm_unet_mnist", "L": 1, "R": 1, "t_start": 0.2})],
    }  # fmt: skip
    outcome = run_preset(preset_from_dict(raw, "det-tiny"), tmp_path / "s.sqlite", tmp_path / "out", progress=False)
    aware = "Adaptive PGD, sees the reconstruction error (L-inf 0.3, 1 step, lambda 10)"
    assert [r["row"] for r in outcome.records] == ["FGSM", aware]
    assert [r["metrics"]["device"] for r in outcome.records] == ["cpu", "cpu"]  # as every cell records where it ran
    assert "grey-box attacks on the classifier" not in outcome.markdown
    assert "On 4 images of split 'val' of mnist/t10k-images-idx3-ubyte.gz, seed 0" in outcome.markdown
    assert "Threat model - grey (FGSM): attacker sees the classifier only" in outcome.markdown
    assert f"{aware}: an adaptive attacker that at every step also sees the purifier's reconstruction error" in outcome.markdown
    rows = list(csv.DictReader(outcome.paths["csv"].open()))
    assert [(r["table"], r["row"], r["column"], r["threat"]) for r in rows] == [
        ("detection:roc", "FGSM", "detector=reconstruction", "grey"),
        ("detection:roc", aware, "detector=reconstruction", "adaptive (sees the reconstruction error)"),
    ]
    for row, record in zip(rows, outcome.records, strict=True):
        assert float(row["auroc"]) == record["metrics"]["reconstruction"]["auroc"] and row["n"] == "4" and row["split"] == "val"
    from core.tables.render import figure

    (subtitle,) = [a.text for a in figure(preset_from_dict(raw, "det-tiny"), outcome.records).layout.annotations]
    assert "threat grey but the adaptive line, an adaptive attacker that sees the reconstruction error: one attack per line · 4 images" in subtitle


def test_every_committed_cell_is_printed_with_the_config_its_key_hashes():
    """A cell's key is the hash of the config it is stored under (`keyed_config`): a rendered table that
    printed the config without the key's own fields left the key unverifiable from its JSON."""
    import hashlib

    from core.paths import REPO_ROOT
    from core.results import canonical_json

    checked = 0
    for path in sorted((REPO_ROOT / "results").glob("*/*.json")):
        document = json.loads(path.read_text())
        for result in document.get("results", []) if isinstance(document, dict) else []:
            if isinstance(result, dict) and {"key", "config"} <= result.keys():
                assert hashlib.sha256(canonical_json(result["config"]).encode()).hexdigest() == result["key"], (path.name, result.get("row"))
                checked += 1
    assert checked > 100


def test_a_preset_refuses_the_eot_its_threats_own_rule_refuses(tmp_path):
    """The preset spelled bpda-eot's two-draw rule again; it asks the threat model now, on the draws its cells spend."""
    from core.attacks import THREAT_MODELS

    for name, threat in THREAT_MODELS.items():
        if threat.needs_substitute:  # the transfer threat's substitute is another check
            continue
        for eot in (1, 2, 3):
            raw = _raw(tmp_path, "tiny.safetensors", eot=eot)
            raw["tables"][1]["threats"] = [name]
            try:
                threat.check_eot(threat.draws_per_step(eot))
            except PurifyLabError:
                with pytest.raises(PurifyLabError, match=rf"^table 'threats' uses {name}: set eot >= 2 \(got {eot}\)$"):
                    preset_from_dict(raw, "eot")
            else:
                assert preset_from_dict(raw, "eot").eot == eot


def test_a_preset_eot_above_the_bound_is_refused_as_such_not_as_too_few_draws(tmp_path):
    """eot 5000 was told 'set eot >= 2 (got 5000)' once the threats' rule checked the range first."""
    with pytest.raises(PurifyLabError, match=r"^eot=5000 is outside the allowed range \[1, 1000\]"):
        preset_from_dict(_raw(tmp_path, "tiny.safetensors", eot=5000), "eot-bound")


@pytest.mark.parametrize("n", [50, 100])
def test_a_convergence_gap_of_exactly_the_tolerance_passes_and_one_image_more_is_flagged(tmp_path, n):
    """4/50 against 3/50 is one image, which the check allows at tolerance 0.02, yet (k + 1)/50 - k/50
    came out one float ulp over 0.02 for most k and FLAGged the row as not converged."""
    from core.tables.render import convergence_checks

    raw = _raw(tmp_path, "tiny.safetensors")
    raw["tables"] = [{
        "name": "convergence", "caption": "Steps.", "convergence": True, "classifiers": [{"name": "student_cnn", "label": "tiny-cnn"}],
        "rows": [{"label": "PGD 10", "name": "pgd", "steps": 10}, {"label": "PGD 20", "name": "pgd", "steps": 20}],
        "columns": [{"label": "Original"}],
    }]  # fmt: skip
    preset = preset_from_dict(raw, "convergence-boundary")
    table, tolerance = preset.tables[0], preset.sanity.tolerance

    def checked(more: int, fewer: int):
        place = {"table": "convergence", "classifier": "tiny-cnn", "column": "Original", "threat": "grey"}
        cells = [{**place, "row": row, "metrics": {"n": n, "one_shot_accuracy": count / n}} for row, count in (("PGD 20", more), ("PGD 10", fewer))]
        [(_, check)] = convergence_checks(cells, table, tolerance)
        return check

    allowed = round(tolerance * n)  # images: 1 at n = 50, 2 at n = 100
    for fewer in range(n - allowed):
        for more, less in ((fewer + allowed, fewer), (fewer, fewer + allowed)):
            assert checked(more, less).passed, (more, less, n)
        for more, less in ((fewer + allowed + 1, fewer), (fewer, fewer + allowed + 1)):
            assert "has not converged in steps" in checked(more, less).flag, (more, less, n)


@pytest.mark.parametrize("n", [16, 200])
def test_a_masking_inversion_of_one_image_passes_at_small_n_and_two_are_flagged(tmp_path, n):
    """The ordering check allowed a fixed 0.02: at n = 16 one image of a one-draw cell (6 points) read
    as gradient masking, while the convergence check beside it allows one image. Its flag named exact
    gradients for BPDA, whose gradients are approximate."""
    from core.tables.render import masking_checks

    raw = _raw(tmp_path, "tiny.safetensors")
    raw["tables"][1]["threats"] = ["grey", "bpda-eot"]
    preset = preset_from_dict(raw, "masking-small-n")
    table, tolerance = preset.tables[1], preset.sanity.tolerance
    row, column = table.rows[0].label, table.columns[0].label

    def checked(strong: int, weak: int):
        place = {"table": table.name, "classifier": table.classifiers[0].label, "column": column, "row": row}
        cells = [
            {**place, "threat": threat, "config": {"attack": {"name": "pgd"}}, "metrics": {"n": n, "one_shot_accuracy": count / n}}
            for threat, count in (("bpda-eot", strong), ("grey", weak))
        ]
        [(_, check)] = masking_checks(cells, table, tolerance)
        return check

    allowed = max(1, round(tolerance * n))  # images: 1 at n = 16, 4 at n = 200
    assert checked(5 + allowed, 5).passed
    flag = checked(5 + allowed + 1, 5).flag
    assert "the attacker with more access to the defense does worse" in flag and "exact gradients" not in flag


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 150.0, -20.0])
def test_a_paper_claim_that_is_no_percentage_is_refused_naming_the_claim(tmp_path, value):
    """A NaN claim was accepted and 'confirmed' (NaN fails every comparison); 150 % and -20 % were accepted."""
    raw = _raw(tmp_path, "tiny.safetensors")
    raw["tables"][0]["claims"] = [{"row": "PGD", "column": "Original", "value": value}]
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(raw))
    message = rf"^claims\.yaml: table 'grey': claim \(PGD, Original\) value={value} is outside the allowed range \[0\.0, 100\.0\]"
    with pytest.raises(PurifyLabError, match=message) as error:
        load_preset(path)
    assert "\n" not in str(error.value)
    raw["tables"][0]["claims"][0]["value"] = 100.0  # the range's ends are figures a paper prints
    assert preset_from_dict(raw, "claims").tables[0].claims[0].value == 100.0
    with pytest.raises(PurifyLabError, match="a verdict needs finite figures; got paper nan"):
        Verdict(float("nan"), 0.5, 0.47, 0.53)


def test_the_verdict_header_names_a_balanced_accuracy_tables_metric_and_interval(tmp_path):
    """Every verdict header called its interval exact; a balanced-accuracy cell's is the Bonferroni mean of
    per-class Clopper-Pearson bounds, and the paper's figure is read as balanced accuracy there."""
    from core.tables.render import verdict_lines

    metrics = {
        "n": 32, "accuracy": 0.625, "one_shot_accuracy": 0.625, "balanced_accuracy": 0.55,
        "confidence_95": {"accuracy": [0.4369, 0.789], "balanced_accuracy": [0.30, 0.79]},
    }  # fmt: skip
    headers = {}
    for metric in ("accuracy", "balanced_accuracy"):
        raw = _raw(tmp_path, "tiny.safetensors")
        raw["tables"][0].update(metric=metric, claims=[{"row": "PGD", "column": "Original", "value": 60.0}])
        table = preset_from_dict(raw, metric).tables[0]
        cell = {"table": table.name, "classifier": "tiny-cnn", "column": "Original", "threat": "grey", "row": "PGD", "metrics": metrics}
        headers[metric] = verdict_lines(table, [cell], [])[0]
    assert headers["accuracy"].startswith("Against the paper's figures (the cell's exact 95 % interval; a figure inside it")
    balanced = headers["balanced_accuracy"]
    assert "exact 95 %" not in balanced and "balanced accuracy" in balanced and "Bonferroni mean of per-class Clopper-Pearson bounds" in balanced


def test_a_sweep_figure_and_table_run_in_value_order_with_intervals_draws_and_distinct_labels(xray_train_dir, weights, tmp_path):
    """--values 0.3,0.1000002,0.05,0.1000001 drew a zigzag and printed rows in that order, two of them
    "0.1"; the curve had no interval and its subtitle named no EOT or redraws, and a clean-only curve
    still said "threat grey: no attack"."""
    from core.tables.render import curves_figure, sweep_markdown

    preset = sweep_preset(
        "tstar", "noise", (0.3, 0.1000002, 0.05, 0.1000001), classifier="student_cnn", classifier_weights=weights,
        attack=AttackRow("FGSM", AttackConfig(name="fgsm", eps=0.03)), threat="bpda-eot", eot=2, redraws=2,
        data=str(xray_train_dir), limit=4, batch_size=4,
    )  # fmt: skip
    records = PresetRunner(preset, ResultStore(tmp_path / "s.sqlite"), progress=False).run()
    rows = [line.split(" | ")[0].strip("| ") for line in sweep_markdown(preset, records).splitlines() if line.startswith("| 0")]
    assert rows == ["0.05", "0.1000001", "0.1000002", "0.3"]
    figure = curves_figure({"title": preset.title, "results": records}).to_dict()
    for trace in figure["data"]:
        points = sorted((r for r in records if r["row"] == trace["name"]), key=lambda r: r["value"])
        assert trace["x"] == [0.05, 0.1000001, 0.1000002, 0.3] == [r["value"] for r in points]
        lows, highs = zip(*(r["metrics"]["confidence_95"]["accuracy"] for r in points), strict=True)  # what the CSV prints
        assert [y - minus for y, minus in zip(trace["y"], trace["error_y"]["arrayminus"], strict=True)] == pytest.approx([100 * low for low in lows])
        assert [y + plus for y, plus in zip(trace["y"], trace["error_y"]["array"], strict=True)] == pytest.approx([100 * high for high in highs])
    (subtitle,) = [annotation["text"].split("<sup>")[1] for annotation in figure["layout"]["annotations"]]
    assert subtitle.startswith("threat bpda-eot: FGSM L-inf 0.03 · 4 images, split 'val'")
    assert "one-shot accuracy (%): the first of 2 test-time purifier draws (the worst over them in the table)" in subtitle
    assert subtitle.endswith(" · BPDA with expectation over 2 purifier draws per step</sup>") and "bars: 95 % interval" in subtitle
    clean = curves_figure({"title": preset.title, "results": [r for r in records if r["config"]["attack"] is None]}).to_dict()
    (clean_title,) = [annotation["text"] for annotation in clean["layout"]["annotations"]]
    assert "<sup>clean, no attack · 4 images" in clean_title and "threat" not in clean_title


def test_presets_lists_every_preset_without_importing_torch():
    """`purifylab presets` prints names and titles: building each preset to read its title imported the
    attack and purifier registries (torch, torchattacks: 6 s of CPU). The heading it reads instead holds
    what the whole preset holds."""
    import subprocess
    import sys

    from core.tables import preset_heading

    code = (
        "import sys\nfrom core.cli import main\ntry:\n    main(['presets', '--json'])\nexcept SystemExit as exit:\n    assert exit.code in (None, 0)\n"
        "print(sorted(m for m in ('torch', 'torchattacks', 'timm', 'diffusers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    *listing, heavy = done.stdout.strip().splitlines()
    assert heavy == "[]"
    rows = json.loads("\n".join(listing))
    assert [row["name"] for row in rows] == list_presets()
    for row in rows:
        preset, heading = load_preset(row["name"]), preset_heading(row["name"])
        assert row["title"] == preset.title and (heading.name, heading.title, heading.data) == (preset.name, preset.title, preset.data)


def test_a_cell_records_its_device_in_its_metrics_and_a_stored_cell_without_one_keeps_its_key(xray_train_dir, weights, tmp_path):
    """No cell said where it ran, though a CUDA cell's purifier noise differs from a CPU cell's. The device goes
    in the stored metrics, never the key: committed cells, stored before it was recorded, are still reused."""
    raw = _raw(xray_train_dir, weights, limit=8)
    raw["tables"] = raw["tables"][:1]
    raw["tables"][0]["rows"] = raw["tables"][0]["rows"][:2]
    preset = preset_from_dict(raw, "tiny")
    fresh = run_preset(preset, tmp_path / "fresh.sqlite", tmp_path / "fresh", progress=False)
    assert {r["metrics"]["device"] for r in fresh.records} == {"cpu"} and any("collapse" in r for r in fresh.records)
    assert all("device" not in r["config"] for r in fresh.records)
    with ResultStore(tmp_path / "fresh.sqlite") as store, ResultStore(tmp_path / "committed.sqlite") as committed:
        for cell in store.cells():
            assert cell.metrics["device"] == "cpu"
            committed.put(cell.config, {key: value for key, value in cell.metrics.items() if key != "device"})
    reused = run_preset(preset, tmp_path / "committed.sqlite", tmp_path / "committed", progress=False)
    assert not reused.computed and [r["key"] for r in reused.records] == [r["key"] for r in fresh.records]


def _sixteen_xrays(xray_paths, root: Path) -> Path:
    """A folder of the 16 X-rays of `xray_paths` (8 per class), linked, not copied."""
    for cls, files in xray_paths.items():
        (root / "sixteen" / cls).mkdir(parents=True)
        for file in files:
            (root / "sixteen" / cls / file.name).symlink_to(file)
    return root / "sixteen"


def _two_cell_raw(data: Path, weights, **changes) -> dict:
    """One table of two cells (Clean and FGSM, no purifier) on all of `data`: the least a table computes."""
    raw = _raw(data, weights, split="all", **changes)
    raw["tables"] = raw["tables"][:1]
    raw["tables"][0].update(rows=raw["tables"][0]["rows"][:2], columns=raw["tables"][0]["columns"][:1], averages=False)
    return raw


def test_a_limit_above_the_splits_size_reads_the_whole_split_under_its_keys_and_counts_its_images(xray_paths, weights, tmp_path):
    """`--limit 1000` on the 301 test X-rays titled quick's table 'on 1000 X-rays', and keyed its cells apart from
    the full run's over the very same images. The cells are the full run's now, and the outputs count the images read."""
    data = _sixteen_xrays(xray_paths, tmp_path)
    eight = preset_from_dict(_two_cell_raw(data, weights, limit=8, title="tiny on 8 X-rays (grey-box)"), "tiny")
    store = tmp_path / "store.sqlite"
    whole = run_preset(dataclasses.replace(eight, limit=None, title="tiny on every X-ray"), store, tmp_path / "whole", progress=False)
    assert {r["config"]["data"]["limit"] for r in whole.records} == {None} and len(whole.computed) == 3  # two table cells, one collapse cell
    for over in (eight.with_overrides(limit=1000), preset_from_dict(_two_cell_raw(data, weights, limit=99, title="tiny on 99 X-rays (grey-box)"), "tiny")):
        outcome = run_preset(over, store, tmp_path / f"over{over.limit}", progress=False)
        assert outcome.computed == [] and [r["key"] for r in outcome.records] == [r["key"] for r in whole.records]
        assert outcome.markdown.startswith("# tiny on 16 X-rays (grey-box)\n") and "on 16 images of split 'all'" in outcome.markdown
        assert json.loads(outcome.paths["json"].read_text())["title"] == "tiny on 16 X-rays (grey-box)"
        assert json.loads(outcome.paths["config"].read_text())["limit"] == over.limit  # the settings as given: the command reruns as it was
        assert run_preset(over, store, tmp_path / f"over{over.limit}", progress=False).computed == []
    within = run_preset(eight, store, tmp_path / "eight", progress=False)  # a limit the split holds keeps its own cells and count
    assert within.markdown.startswith("# tiny on 8 X-rays (grey-box)\n") and {r["config"]["data"]["limit"] for r in within.records} == {8}


def test_a_stored_cell_without_a_printed_metric_is_refused_by_name_before_any_compute(xray_paths, weights, tmp_path):
    """A stored row without `n` (an older layout, a hand-edited row) was "reused", then broke the writing of
    the table with KeyError: 'n'. It is refused in one line naming the cell and the store, before any other
    cell is computed, and the store keeps the row as it was."""
    import sqlite3

    preset = preset_from_dict(_two_cell_raw(_sixteen_xrays(xray_paths, tmp_path), weights, limit=4), "tiny")
    store = tmp_path / "store.sqlite"
    first = run_preset(preset, store, tmp_path / "first", progress=False)
    clean, fgsm = (next(r for r in first.records if r.get("row") == row) for row in ("Clean", "FGSM"))
    with sqlite3.connect(store) as connection:
        metrics = json.loads(connection.execute("SELECT metrics FROM cells WHERE key = ?", (fgsm["key"],)).fetchone()[0])
        del metrics["n"]
        connection.execute("UPDATE cells SET metrics = ? WHERE key = ?", (json.dumps(metrics), fgsm["key"]))
        connection.execute("DELETE FROM cells WHERE key = ?", (clean["key"],))  # a cell the refused run must not compute
        before = connection.execute("SELECT * FROM cells ORDER BY key").fetchall()
    message = rf"^cell {fgsm['key']} in the results store .*store\.sqlite lacks n \(an older layout or a hand-edited row\); delete that row to recompute it"
    with pytest.raises(PurifyLabError, match=message) as refused:
        run_preset(preset, store, tmp_path / "second", progress=False)
    assert "\n" not in str(refused.value) and not any((tmp_path / "second").glob("*"))
    with sqlite3.connect(store) as connection:
        assert connection.execute("SELECT * FROM cells ORDER BY key").fetchall() == before


@pytest.mark.parametrize("text", ["{bad", "[1, 2]", "null", "3", '"tiny"'])
def test_an_out_dir_config_that_is_not_a_json_object_is_refused_as_not_purifylabs(tmp_path, text):
    """A tiny.config.json holding [1, 2] (valid JSON, no object) beside a table gave AttributeError: 'list'
    object has no attribute 'get'; unreadable JSON was refused in one line, and so is this now."""
    from core.tables.render import check_replaceable

    preset = preset_from_dict(_raw(tmp_path, "tiny.safetensors"), "tiny")
    out = tmp_path / "out"
    out.mkdir()
    (out / "tiny.md").write_text("# my notes\n")
    (out / "tiny.config.json").write_text(text)
    with pytest.raises(PurifyLabError, match=r"tiny\.md exists and purifylab did not write it \(no readable tiny\.config\.json beside it\); pass --overwrite"):
        check_replaceable(preset, out)
    assert (out / "tiny.md").read_text() == "# my notes\n" and (out / "tiny.config.json").read_text() == text


@pytest.mark.parametrize("n", [16, 31, 301])
def test_an_accuracy_tables_caption_says_where_each_cells_interval_is_and_how_wide_it_gets(tmp_path, n):
    """Accuracy tables printed bare percentages ('87.50 | 78.12' on 32 images) with no interval and no pointer
    to one. The caption names the columns that hold each cell's exact interval and the widest one at the
    table's n; a balanced-accuracy table, whose cells print their interval, keeps its caption."""
    from core.metrics import clopper_pearson
    from core.tables.render import table_caption

    widest = max(high - low for low, high in (clopper_pearson(k, n) for k in range(n + 1)))
    records = [{"table": "grey", "row": "Clean", "config": {"attack": None}, "metrics": {"n": n, "redraws": 1}}]
    for metric in ("accuracy", "balanced_accuracy"):
        raw = _raw(tmp_path, "tiny.safetensors")
        raw["tables"][0]["metric"] = metric
        preset = preset_from_dict(raw, metric)
        caption = table_caption(preset, preset.tables[0], records)
        if metric == "accuracy":
            assert "The CSV and the JSON (confidence_95) hold the 95 % interval of each cell: exact Clopper-Pearson for accuracy (accuracy_ci_low, " in caption
            assert f"at n = {n} the widest exact one, at {n // 2} of {n} right, spans {100 * widest:.1f} points" in caption
        else:
            assert "accuracy_ci_low" not in caption and "the widest" not in caption


def test_a_sweeps_markdown_names_its_attacks_steps_norm_eps_and_eot(xray_paths, weights, tmp_path):
    """The sweep's Markdown named its column 'pgd linf 0.03' and its threat model, never the 10 steps the cells
    ran; the HTML subtitle and the table captions did. It names the attack as the subtitle does now."""
    preset = sweep_preset(
        "tstar", "noise", (0.01,), classifier="student_cnn", classifier_weights=weights,
        attack=AttackRow("eotpgd linf 0.03", AttackConfig(name="eotpgd", steps=3, eot_iter=2)), threat="bpda-eot", eot=2,
        data=str(_sixteen_xrays(xray_paths, tmp_path)), split="all", limit=4, batch_size=4,
    )  # fmt: skip
    markdown = run_preset(preset, tmp_path / "s.sqlite", tmp_path / "sweep", progress=False).markdown
    (line,) = [line for line in markdown.splitlines() if line.startswith("On 4 images")]
    assert line.endswith("; 95 % intervals in the CSV and JSON. Attacks: eotpgd linf 0.03 = EOTPGD-3 L-inf 0.03, EOT 2.")


def test_an_l2_budget_wider_than_the_classifiers_input_is_refused_before_any_cell(xray_train_dir, weights, tmp_path):
    """No two 1 x 32 x 32 images in [0, 1] are more than L2 32 apart: eps=40 holds every image. `evaluate`
    refused it, but a table, a sweep and a detection ROC computed their cells with it and printed 'L2 40'."""
    wide = {"label": "PGD L2 40", "name": "pgdl2", "norm": "l2", "eps": 40.0, "steps": 1}
    table = _raw(xray_train_dir, weights, limit=4)
    table["tables"] = table["tables"][:1]
    table["tables"][0]["rows"] = [{"label": "Clean"}, wide]
    sweep = sweep_preset(
        "tstar", "noise", (0.01,), classifier="student_cnn", classifier_weights=weights,
        attack=AttackRow("pgdl2 l2 40", AttackConfig(name="pgdl2", norm="l2", eps=40.0, steps=1)), data=str(xray_train_dir), limit=4, batch_size=8,
    )  # fmt: skip
    detection = _raw(xray_train_dir, weights, limit=4, tables=[], detection=[_detection(weights, attacks=[wide], adaptive_weight=0)])
    message = rf"^eps=40.0 is wider than student_cnn's input \(1x{IMAGE_SIZE}x{IMAGE_SIZE}\), .*; choose eps <= {IMAGE_SIZE}$"
    for preset in (preset_from_dict(table, "wide-table"), sweep, preset_from_dict(detection, "wide-roc")):
        with pytest.raises(PurifyLabError, match=message):
            run_preset(preset, tmp_path / "s.sqlite", tmp_path / "out", progress=False)
        assert ResultStore(tmp_path / "s.sqlite").cells() == [] and not (tmp_path / "out").exists()
    table["tables"][0]["rows"][1]["eps"] = float(IMAGE_SIZE)  # the diameter itself is allowed
    runner = PresetRunner(preset_from_dict(table, "widest"), ResultStore(tmp_path / "s.sqlite"))
    assert len(runner.all_entries()) == 2 * 2 + 1  # two rows, two columns, the collapse cell


def test_an_a_b_tables_caption_says_its_intervals_are_the_one_shot_figures_and_names_the_balanced_method(tmp_path):
    """Under 'a / b' cells the caption said each cell's interval was in the CSV, but the CSV holds the one-shot
    figure a's only (0.615 / 0.305 beside [0.544, 0.683]); it called the balanced-accuracy one Clopper-Pearson too."""
    from core.tables.render import table_caption

    preset = preset_from_dict(_raw(tmp_path, "tiny.safetensors"), "tiny")
    captions = {}
    for redraws in (1, 2):
        records = [{"table": "grey", "row": "Clean", "config": {"attack": None}, "metrics": {"n": 32, "redraws": redraws}}]
        captions[redraws] = table_caption(preset, preset.tables[0], records)
    assert "cells 'a / b' = one-shot / worst of 2" in captions[2] and "'a / b'" not in captions[1]
    assert "hold the 95 % interval of each cell's one-shot figure a: exact Clopper-Pearson for accuracy" in captions[2]
    assert "hold the 95 % interval of each cell: exact" in captions[1]
    for caption in captions.values():
        assert "the Bonferroni mean of per-class Clopper-Pearson bounds for balanced accuracy (balanced_accuracy_ci_low" in caption
        intervals = caption[caption.index("The CSV") :]
        assert ". " not in intervals and intervals.endswith(")."), caption  # one sentence, the caption's last
