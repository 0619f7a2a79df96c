"""Print the shipped X-ray classifiers' validation and test figures as Markdown, from their cards.

README and docs/TRAINING.md quote this table; generating it from weights/*.json keeps every figure
the one `purifylab evaluate` measured on the shipped file.

    .venv/bin/python scripts/card_table.py [--runs runs/vit_labels/vit.json ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.data.locations import dataset_of
from core.models import list_classifiers
from core.weights import shipped_cards, training_time


def figure(value: float | None, spec: str = ".3f") -> str:
    """A card's figure, or "–" where the card lacks it (an uncalibrated card): a made-up 0 reads as measured."""
    return "–" if value is None else format(value, spec)


def interval(metrics: dict, key: str) -> str:
    low, high = (metrics.get("confidence_95") or {}).get(key) or (None, None)
    return f"{metrics[key]:.3f} [{low:.3f}, {high:.3f}]" if None not in (metrics.get(key), low, high) else figure(metrics.get(key))


def row(name: str, card: dict) -> str:
    val, test = card.get("val_metrics") or {}, card["test_metrics"]
    calibration = card.get("calibration") or {}
    positive = card["classes"][1]  # the card's own spelling: a lower-case "pneumonia" folder is accepted
    return (
        f"| `{name}` | {card['parameter_count']:,} | {training_time(card)} | "
        f"{figure(val.get('balanced_accuracy'))} | {interval(test, 'balanced_accuracy')} | {figure(val.get('auroc'))} | {interval(test, 'auroc')} | "
        f"{figure((test.get('sensitivity') or {}).get(positive))} | {figure(test.get('specificity'))} | "
        f"{figure(val.get('ece'))} / {figure(test.get('ece'))} | "
        f"{figure(calibration.get('temperature'), '.4g')} / {figure(calibration.get('threshold'), '.4g')} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="extra cards (runs that were not shipped)")
    args = parser.parse_args()
    print(
        "| model | parameters | training (min; CPU unless GPU) | val bal. acc. | test bal. acc. [95 % CI] | val AUROC | test AUROC [95 % CI] "
        "| test sensitivity | test specificity | ECE val / test | temperature / threshold |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    cards = shipped_cards()
    for name in (n for n in list_classifiers() if n in cards and dataset_of(n) == "xray"):
        if "test_metrics" in cards[name]:
            print(row(name, cards[name]))
    for path in args.runs:
        print(row(f"{path.parent.name} (not shipped)", json.loads(path.read_text())))


if __name__ == "__main__":
    main()
