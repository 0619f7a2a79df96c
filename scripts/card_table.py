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


def interval(metrics: dict, key: str) -> str:
    low, high = metrics["confidence_95"][key]
    return f"{metrics[key]:.3f} [{low:.3f}, {high:.3f}]"


def row(name: str, card: dict) -> str:
    val, test = card["val_metrics"], card["test_metrics"]
    calibration = card.get("calibration") or {}
    return (
        f"| `{name}` | {card['parameter_count']:,} | {training_time(card)} | "
        f"{val['balanced_accuracy']:.3f} | {interval(test, 'balanced_accuracy')} | {val['auroc']:.3f} | {interval(test, 'auroc')} | "
        f"{test['sensitivity']['PNEUMONIA']:.3f} | {test['specificity']:.3f} | {val['ece']:.3f} / {test['ece']:.3f} | "
        f"{calibration.get('temperature', 0):.4g} / {calibration.get('threshold', 0):.4g} |"
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
