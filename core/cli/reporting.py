"""What `purifylab` commands print and write: evaluate's text report, the listings' columns, and JSON
with its config beside it."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from core.paths import write_files


def format_report(result: dict) -> str:
    """The evaluation result as aligned lines: each figure with its 95 % interval. Under an attack the
    first block is the clean images' (so labelled), then the threat model and the robust figures."""
    from core.attacks.config import perturbation_text
    from core.defense import purifier_spec_text

    attacked = "robust_accuracy" in result
    width = 29  # the longest name, robust_balanced_majority_of_k

    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    def line(name: str, value: float | None, interval: list | None, note: str = "") -> str:
        low, high = interval or [None, None]
        return f"{name:<{width}} {number(value):>6}  [{number(low)}, {number(high)}]{note}"

    def over_draws(side: str, intervals: dict) -> list[str]:
        """The worst case and DensePure's majority vote over the k test-time draws, as accuracy and balanced."""
        worst, vote = f"  (k={result['redraws']})", "  (right under > k/2 draws: DensePure's vote)"
        return [
            line(f"{side}_worst_of_k", result[f"{side}_accuracy_worst_of_k"], intervals.get("worst_case_accuracy"), worst),
            line(f"{side}_balanced_worst_of_k", result[f"{side}_balanced_accuracy_worst_of_k"], intervals.get("worst_case_balanced_accuracy"), worst),
            line(f"{side}_majority_of_k", result[f"{side}_accuracy_majority_of_k"], intervals.get("majority_accuracy"), vote),
            line(f"{side}_balanced_majority_of_k", result[f"{side}_balanced_accuracy_majority_of_k"], intervals.get("majority_balanced_accuracy"), vote),
        ]

    clean, intervals = ("clean_" if attacked else ""), result["confidence_95"]
    data = result.get("data") or {"folder": result["config"]["data"], "split": result["config"]["split"]}
    defense = f"  defense {result['defense']}" if result.get("defense") else ""
    rows = [
        f"classifier {result['config']['classifier']}  purifier {purifier_spec_text(result['config']['purifier'], result['config']['purifier_params'])}"
        f"{defense}  "
        f"data {data['folder']} split {data['split']}  n {result['n']}",
    ]
    if result.get("reads_through_note"):  # read without its purifier, the classifier is not the model its card measured
        rows.append(f"note: {result['reads_through_note']}")
    rows += [line(f"{clean}{key}", result[key], intervals.get(key)) for key in ("accuracy", "balanced_accuracy")]
    auroc = intervals.get("auroc") or [None, None]
    # A percentile bootstrap has no width when every resample ranks the classes alike (a perfect
    # separation on few images): "[1.0000, 1.0000]" would read as certainty.
    collapsed = auroc[0] is not None and auroc[0] == auroc[1]
    rows.append(line(f"{clean}auroc", result["auroc"], auroc, "  (bootstrap collapsed: too few images to bound it)" if collapsed else ""))
    rows += [line(f"{clean}sensitivity_{name}", value, intervals.get(f"sensitivity_{name}")) for name, value in result["sensitivity"].items()]
    if result.get("ece") is not None:
        rows.append(f"{clean + 'ece':<{width}} {result['ece']:.4f}")
    if attacked and result["redraws"] > 1:  # with one draw, the worst case and the vote are the clean figures
        rows += over_draws("clean", intervals)
    if attacked:
        threat, budget, robust = result["threat_model"], result["budget"], result["robust"]["confidence_95"]
        steps = budget.get("schedule") or f"steps={budget['steps']}"  # AutoAttack runs its own schedule
        # None under a fixed schedule; 1 is the plain attack, so only a larger budget is worth a word
        steps += "".join(f" {key}={budget[key]}" for key in ("eot_iter", "restarts") if budget.get(key) not in (None, 1))
        size = "minimal perturbation" if budget["eps"] is None else f"eps={budget['eps']}"  # None: an attack without a budget
        rows += [
            f"attack {result['attack']['name']} {budget['norm']} {size} {steps}  threat {threat['name']} ({threat['description']})",
            line("robust_accuracy", result["robust_accuracy"], robust.get("accuracy"), "  (one draw)"),
            line("robust_balanced_accuracy", result["robust_balanced_accuracy"], robust.get("balanced_accuracy"), "  (one draw)"),
            *over_draws("robust", robust),
        ]
        if "perturbation" in result:  # a minimal-perturbation attack's size, which its missing eps does not give
            rows.append(
                f"perturbation before any purifier: {perturbation_text(result['perturbation'])} (success: of the images the classifier "
                "read correctly; norms: over the images it fooled, on the [0, 1] pixel scale)"
            )
        flag = (result.get("convergence_check") or {}).get("flag")
        if flag:
            rows.append(f"FLAG: {flag}")
        rows.append(f"seconds/image {result['seconds_per_image']}  nfe {result['nfe']}")
    rows.append(f"seconds {result['seconds']:.2f} ({result['images_per_second']:g} images/s on {result['device']})")
    return "\n".join(rows)


def aligned(rows: list[tuple[str, ...]]) -> str:
    """A listing's rows with every column but the last padded to its longest entry."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)] if rows else []
    return "\n".join("  ".join([*(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)), row[-1]]) for row in rows)


def provenance_of(*loaded: Any) -> dict[str, Any]:
    """What produced an output beyond its settings, so that it can be trusted and reproduced: the library
    versions and git commit (as the results store records them), whether the checkout differed from that
    commit, and file name -> SHA-256 of every weights file the run loaded, from the `loaded` networks'
    cards (each checked against its file at load)."""
    from core.evaluate import weights_loaded_by
    from core.results import software_provenance

    return {"software": software_provenance(), "weights": weights_loaded_by(*loaded)}


def write_json(result: dict, path: str | Path, provenance: dict[str, Any] | None = None) -> None:
    """The result at `path` and its resolved config beside it (`NAME.config.json`), with its `provenance`:
    both whole or neither replaced (`write_files`)."""
    if "config" in result:
        write_with_config(path, _json_text(result), result["config"], provenance)
    else:
        write_files({Path(path): _json_text(result)})


def config_path(output: str | Path) -> Path:
    """Where an output's resolved config goes: NAME.config.json beside a JSON result, NAME.json beside
    anything else (an image, a curve)."""
    output = Path(output)
    return output.with_name(f"{output.stem}.config.json") if output.suffix.lower() == ".json" else output.with_suffix(".json")


def write_config(output: str | Path, config: dict, provenance: dict[str, Any] | None = None) -> dict:
    """The resolved config and its `provenance` (`provenance_of` the networks the run loaded) beside an
    output (see `config_path`), whole or not at all; returns what was written, for a command that prints
    it too. Without `provenance`, the software only: a caller that loads networks it cannot hand over
    (`purifylab bench`, the benchmark scripts) records its weights as unknown, never as none."""
    written = _config_record(config, provenance)
    write_files({config_path(output): _json_text(written)})
    return written


def write_with_config(output: str | Path, content: str | bytes, config: dict, provenance: dict[str, Any] | None = None) -> dict:
    """`content` at `output` and its config beside it (as `write_config`), both whole or neither replaced:
    a lone file would read as not purifylab's to the next run's check (core.cli.preflight.check_output)."""
    written = _config_record(config, provenance)
    write_files({Path(output): content, config_path(output): _json_text(written)})
    return written


def written_by_purifylab(document: object) -> bool:
    """Whether a JSON document beside an output is one purifylab wrote, so that a rerun may replace the
    pair (core.cli.preflight.check_output): every config carries `provenance_of`'s software block
    (provenance.software, naming purifylab among core.results.PROVENANCE_LIBRARIES) and every weights
    card the same block at its top (core.weights.save_weights). A `purifylab bench` config from before the
    block is recognised by what bench always writes (command "bench" and its sections): the committed
    reports' configs lack the block, and refusing them sent the documented reruns to --overwrite, which
    also skips bench's same-settings check. So is a standalone benchmark's config that session 21
    reconstructed for a report written before configs existed (its `reconstructed` note, its --out and
    the benchmark's command line). Other configs and cards without it, and any other tool's JSON, are
    not recognised."""
    if not isinstance(document, dict):
        return False
    holders = [document, document.get("provenance")]
    if any(isinstance(holder, dict) and isinstance(holder.get("software"), dict) and "purifylab" in holder["software"] for holder in holders):
        return True
    command = document.get("command")
    if command == "bench":
        return isinstance(document.get("sections"), list)
    program, _ = command_program(command)
    return isinstance(document.get("reconstructed"), str) and isinstance(document.get("out"), str) and program is not None


def command_program(command: object) -> tuple[str | None, int]:
    """What a benchmark config's command line ran, its options aside ('bench' for `purifylab bench`, a
    benchmarks module, a script's file name), and the index of the word after it (-1: not found)."""
    if command == "bench":
        return "bench", 1
    words = shlex.split(command) if isinstance(command, str) else []
    for index, word in enumerate(words):
        if re.fullmatch(r"benchmarks\.\w+", word) and index and words[index - 1] == "-m":
            return word, index + 1
        if word.endswith(".py"):
            return Path(word).name, index + 1
    return None, -1


def _config_record(config: dict, provenance: dict[str, Any] | None) -> dict:
    return {**config, "provenance": provenance if provenance is not None else {**provenance_of(), "weights": None}}


def _json_text(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"
