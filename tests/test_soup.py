"""Model soups: the average is the hand-computed one, the CLI writes a calibrated card naming its members, bad members are refused."""

from __future__ import annotations

import json

import pytest
import torch

from core.cli import main
from core.errors import PurifyLabError
from core.train.soup import soup_state
from core.weights import load_state, training_time


def test_floating_tensors_are_averaged_and_batch_counts_kept():
    first = {"w": torch.tensor([1.0, 2.0]), "running_mean": torch.tensor([3.0]), "num_batches_tracked": torch.tensor(5)}
    second = {"w": torch.tensor([3.0, 5.0]), "running_mean": torch.tensor([6.0]), "num_batches_tracked": torch.tensor(9)}
    soup = soup_state([first, second])
    assert soup["w"].tolist() == [2.0, 3.5] and soup["running_mean"].tolist() == [4.5]
    assert soup["num_batches_tracked"].item() == 5


def test_members_that_do_not_fit_together_are_refused_in_one_line():
    base = {"w": torch.zeros(2)}
    refusals = {
        "at least two members": [base],
        "other tensors": [base, {"v": torch.zeros(2)}],
        "member 2's 'w' is (3,), member 1's (2,)": [base, {"w": torch.zeros(3)}],
    }
    for message, states in refusals.items():
        with pytest.raises(PurifyLabError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
            soup_state(states)
        assert "\n" not in str(error.value)


def _cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    return int(exit_info.value.code or 0), capsys.readouterr().err


def _train_tiny(model: str, seed: int, data, run, capsys) -> None:
    args = ["train", "classifier", "--model", model, "--preset", "tiny", "--epochs", "1", "--seed", str(seed)]
    code, err = _cli([*args, "--data", str(data), "--out", str(run), "--no-progress", "--device", "cpu"], capsys)
    assert code == 0, err


def test_cli_soup_is_the_members_mean_calibrated_on_val(xray_train_dir, tmp_path, capsys):
    members = []
    for seed in (0, 1):
        _train_tiny("substitute", seed, xray_train_dir, tmp_path / f"m{seed}", capsys)
        members.append(tmp_path / f"m{seed}" / "substitute.safetensors")
    args = ["train", "soup", "--model", "substitute", "--weights", str(members[0]), "--weights", str(members[1])]
    code, err = _cli([*args, "--data", str(xray_train_dir), "--out", str(tmp_path / "soup"), "--device", "cpu"], capsys)
    assert code == 0, err

    soup_file = tmp_path / "soup" / "substitute.safetensors"
    card = json.loads(soup_file.with_suffix(".json").read_text())
    states = [load_state(member) for member in members]
    for key, tensor in load_state(soup_file).items():
        if tensor.is_floating_point():  # stored as fp16, like every shipped file
            torch.testing.assert_close(tensor, (states[0][key] + states[1][key]) / 2, atol=2e-3, rtol=1e-3)
    member_cards = [json.loads(member.with_suffix(".json").read_text()) for member in members]
    assert [member["sha256"] for member in card["soup_of"]] == [member_card["sha256"] for member_card in member_cards]
    assert card["calibration"]["fitted_on"].startswith("val") and card["val_metrics"]["data"]["split"] == "val"
    assert card["test_metrics"]["data"]["split"] == "all" and card["training_kind"].startswith("uniform weight soup of 2 substitute")
    assert card["training_minutes"] == round(sum(member_card["training_minutes"] for member_card in member_cards), 1)

    # a member given twice weights the soup 2:1 but was trained once: its minutes count once (the
    # tiny runs' own times round to 0.0, so the cards say what a real run's would)
    for member, seconds in zip(members, (60.0, 30.0), strict=True):
        member_card = json.loads(member.with_suffix(".json").read_text())
        member.with_suffix(".json").write_text(json.dumps(member_card | {"training_seconds": seconds, "training_minutes": seconds / 60}))
    args = ["train", "soup", "--model", "substitute", *[arg for member in (members[0], *members) for arg in ("--weights", str(member))]]
    code, err = _cli([*args, "--data", str(xray_train_dir), "--out", str(tmp_path / "weighted"), "--device", "cpu"], capsys)
    assert code == 0, err
    weighted = json.loads((tmp_path / "weighted" / "substitute.json").read_text())
    assert len(weighted["soup_of"]) == 3 and (weighted["training_minutes"], weighted["training_seconds"]) == (1.5, 90.0)
    assert training_time(weighted) == "1.0 + 0.5"


def test_cli_soup_refuses_a_missing_member_and_another_architecture(xray_train_dir, tmp_path, capsys):
    _train_tiny("student_cnn", 0, xray_train_dir, tmp_path / "student", capsys)
    student = tmp_path / "student" / "student_cnn.safetensors"
    for members in ([student, tmp_path / "absent.safetensors"], [student, student]):
        args = ["train", "soup", "--model", "substitute", *[part for member in members for part in ("--weights", str(member))]]
        code, err = _cli([*args, "--data", str(xray_train_dir), "--out", str(tmp_path / "soup"), "--device", "cpu"], capsys)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "soup" / "substitute.safetensors").exists()
    # a soup written over one of its members would lose that member: refused, the member intact
    before = student.read_bytes()
    args = ["train", "soup", "--model", "student_cnn", "--weights", str(student), "--weights", str(student)]
    code, err = _cli([*args, "--data", str(xray_train_dir), "--out", str(student.parent), "--device", "cpu"], capsys)
    assert code == 2 and "would overwrite the member" in err and len(err.strip().splitlines()) == 1, err
    assert student.read_bytes() == before


def test_cli_soup_refuses_a_member_of_another_input_size(xray_train_dir, tmp_path, capsys):
    """A resnet-like model takes any size, so the tensors agree: only the cards tell 32 px from 48 px."""
    _train_tiny("substitute", 0, xray_train_dir, tmp_path / "px32", capsys)
    args = ["train", "classifier", "--model", "substitute", "--preset", "tiny", "--epochs", "1", "--image-size", "48"]
    code, err = _cli([*args, "--data", str(xray_train_dir), "--out", str(tmp_path / "px48"), "--no-progress", "--device", "cpu"], capsys)
    assert code == 0, err
    small, large = (tmp_path / folder / "substitute.safetensors" for folder in ("px32", "px48"))
    args = ["train", "soup", "--model", "substitute", "--weights", str(small), "--weights", str(large)]
    code, err = _cli([*args, "--data", str(xray_train_dir), "--out", str(tmp_path / "soup"), "--device", "cpu"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"member 2 {large} has image_size 48, member 1 {small} has 32" in err
    assert not (tmp_path / "soup" / "substitute.safetensors").exists()


def test_cli_soup_of_runs_from_scratch_claims_no_common_start_and_keeps_member_paths(xray_train_dir, tmp_path, capsys):
    members = []
    for seed in (0, 7):
        _train_tiny("substitute", seed, xray_train_dir, tmp_path / f"seed{seed}", capsys)
        members.append(tmp_path / f"seed{seed}" / "substitute.safetensors")
    args = ["train", "soup", "--model", "substitute", "--weights", str(members[0]), "--weights", str(members[1])]
    code, err = _cli([*args, "--data", str(xray_train_dir), "--out", str(tmp_path / "soup"), "--device", "cpu"], capsys)
    assert code == 0, err
    card = json.loads((tmp_path / "soup" / "substitute.json").read_text())
    assert card["training_kind"].startswith("uniform weight soup of 2 substitute models whose cards name no common start")
    assert "one start" not in card["training_kind"]
    from core.data.locations import portable_path

    assert [member["file"] for member in card["soup_of"]] == [portable_path(member) for member in members]


def test_a_common_start_is_claimed_only_when_every_card_names_it():
    from core.train.soup import soup_training_kind

    from_resnet = {"training_config": {"init_from": "resnet"}}
    assert ", each fine-tuned from resnet (soup_of)" in soup_training_kind("resnet_at", [from_resnet, from_resnet])
    for others in ({"training_config": {"init_from": "resnet_at"}}, {"training_config": {"init_from": None}}, {}):
        kind = soup_training_kind("resnet_at", [from_resnet, others])
        assert "whose cards name no common start" in kind and "fine-tuned" not in kind
    assert "no common start" in soup_training_kind("resnet", [{"training_config": {"init_from": None}}] * 2)
