"""Print the shipped X-ray classifiers' validation and test figures as Markdown, from their cards.

README and docs/TRAINING.md quote this table; generating it from weights/*.json keeps every figure
the one `purifylab evaluate` measured on the shipped file.

    .venv/bin/python scripts/card_table.py [--runs runs/vit_labels/vit.json ...]
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.options import BenchmarkParser, refuse
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


def run_rows(paths: list[Path]) -> list[str]:
    """The --runs cards' rows, read before the table starts, so a bad file is refused in one line and
    not after a half-printed table."""
    rows = []
    for path in paths:
        try:
            rows.append(row(f"{path.parent.name} (not shipped)", json.loads(path.read_text())))
        except OSError as error:
            refuse(f"--runs {path}: {error.strerror or error}")
        except ValueError as error:
            refuse(f"--runs {path}: not JSON ({error})")
        except (AttributeError, KeyError, TypeError, IndexError) as error:
            refuse(f"--runs {path}: not a classifier card ({type(error).__name__}: {error})")
    return rows


def main() -> None:
    parser = BenchmarkParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="*", type=Path, default=[], help="extra cards (runs that were not shipped)")
    args = parser.parse_args()
    extra_rows = run_rows(args.runs)
    print(
        "| model | parameters | training (min; CPU unless GPU) | val bal. acc. | test bal. acc. [95 % CI] | val AUROC | test AUROC [95 % CI] "
        "| test sensitivity | test specificity | ECE val / test | temperature / threshold |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    cards = shipped_cards()
    for name in (n for n in list_classifiers() if n in cards and dataset_of(n) == "xray"):
        if "test_metrics" in cards[name]:
            print(row(name, cards[name]))
    for line in extra_rows:
        print(line)


if __name__ == "__main__":
    main()
