"""The training presets rebuild the shipped classifiers: every card in weights/ whose training_config
names a preset holds that preset plus the flags of the command docs/TRAINING.md gives for its run, and
nothing else, so `--preset P` with those flags retrains the model that ships."""

from __future__ import annotations

import json
import re
from dataclasses import MISSING, asdict, fields

import typer

from core.cli import _register_commands, app
from core.defense import load_defense
from core.paths import REPO_ROOT
from core.train.classifier import TrainConfig, preset
from core.weights import shipped_cards

TRAINING_DOC = REPO_ROOT / "docs" / "TRAINING.md"

# The documented run of each shipped classifier, as docs/TRAINING.md's Commands block gives it. Every
# flag but --model, --preset, --out and --ship overrides the preset: --threads 1 on the 2-core CPU,
# --max-minutes the cap each run had on a shared GPU, --seed 6 the student seed the rule chose.
SHIPPED_RUNS = {
    "resnet": "purifylab train classifier --model resnet --preset cpu --threads 1 --ship",
    "vit": "purifylab train classifier --model vit --preset cpu --threads 1 --ship",
    "substitute": "purifylab train classifier --model substitute --preset cpu --threads 1 --ship",
    "resnet_smooth": "accelerate launch -m core train classifier --model resnet_smooth --preset gpu --max-minutes 5.2 --ship",
    "sevit": "accelerate launch -m core train classifier --model sevit --preset gpu --max-minutes 5.5 --ship",
    "student_cnn": "accelerate launch -m core train classifier --model student_cnn --preset gpu --seed 6 --max-minutes 5.5 --ship",
    "mnist_cnn": "purifylab train classifier --model mnist_cnn --preset cpu --threads 1 --ship",
    "mnist_cnn_at": "purifylab train classifier --model mnist_cnn_at --preset cpu --threads 1 --ship",
    "cifar10_cnn": "purifylab train classifier --model cifar10_cnn --preset cpu --threads 1 --ship",
    "cifar10_cnn_at": "purifylab train classifier --model cifar10_cnn_at --preset cpu --threads 1 --ship",
}
# A weight soup ran no recipe of its own: its card keeps its first member's training_config, and each
# member's own card is kept beside the session that made it. resnet_at (session 19) averages two ARD
# fine-tunes (session 18, cpu preset) of session 14's gpu-preset run, in this order.
SOUP_MEMBERS = {
    "resnet_at": {
        "results/session18-candidates/ard_a.resnet_at.json": "purifylab train classifier --model resnet_at --preset cpu --init-from resnet_at "
        "--lr 5e-4 --epochs 8 --distill-from resnet --temperature 2 --threads 1 --out runs/ard_a",
        "results/session18-candidates/ard_b.resnet_at.json": "purifylab train classifier --model resnet_at --preset cpu --init-from resnet_at "
        "--lr 5e-4 --epochs 8 --distill-from resnet --temperature 2 --distill-clean-weight 0.5 --threads 1 --out runs/ard_b",
        "results/session18-candidates/previous_resnet_at.card.json": "accelerate launch -m core train classifier --model resnet_at --preset gpu "
        "--max-minutes 5.2 --out runs/resnet_at_gpu --ship",
    },
}


def _documented_commands() -> str:
    """docs/TRAINING.md with continued lines joined and runs of spaces (the aligned columns) made one."""
    return re.sub(r"[ \t]+", " ", TRAINING_DOC.read_text().replace("\\\n", " "))


def _config_of(command: str) -> TrainConfig:
    """The TrainConfig `command` trains with: the CLI's own parser reads its flags, and the preset takes
    them as `purifylab train classifier` passes them on (None: the preset's)."""
    _register_commands()
    train = typer.main.get_command(app).commands["train"].commands["classifier"]
    params = train.make_context("classifier", command.split(" train classifier ", 1)[1].split()).params
    settings = {f.name for f in fields(TrainConfig)} - {"model", "preset"}
    return preset(params["preset"], params["model"], **{key: value for key, value in params.items() if key in settings})


def _recipe_differences(card_config: dict, command: str) -> dict:
    """{setting: (preset + flags, card)} wherever they differ. A setting the card lacks came after its
    run, which trained as that setting's default does (the oldest cards lack `model` too: their name)."""
    defaults = {f.name: f.default if f.default is not MISSING else f.default_factory() for f in fields(TrainConfig)}
    rebuilt = json.loads(json.dumps(asdict(_config_of(command))))  # tuples as lists, as the card holds them
    recorded = {**defaults, "model": rebuilt["model"], **card_config}
    return {key: (rebuilt[key], recorded.get(key)) for key in sorted(rebuilt.keys() | card_config.keys()) if rebuilt.get(key) != recorded.get(key)}


def _shipped_classifier_cards() -> dict[str, dict]:
    return {name: card for name, card in shipped_cards().items() if "model_class" in card and "preset" in card.get("training_config", {})}


def test_every_shipped_classifier_has_a_documented_run():
    documented = _documented_commands()
    assert sorted(_shipped_classifier_cards()) == sorted([*SHIPPED_RUNS, *SOUP_MEMBERS])
    for command in [*SHIPPED_RUNS.values(), *(command for members in SOUP_MEMBERS.values() for command in members.values())]:
        assert command in documented, f"docs/TRAINING.md does not give: {command}"


def test_each_preset_with_its_documented_flags_rebuilds_the_shipped_recipe():
    for name, card in _shipped_classifier_cards().items():
        if name in SHIPPED_RUNS:
            assert card["training_config"].get("model", name) == name and not card.get("soup_of")
            assert _recipe_differences(card["training_config"], SHIPPED_RUNS[name]) == {}, name


def test_each_member_of_a_shipped_soup_is_its_documented_run():
    cards = _shipped_classifier_cards()
    for name, members in SOUP_MEMBERS.items():
        member_cards = {path: json.loads((REPO_ROOT / path).read_text()) for path in members}
        assert [member["sha256"] for member in cards[name]["soup_of"]] == [card["sha256"] for card in member_cards.values()]
        assert cards[name]["training_config"] == next(iter(member_cards.values()))["training_config"]
        for path, command in members.items():
            assert _recipe_differences(member_cards[path]["training_config"], command) == {}, path


def test_an_undocumented_difference_is_caught():
    """The check itself: a card whose recipe is its preset's but for one setting no flag gives fails."""
    card_config = shipped_cards()["resnet_smooth"]["training_config"]
    assert _recipe_differences({**card_config, "epochs": 60}, SHIPPED_RUNS["resnet_smooth"]) == {"epochs": (50, 60)}
    assert _recipe_differences({**card_config, "smoothing_sigma": 0.25}, SHIPPED_RUNS["resnet_smooth"]) == {"smoothing_sigma": (0.5, 0.25)}


def test_the_smoothing_presets_train_under_the_noise_the_smoothing_defense_adds():
    """`--preset P --ship` must not put a model trained under other noise behind the smoothing defense."""
    defense = load_defense("smoothing")
    assert defense.classifier == "resnet_smooth" and defense.purifier == "gaussian"
    for name in ("cpu", "gpu"):
        assert preset(name, "resnet_smooth").smoothing_sigma == defense.params["sigma"], name
