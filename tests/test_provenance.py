"""Every CLI output's config records what produced it: library versions, git commit, and the SHA-256 of
each weights file the run loaded (from the cards those files were checked against), by file name."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest
import torch

from core.cli import main
from core.cli.reporting import write_config
from core.models import SEViT, create_classifier
from core.paths import WEIGHTS_DIR
from core.results import git_commit, library_versions
from core.weights import read_card, save_weights

LIBRARIES = ("torch", "diffusers", "torchattacks", "timm", "numpy", "purifylab")


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


def shipped(*stems: str) -> dict[str, str]:
    """File name -> the SHA-256 its shipped card pins, for the weights a run is expected to have loaded."""
    return {f"{stem}.safetensors": read_card(WEIGHTS_DIR / f"{stem}.safetensors")["sha256"] for stem in stems}


def assert_software(software: dict) -> None:
    assert {name: software[name] for name in LIBRARIES} == {name: metadata.version(name) for name in LIBRARIES}
    assert software["git_commit"] == git_commit()


def test_evaluate_config_names_the_classifier_and_denoiser_by_hash_with_versions(xray_test_dir, tmp_path, capsys):
    """The audit's case: the config named the denoiser only as 'ddpm_unet' and recorded no versions."""
    out = tmp_path / "r.json"
    args = ["evaluate", "--classifier", "resnet", "--purifier", "one_shot", "--data", str(xray_test_dir), "--limit", "2", "--threads", "1"]
    code, _, err = run_cli([*args, "--json", str(out)], capsys)
    assert code == 0, err
    provenance = json.loads((tmp_path / "r.config.json").read_text())["provenance"]
    assert provenance["weights"] == shipped("resnet", "ddpm_unet")
    assert_software(provenance["software"])


def test_evaluate_under_transfer_names_the_substitute(xray_test_dir, tmp_path, capsys):
    out = tmp_path / "t.json"
    args = ["evaluate", "--classifier", "student_cnn", "--data", str(xray_test_dir), "--limit", "2", "--attack", "fgsm", "--threat", "transfer"]
    code, _, err = run_cli([*args, "--threads", "1", "--json", str(out)], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "t.config.json").read_text())["provenance"]["weights"] == shipped("student_cnn", "substitute")


def test_evaluate_records_its_data_and_weights_as_certify_does_wherever_it_ran(xray_test_dir, tmp_path, capsys, monkeypatch):
    """Run from another folder, the config kept --data as typed ('test', '../../shared/...'): a path that
    names nothing from the repository, where certify records the repository-relative form."""
    from core.data.locations import REPO_ROOT, portable_path

    weights = tmp_path / "student.safetensors"
    weights.write_bytes((WEIGHTS_DIR / "student_cnn.safetensors").read_bytes())
    (tmp_path / "student.json").write_text((WEIGHTS_DIR / "student_cnn.json").read_text())
    monkeypatch.chdir(xray_test_dir.parent)
    args = ["evaluate", "--classifier", "student_cnn", "--weights", str(weights), "--data", xray_test_dir.name, "--limit", "2", "--threads", "1"]
    code, _, err = run_cli([*args, "--json", str(tmp_path / "r.json")], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "r.config.json").read_text())
    assert (config["data"], config["weights"]) == (portable_path(xray_test_dir), portable_path(weights))
    assert (REPO_ROOT / config["data"]).resolve() == xray_test_dir.resolve()


def test_attack_with_sevit_names_its_vit_backbone(xray_paths, tmp_path, capsys):
    out = tmp_path / "a.png"
    args = ["attack", str(xray_paths["NORMAL"][0]), "--classifier", "sevit", "--attack", "fgsm", "--threads", "1"]
    code, stdout, err = run_cli([*args, "--out", str(out)], capsys)
    assert code == 0, err
    written = json.loads(out.with_suffix(".json").read_text())
    assert written == json.loads(stdout) and written["provenance"]["weights"] == shipped("sevit", "vit")


def test_purify_names_the_cold_unet_and_prints_what_it_wrote(xray_paths, tmp_path, capsys):
    out = tmp_path / "p.png"
    code, stdout, err = run_cli(["purify", str(xray_paths["NORMAL"][0]), "--purifier", "cold_direct", "--out", str(out)], capsys)
    assert code == 0, err
    written = json.loads(out.with_suffix(".json").read_text())
    assert written == json.loads(stdout) and written["provenance"]["weights"] == shipped("cold_unet")
    assert_software(written["provenance"]["software"])


def test_certify_names_the_classifier_and_its_denoiser(xray_test_dir, tmp_path, capsys):
    out = tmp_path / "c.json"
    args = ["certify", "--data", str(xray_test_dir), "--classifier", "resnet", "--n", "8", "--n0", "2", "--alpha", "0.1", "--limit", "1"]
    code, _, err = run_cli([*args, "--threads", "1", "--json", str(out)], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "c.config.json").read_text())["provenance"]["weights"] == shipped("resnet", "ddpm_unet")


def test_a_sevit_loaded_from_files_lists_its_heads_and_its_backbone(tmp_path):
    torch.manual_seed(0)
    vit = create_classifier("vit", pretrained=False, image_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2)
    backbone = tmp_path / "my_vit.safetensors"
    backbone_card = save_weights(vit, backbone, {"name": "vit", "architecture": vit.architecture})
    sevit = SEViT(create_classifier("vit", weights=backbone), mlp_heads=2)
    heads = tmp_path / "my_sevit.safetensors"
    heads_card = save_weights(sevit.heads, heads, {"architecture": sevit.architecture, "backbone_sha256": backbone_card["sha256"]})
    loaded = create_classifier("sevit", weights=heads, backbone_weights=backbone)
    assert loaded.loaded_weights() == {"my_sevit.safetensors": heads_card["sha256"], "my_vit.safetensors": backbone_card["sha256"]}
    assert create_classifier("vit", pretrained=False, image_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2).loaded_weights() == {}


def test_a_config_written_without_the_networks_records_its_weights_as_unknown(tmp_path: Path):
    """`purifylab bench` and the benchmark scripts load networks they cannot hand over: None, never {}."""
    written = write_config(tmp_path / "report.json", {"command": "bench"})
    assert json.loads((tmp_path / "report.config.json").read_text()) == written
    assert written["provenance"]["weights"] is None and written["command"] == "bench"
    assert_software(written["provenance"]["software"])
    assert set(library_versions()) == {"torch", "timm", "diffusers", "torchattacks"}  # the results store's rows keep their layout


def test_provenance_says_whether_the_checkout_differs_from_its_commit(tmp_path):
    """The git commit was recorded while the tree held uncommitted edits, with no sign of them."""
    import subprocess

    from core.paths import REPO_ROOT

    software = write_config(tmp_path / "x.png", {"command": "test"})["provenance"]["software"]
    status = subprocess.run(["git", "status", "--porcelain", "--", ".", ":(exclude)results"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert software["git_dirty"] is bool(status.stdout.strip())


def test_outputs_under_results_do_not_make_the_checkout_dirty_and_code_does(tmp_path):
    """Re-rendering 13 tables on a clean commit recorded every table after the first as computed on a
    dirty tree: the first one's own outputs had made it so."""
    import subprocess

    from core.results import git_dirty

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "core.py").write_text("x = 1\n")
    (tmp_path / "results" / "table.md").write_text("| a |\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    assert git_dirty(tmp_path) is False
    (tmp_path / "results" / "table.md").write_text("| b |\n")
    (tmp_path / "results" / "new.json").write_text("{}\n")
    assert git_dirty(tmp_path) is False
    (tmp_path / "core.py").write_text("x = 2\n")
    assert git_dirty(tmp_path) is True
