"""Weights are safetensors with a hash-pinned card; pickles and tampered files are refused unread."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from core.errors import PurifyLabError
from core.weights import load_weights, read_card, save_weights


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))


def test_round_trip_keeps_outputs_within_fp16_tolerance(tmp_path):
    model, path = _model(), tmp_path / "m.safetensors"
    card = save_weights(model, path, {"architecture": "toy"})
    assert card["sha256"] == read_card(path)["sha256"] and card["parameter_count"] == 4 * 9 + 4 + 2 * 4 * 9 + 2
    assert card["storage_dtype"] == "float16"
    clone = load_weights(_model(seed=1), path)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(clone(x), model(x), atol=2e-3, rtol=2e-3)
    assert all(p.dtype == torch.float32 for p in clone.parameters())


def test_a_save_on_a_full_disk_is_one_line_and_keeps_the_earlier_pair(tmp_path):
    """save_weights wrote through safetensors' own save_file: a full disk ended in a SafetensorError
    traceback, and the renamed file was never synced. It now writes as `ship` does (write_files)."""
    from full_disk import run_on_a_full_disk

    path = tmp_path / "m.safetensors"
    earlier = save_weights(_model(), path, {"architecture": "toy"})
    before = {file.name: file.read_bytes() for file in tmp_path.iterdir()}
    wide = "torch.nn.Conv2d(1, 64, 9)"  # 10 kB of weights: past the limit, its card is not
    save = f"import torch\nfrom core.weights import save_weights\nsave_weights({wide}, {str(path)!r}, {{'architecture': 'toy'}})"
    done = run_on_a_full_disk(4000, save)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [f"error: cannot write {path}: File too large"], done.stderr
    assert {file.name: file.read_bytes() for file in tmp_path.iterdir()} == before
    assert load_weights(_model(seed=1), path) is not None and read_card(path)["sha256"] == earlier["sha256"]


def test_tampered_file_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    save_weights(_model(), path, {})
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PurifyLabError, match="SHA-256"):
        load_weights(_model(), path)


@pytest.mark.parametrize("name", ["m.pt", "m.safetensors"])
def test_pickle_is_refused_and_never_unpickled(tmp_path, name):
    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    path = tmp_path / name
    path.write_bytes(pickle.dumps({"weight": Boom()}, protocol=4))
    (tmp_path / "m.json").write_text(json.dumps({"sha256": "irrelevant"}))
    with pytest.raises(PurifyLabError, match="pickle"):
        load_weights(_model(), path)
    assert not (tmp_path / "pwned").exists()


def test_torch_save_archive_is_refused(tmp_path):
    path = tmp_path / "m.safetensors"
    torch.save(_model().state_dict(), path)
    with pytest.raises(PurifyLabError, match="pickle"):
        load_weights(_model(), path, verify=False)


def test_missing_card_and_file_give_one_line_errors(tmp_path):
    with pytest.raises(PurifyLabError, match="not found"):
        load_weights(_model(), tmp_path / "absent.safetensors")
    path = tmp_path / "m.safetensors"
    save_weights(_model(), path, {})
    path.with_suffix(".json").unlink()
    with pytest.raises(PurifyLabError, match="no model card"):
        load_weights(_model(), path)


def test_header_length_starting_with_the_pickle_byte_is_still_safetensors(tmp_path):
    """A header of 0x780 bytes begins with 0x80, pickle's PROTO opcode: it must load all the same."""
    from safetensors.torch import save_file

    path = tmp_path / "m.safetensors"
    for padding in range(400):
        save_file({"w" * (padding + 1): torch.zeros(1)}, str(path))
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    from core.weights import load_state

    assert list(load_state(path, verify=False)) == ["w" * (padding + 1)]


def test_garbage_file_is_not_valid_safetensors(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"not weights at all")
    from core.weights import load_state

    with pytest.raises(PurifyLabError, match="not a valid safetensors"):
        load_state(path, verify=False)


def test_shipped_weights_fit_the_budget_and_xray_cards_report_val_and_test():
    from core.data.locations import dataset_of
    from core.models import list_classifiers
    from core.weights import WEIGHTS_DIR, shipped_cards

    assert sum(path.stat().st_size for path in WEIGHTS_DIR.iterdir()) <= 20 * 10**6
    cards = shipped_cards()
    for name in (n for n in list_classifiers() if n in cards and dataset_of(n) == "xray"):
        card = cards[name]
        assert card["val_metrics"]["data"]["split"] == "val", name
        assert card["test_metrics"]["data"]["folder"].endswith("chest_xray_pneumonia/test"), name
        assert 0 < card["calibration"]["threshold"] < 1 and card["calibration"]["temperature"] > 0, name


def test_a_run_off_the_cpu_names_its_device_and_its_minutes_read_as_gpu_minutes():
    """The trainers wrote no training_device: a run on a lent GPU read as the CPU recipe's minutes."""
    import torch

    from core.train.runs import training_device
    from core.weights import training_time

    assert training_device(torch.nn.Linear(2, 2)) == {}  # the project's CPU minutes, as every CPU card
    off_cpu = training_device(torch.nn.Linear(2, 2, device="meta"))  # any non-CPU device takes this path (no GPU here)
    assert off_cpu["training_device"].startswith("1 x meta (torch ")
    assert training_time({"training_minutes": 1.5, **off_cpu}) == "1.5 (GPU)"


def test_training_time_marks_gpu_minutes():
    from core.weights import shipped_cards, training_time

    assert training_time({"training_minutes": 40.2}) == "40.2"
    assert training_time({"training_minutes": 0.9, "training_device": "one H200"}) == "0.9 (GPU)"
    assert training_time({}) == ""
    cards = shipped_cards()  # the shipped GPU-trained cards say where they trained
    assert all(training_time(cards[name]).endswith("(GPU)") for name in ("resnet_smooth", "sevit", "student_cnn"))
    # resnet_at is a soup (session 19) of CPU fine-tunes and the GPU-trained model they started from:
    # CPU minutes on the card, each member's own minutes (GPU marked) in soup_of, all of them shown
    assert training_time(cards["resnet_at"]) == "26.3 + 29.8 + 4.0 (GPU)" and cards["resnet_at"]["training_config"]["init_from"] == "resnet_at"
    assert [member["training_minutes"].endswith("(GPU)") for member in cards["resnet_at"]["soup_of"]] == [False, False, True]


@pytest.mark.parametrize(
    "name",
    [
        "resnet",
        pytest.param("vit", marks=pytest.mark.slow),
        pytest.param("student_cnn", marks=pytest.mark.slow),
        pytest.param("sevit", marks=pytest.mark.slow),
        pytest.param("substitute", marks=pytest.mark.slow),
        pytest.param("resnet_at", marks=pytest.mark.slow),
        pytest.param("resnet_smooth", marks=pytest.mark.slow),
    ],
)
def test_evaluate_on_the_test_cohort_reproduces_the_card(name, xray_test_dir):
    from core.evaluate import EvaluationConfig, evaluate
    from core.weights import shipped_cards

    shipped = shipped_cards()[name]
    card = shipped["test_metrics"]
    through = shipped.get("reads_through") or {"purifier": "none", "params": {}}  # resnet_smooth reads through its noise
    config = EvaluationConfig(data=str(xray_test_dir), classifier=name, purifier=through["purifier"], purifier_params=through["params"])
    measured = evaluate(config)
    assert measured["data"]["split"] == "all" and measured["n"] == card["n"] == 301
    for key in ("accuracy", "balanced_accuracy", "auroc", "specificity"):
        assert measured[key] == pytest.approx(card[key], abs=1e-9), key
    # ECE averages float32 probabilities, whose last bits differ between CPU models (5e-9 seen on an
    # AMD EPYC against the card's machine): equal to 1e-6, far below its third reported decimal.
    assert measured["ece"] == pytest.approx(card["ece"], abs=1e-6)


def test_a_file_of_another_network_is_one_line_naming_what_does_not_fit(tmp_path):
    """load_state_dict's RuntimeError listed every key over many lines."""
    path = tmp_path / "m.safetensors"
    save_weights(_model(), path, {})
    other = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 3), torch.nn.Conv2d(2, 2, 1))
    misfit = r"^m.safetensors does not fit Sequential: missing 2 tensors \(first '3.weight'\); '0.weight' is \(4, 1, 3, 3\), the network's \(8, 1, 3, 3\)$"
    with pytest.raises(PurifyLabError, match=misfit):
        load_weights(other, path)
    with pytest.raises(PurifyLabError, match=r"does not fit Linear: missing 2 tensors \(first 'weight'\); 4 unexpected \(first '0.bias'\)$"):
        load_weights(torch.nn.Linear(2, 2), path)


def test_soup_members_keep_their_gpu_mark_as_make_soup_writes_them():
    """make_soup records a GPU member's minutes as a number beside its training_device; the listing read them as CPU minutes."""
    from pathlib import Path

    from core.train.soup import _member_record
    from core.weights import training_time

    gpu = _member_record(Path("a.safetensors"), {"sha256": "x", "training_kind": "k", "training_minutes": 3.4, "training_device": "one H200"})
    assert training_time({"soup_of": [{"sha256": "y", "training_minutes": 26.3}, gpu]}) == "26.3 + 3.4 (GPU)"
    older = [{"sha256": "y", "training_minutes": "26.3"}, {"sha256": "x", "training_minutes": "4.0 (GPU)"}]  # as older soups wrote it
    assert training_time({"soup_of": older}) == "26.3 + 4.0 (GPU)"


def test_an_unreadable_shipped_card_is_one_line_naming_it(tmp_path):
    """One truncated card broke every caller of shipped_cards() with a JSONDecodeError."""
    from core.weights import shipped_cards

    save_weights(_model(), tmp_path / "good.safetensors", {"name": "good"})
    assert list(shipped_cards(tmp_path)) == ["good"]
    (tmp_path / "resnet.json").write_text('{"name": "res')
    with pytest.raises(PurifyLabError, match=r"^model card .*resnet.json is not readable JSON") as error:
        shipped_cards(tmp_path)
    assert "\n" not in str(error.value)


def test_a_saved_card_names_the_code_that_wrote_it(tmp_path):
    """Cards recorded the training settings but not the library versions or commit, which every CLI output records."""
    from importlib import metadata

    from core.results import git_commit

    card = save_weights(torch.nn.Linear(2, 2), tmp_path / "m.safetensors", {"name": "m"})
    software = read_card(tmp_path / "m.safetensors")["software"]
    assert software == card["software"]
    assert software["torch"] == metadata.version("torch") and software["git_commit"] == git_commit()
    assert isinstance(software["git_dirty"], bool)
