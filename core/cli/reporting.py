"""What `purifylab evaluate` and `certify` print and write: a text report and JSON with its config beside it."""

from __future__ import annotations

import json
from pathlib import Path


def format_report(result: dict) -> str:
    """The evaluation result as aligned lines: each figure with its 95 % interval, then the attack."""
    intervals = result["confidence_95"]

    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    def line(key: str, value: float | None) -> str:
        low, high = intervals.get(key, [None, None])
        return f"{key:<22} {number(value):>6}  [{number(low)}, {number(high)}]"

    data = result.get("data") or {"folder": result["config"]["data"], "split": result["config"]["split"]}
    rows = [
        f"classifier {result['config']['classifier']}  purifier {result['config']['purifier']}  data {data['folder']} split {data['split']}  n {result['n']}",
        line("accuracy", result["accuracy"]),
        line("balanced_accuracy", result["balanced_accuracy"]),
        line("auroc", result["auroc"]),
    ]
    rows += [line(f"sensitivity_{name}", value) for name, value in result["sensitivity"].items()]
    if result.get("ece") is not None:
        rows.append(f"{'ece':<22} {result['ece']:.4f}")
    if "robust_accuracy" in result:
        threat, budget = result["threat_model"], result["budget"]
        steps = budget.get("schedule") or f"steps={budget['steps']}"  # AutoAttack runs its own schedule
        rows += [
            f"attack {result['attack']['name']} {budget['norm']} eps={budget['eps']} {steps}  threat {threat['name']} ({threat['description']})",
            f"{'clean_accuracy':<22} {result['clean_accuracy']:.4f}",
            f"{'robust_accuracy':<22} {result['robust_accuracy']:.4f}  (one draw)",
            f"{'robust_worst_of_k':<22} {result['robust_accuracy_worst_of_k']:.4f}  (k={result['redraws']})",
            f"{'robust_majority_of_k':<22} {result['robust_accuracy_majority_of_k']:.4f}  (right under > k/2 draws: DensePure's vote)",
            f"seconds/image {result['seconds_per_image']}  nfe {result['nfe']}",
        ]
    rows.append(f"seconds {result['seconds']:.2f} ({result['images_per_second']} images/s)")
    return "\n".join(rows)


def write_json(result: dict, path: str | Path) -> None:
    """The result at `path` and its resolved config beside it (`NAME.config.json`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if "config" in result:
        write_config(path, result["config"])


def config_path(output: str | Path) -> Path:
    """Where an output's resolved config goes: NAME.config.json beside a JSON result, NAME.json beside
    anything else (an image, a curve)."""
    output = Path(output)
    return output.with_name(f"{output.stem}.config.json") if output.suffix.lower() == ".json" else output.with_suffix(".json")


def write_config(output: str | Path, config: dict) -> None:
    """The resolved config beside an output (see `config_path`)."""
    config_path(output).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
