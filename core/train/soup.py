"""Uniform weight soups (Wortsman et al., ICML 2022): classifiers fine-tuned from one start, averaged
weight by weight, batch-norm statistics included.

A soup costs one model's size and one forward where an ensemble of the same members costs k of each,
and it needs no data beyond the validation split that recalibrates it. It only works for members
that share a start: their weights then stay in one basin, where the average is a model too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from core.data.locations import portable_path
from core.data.splits import data_hash_of_folder
from core.errors import PurifyLabError
from core.models import create_classifier
from core.weights import distinct_files, load_state, read_card, save_weights

# Card fields that describe one trained file: a soup measures and hashes its own.
_PER_FILE = ("calibration", "val_metrics", "test_metrics", "sha256", "file", "file_size_bytes", "selected_epoch", "epochs_run")
# Card fields that describe the model itself, input size first (the likeliest to differ): tensor shapes
# alone let a 32-px and a 64-px resnet through, since a resnet takes any size.
_MODEL_FIELDS = ("image_size", "model_class", "architecture")


def soup_state(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of every floating tensor of `states`; integer buffers (batch counts) from the first."""
    if len(states) < 2:
        raise PurifyLabError(f"a soup needs at least two members, got {len(states)}")
    first = states[0]
    for index, state in enumerate(states[1:], start=2):
        if state.keys() != first.keys():
            raise PurifyLabError(f"member {index} has other tensors than member 1: not the same architecture")
        mismatched = next((key for key in first if state[key].shape != first[key].shape), None)
        if mismatched is not None:
            raise PurifyLabError(f"member {index}'s '{mismatched}' is {tuple(state[mismatched].shape)}, member 1's {tuple(first[mismatched].shape)}")
    return {key: sum(state[key] for state in states) / len(states) if tensor.is_floating_point() else tensor for key, tensor in first.items()}


def check_same_model(members: Sequence[Path], cards: Sequence[dict]) -> None:
    """Every member's card records the first member's model and input size: an average of two models
    is no model, and the soup's card (the first member's) would name one of them only."""
    first_card = cards[0]
    for index, (member, card) in enumerate(zip(members[1:], cards[1:], strict=True), start=2):
        for field in _MODEL_FIELDS:
            theirs, first = card.get(field), first_card.get(field)
            if isinstance(theirs, dict) and isinstance(first, dict):  # an architecture: only the keys that differ
                differing = sorted(key for key in theirs.keys() | first.keys() if theirs.get(key) != first.get(key))
                theirs, first = ({key: values.get(key) for key in differing} for values in (theirs, first))
            if theirs != first:
                raise PurifyLabError(
                    f"member {index} {member} has {field} {theirs}, member 1 {members[0]} has {first}: a soup averages one model at one input size"
                )


def soup_training_kind(name: str, cards: Sequence[dict]) -> str:
    """The soup's `training_kind`, claiming a common start only where every member's card names the
    same `init_from`: runs from scratch share none, and a soup's average then need not be a model."""
    starts = {(card.get("training_config") or {}).get("init_from") for card in cards}
    start = next(iter(starts)) if len(starts) == 1 else None
    origin = f", each fine-tuned from {start}" if start else " whose cards name no common start"
    return f"uniform weight soup of {len(cards)} {name} models{origin} (soup_of); training_config is the first member's"


def _member_record(member: Path, card: dict) -> dict:
    """What a soup's card keeps of one member: its path as committed outputs record one (members are
    often files of one name in different run folders), hash, kind and minutes (a number, as on every card), with the device
    when it was a GPU (a GPU minute is not a CPU minute)."""
    record = {"file": portable_path(member), "sha256": card["sha256"]}
    record |= {"training_kind": card.get("training_kind"), "training_minutes": card.get("training_minutes")}
    if "training_device" in card:
        record["training_device"] = card["training_device"]
    return record


def make_soup(name: str, members: Sequence[Path], out_dir: Path, data_dir: str | Path) -> dict:
    """OUT/<name>.safetensors: the soup of `members` (weights files of classifier `name`), its card
    from the first member's, then temperature and threshold fitted on val and every figure measured."""
    from core.train.classifier import check_calibrable, check_calibration_data, recalibrate

    members = [Path(member) for member in members]
    target = Path(out_dir) / f"{name}.safetensors"
    if any(target.resolve() == member.resolve() for member in members):
        raise PurifyLabError(f"--out {out_dir} would overwrite the member {target}; write the soup to another folder")
    cards = [read_card(member) for member in members]
    check_same_model(members, cards)
    model = create_classifier(name, weights=members[0])  # the architecture its card names (a tiny preset's too)
    check_calibrable(name, model, data_dir)
    model.load_state_dict(soup_state([load_state(member) for member in members]))
    # every member, by the file list alone, before the soup is written: `recalibrate` then checks the
    # decoded val split in the same words, but a refusal there would leave an uncalibrated soup behind
    listed_hash = data_hash_of_folder(data_dir)
    for member, member_card in zip(members, cards, strict=True):
        check_calibration_data(str(member), member_card, data_dir, listed_hash)
    card = {key: value for key, value in cards[0].items() if key not in _PER_FILE}
    # each member's sha256 was checked against its file by load_state above
    card["soup_of"] = [_member_record(member, member_card) for member, member_card in zip(members, cards, strict=True)]
    card["training_kind"] = soup_training_kind(name, cards)
    # each file's minutes once, a member given twice (a weighted soup) trained once; a GPU member's minutes stay in soup_of
    cpu_cards = [member_card for member_card in distinct_files(cards) if "training_device" not in member_card]
    card["training_minutes"] = round(sum(member_card.get("training_minutes", 0.0) for member_card in cpu_cards), 1)
    card["training_seconds"] = round(sum(member_card.get("training_seconds", 0.0) for member_card in cpu_cards), 1)
    card.pop("training_device", None)
    save_weights(model, target, card)
    return recalibrate(name, target, data_dir)
