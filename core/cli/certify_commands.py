"""`purifylab certify`: certified L2 robustness by diffusion denoised smoothing (core.certify)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from core.cli.options import ClassifierWeights, DeviceDefaultCpu, Overwrite, Threads, at_least_one, count_option, seed_option, split_option
from core.errors import PurifyLabError

CURVE = "certified_curve.html"  # beside the --json results it draws


def certify_command(
    data: Annotated[Path, typer.Option("--data", help="class-per-folder directory (e.g. ../shared/data/chest_xray_pneumonia/test)")],
    classifier: Annotated[str | None, typer.Option("--classifier", help="classifier name (default resnet)")] = None,
    sigma: Annotated[float | None, typer.Option("--sigma", help="noise std in [0, 1] pixels (default 0.25)")] = None,
    n: Annotated[int, typer.Option("--n", help="noise draws that bound the top class's probability")] = 1000,
    n0: Annotated[int, typer.Option("--n0", help="noise draws that choose the class")] = 100,
    alpha: Annotated[float, typer.Option("--alpha", help="the certificate fails with probability <= alpha")] = 0.001,
    split: Annotated[str | None, split_option("val | all (default: as purifylab evaluate)")] = None,
    limit: Annotated[int | None, count_option("--limit", "N images evenly spaced through the split")] = None,
    denoiser: Annotated[
        str | None,
        typer.Option("--denoiser", help="shipped noise-prediction UNet, or 'none' for a noise-trained classifier (resnet_smooth); default ddpm_unet"),
    ] = None,
    defense: Annotated[
        str | None, typer.Option("--defense", help="a named defense (see 'purifylab defenses'): its classifier and its gaussian sigma, no denoiser")
    ] = None,
    weights: ClassifierWeights = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="noise draws per forward pass", callback=at_least_one("--batch-size"))] = 250,
    seed: Annotated[int, seed_option("noise seed")] = 0,
    threads: Threads = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help=f"write the result here (and FILE.config.json beside it); {CURVE} beside it draws every result there")
    ] = None,
    overwrite: Overwrite = False,
    device: DeviceDefaultCpu = None,
) -> None:
    """Certified accuracy vs L2 radius by randomized smoothing (Cohen et al.'s CERTIFY).

    Smooths classifier(one-shot denoise(x + sigma * noise)), or with --denoiser none a noise-trained
    classifier(x + sigma * noise)."""
    from core.cli import set_threads
    from core.cli.preflight import check_data, check_data_layout, check_distinct_outputs, check_output, use_device, with_config
    from core.train.layout import check_split_not_carved_from_cohort

    check_data(data)
    if json_path is not None:
        check_distinct_outputs({**with_config("--json", json_path), **with_config("the certify curve", json_path.with_name(CURVE))})
    check_output(json_path, "--json", inputs=(data, weights), overwrite=overwrite, suffix=".json")
    if json_path is not None:
        check_output(json_path.with_name(CURVE), "--json's curve", overwrite=overwrite)
    if defense is not None:  # before torch is imported: a refusal costs no import
        from core.defense import list_defenses, load_defense, refuse_conflicts

        chosen = load_defense(defense)
        if chosen.purifier != "gaussian":
            smoothing = [name for name in list_defenses() if _purifier_of(name) == "gaussian"]
            raise PurifyLabError(
                f"defense '{defense}' purifies with '{chosen.purifier}'; certify needs a gaussian-noise defense ({', '.join(smoothing) or 'none here'})"
            )
        if weights is not None:  # they would be certified under the defense's name
            raise PurifyLabError(f"--defense {defense} fixes its classifier, but --weights was given; drop one of them")
        given = {"--classifier": (classifier, chosen.classifier), "--denoiser": (denoiser, "none")}
        classifier, denoiser = refuse_conflicts(f"--defense {defense}", given)
        # after the refusals above: the typed sigma (the one evaluate adds, checked as there) imports torch
        (sigma,) = refuse_conflicts(f"--defense {defense}", {"--sigma": (sigma, chosen.purifier_config().sigma)})
    check_data_layout(data, split)
    classifier, sigma, denoiser = classifier or "resnet", 0.25 if sigma is None else sigma, denoiser or "ddpm_unet"
    from core.models import classifiers

    classifiers.check(classifier)  # the registry's names need no torch: a typo costs no import
    check_split_not_carved_from_cohort(classifier, data, split)
    target = use_device(device)
    from core.certify import CertifyConfig

    config = CertifyConfig(sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed)
    config.validate()
    set_threads(threads)
    from core.certify import certify_images, check_denoiser_fits
    from core.cli.reporting import provenance_of, write_json
    from core.data.loading import load_split, resolve_split
    from core.data.locations import portable_path
    from core.data.sources import data_listing
    from core.models import create_classifier
    from core.purifiers import create_purifier

    model = create_classifier(classifier, weights=weights)
    smoother = None
    if denoiser != "none":  # before the split is read: a denoiser of another size would fail on the first draw
        check_denoiser_fits(denoiser, model)
        smoother = create_purifier("one_shot", denoiser=denoiser).to(target)
    split = resolve_split(data, split, model.card)
    model.check_classes(data_listing(data, split).classes, f"--data {data}")  # before any pixel is decoded
    images = load_split(data, split, model.image_size, limit, channels=model.in_channels)
    result = certify_images(model.to(target), smoother, images.images.to(target), images.labels, config, progress=True)
    result.update(
        classifier=classifier,
        **model.provenance(),
        denoiser=denoiser,
        defense=defense,
        data={"folder": portable_path(data), "split": split, "n": int(len(images.labels)), "data_hash": images.data_hash},
    )
    result["config"].update(
        classifier=classifier,
        weights=None if weights is None else portable_path(weights),
        denoiser=denoiser,
        defense=defense,
        data=portable_path(data),
        split=split,
        limit=limit,
    )
    lines = [
        f"classifier {classifier}  denoiser {denoiser}  data {result['data']['folder']} split {split}  images {result['images']}",
        f"L2 radius: {result['radius_units']}  (sigma {sigma}, noise draws {n}, alpha {alpha}; drawn on {result['device']})",
        f"{'L2 radius':>9}  {'certified acc. [95 % CI]':<24}  certified balanced acc. [95 % CI, Bonferroni over classes]",
    ]
    for radius, value in result["certified_accuracy"].items():
        balanced, intervals = result["certified_balanced_accuracy"][radius], result["confidence_95"]
        lines.append(
            f"{radius:>9}  {_with_interval(value, intervals['certified_accuracy'][radius]):<24}  "
            f"{_with_interval(balanced, intervals['certified_balanced_accuracy'][radius])}"
        )
    lines.append(f"abstained on {result['abstained']} of {result['images']} images")
    typer.echo("\n".join(lines))
    if json_path is not None:
        write_json(result, json_path, provenance_of(model, smoother))
        curve = write_curve(json_path.parent)
        typer.echo(f"written to {json_path}; every certify result in its folder drawn in {curve}")


def _purifier_of(name: str) -> str | None:
    """The purifier of defense `name`, None where its file does not load: a broken draft beside the
    defenses must not answer a refusal about another one with its own error."""
    from core.defense import load_defense

    try:
        return load_defense(name).purifier
    except PurifyLabError:
        return None


def _with_interval(value: float, interval: list[float]) -> str:
    return f"{value:.4f} [{interval[0]:.4f}, {interval[1]:.4f}]"


def write_curve(folder: Path) -> Path:
    """CURVE in `folder`: one line per certify result there, with the files it drew as its config.

    Only NAME.json with a NAME.config.json beside it (what `write_json` writes) is read, and one that
    does not parse is skipped: unrelated JSON in the folder never breaks a finished run."""
    from core.cli.reporting import config_path, provenance_of, write_with_config
    from core.tables.render import certified_figure

    results, drawn = [], []
    for path in sorted(folder.glob("*.json")):
        if not config_path(path).is_file():
            continue
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(document, dict) and "per_image" in document and "sigma" in document:
            results.append(document)
            drawn.append(path.name)
    out = folder / CURVE
    # drawn from files, no network loaded
    write_with_config(out, certified_figure(results).to_html(include_plotlyjs="cdn"), {"certify_results": drawn}, provenance_of())
    return out


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    app.command("certify")(certify_command)
