"""`purifylab certify`: certified L2 robustness by diffusion denoised smoothing (core.certify)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from core.cli.options import ClassifierWeights, DeviceDefaultCpu, Threads


def certify_command(
    data: Annotated[Path, typer.Option("--data", help="class-per-folder directory (e.g. ../shared/data/chest_xray_pneumonia/test)")],
    classifier: Annotated[str, typer.Option("--classifier", help="classifier name")] = "resnet",
    sigma: Annotated[float, typer.Option("--sigma", help="noise std in [0, 1] pixels")] = 0.25,
    n: Annotated[int, typer.Option("--n", help="noise draws that bound the top class's probability")] = 1000,
    n0: Annotated[int, typer.Option("--n0", help="noise draws that choose the class")] = 100,
    alpha: Annotated[float, typer.Option("--alpha", help="the certificate fails with probability <= alpha")] = 0.001,
    split: Annotated[str | None, typer.Option("--split", help="val | all (default: as purifylab evaluate)")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="N images evenly spaced through the split")] = None,
    denoiser: Annotated[
        str, typer.Option("--denoiser", help="shipped noise-prediction UNet, or 'none' for a noise-trained classifier (resnet_smooth)")
    ] = "ddpm_unet",
    defense: Annotated[
        str | None, typer.Option("--defense", help="a named defense (configs/defenses/): its classifier and its gaussian sigma, no denoiser")
    ] = None,
    weights: ClassifierWeights = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="noise draws per forward pass")] = 250,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    threads: Threads = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the result here (and FILE.config.json beside it)")] = None,
    device: DeviceDefaultCpu = None,
) -> None:
    """Certified accuracy vs L2 radius of classifier(one-shot denoise(x + sigma * noise)), or of a
    noise-trained classifier(x + sigma * noise) with --denoiser none (Cohen et al.'s CERTIFY)."""
    from core.cli import set_threads
    from core.cli.preflight import check_data, check_output_file, use_device
    from core.errors import PurifyLabError

    check_data(data)
    check_output_file(json_path, "--json")
    if defense is not None:  # before torch is imported: a refusal costs no import
        from core.defense import list_defenses, load_defense

        chosen = load_defense(defense)
        if chosen.purifier != "gaussian":
            smoothing = [name for name in list_defenses() if load_defense(name).purifier == "gaussian"]
            raise PurifyLabError(
                f"defense '{defense}' purifies with '{chosen.purifier}'; certify needs a gaussian-noise defense ({', '.join(smoothing) or 'none here'})"
            )
        classifier, sigma, denoiser = chosen.classifier, float(chosen.params.get("sigma", sigma)), "none"
    target = use_device(device)
    from core.certify import CertifyConfig

    config = CertifyConfig(sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size, seed=seed)
    config.validate()
    set_threads(threads)
    from core.certify import certify_images
    from core.cli.reporting import write_json
    from core.data.loading import load_split, resolve_split
    from core.data.locations import portable_path
    from core.models import create_classifier
    from core.purifiers import create_purifier

    model = create_classifier(classifier, weights=weights)
    split = resolve_split(data, split, model.card)
    images = load_split(data, split, model.image_size, limit, channels=model.in_channels)
    smoother = None if denoiser == "none" else create_purifier("one_shot", denoiser=denoiser).to(target)
    result = certify_images(model.to(target), smoother, images.images.to(target), images.labels, config, progress=True)
    result.update(
        classifier=classifier,
        classifier_sha256=(model.card or {}).get("sha256"),
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
    lines = [f"{'L2 radius':>9}  certified acc.  certified balanced acc.  (sigma {sigma}, n {n}, alpha {alpha}, {result['images']} images)"]
    for radius, value in result["certified_accuracy"].items():
        lines.append(f"{radius:>9}  {value:14.4f}  {result['certified_balanced_accuracy'][radius]:23.4f}")
    typer.echo("\n".join(lines))
    if json_path is not None:
        write_json(result, json_path)
        curve = write_curve(json_path.parent)
        typer.echo(f"written to {json_path}; every certify result in its folder drawn in {curve}")
    typer.echo(json.dumps({"abstained": result["abstained"]}))


def write_curve(folder: Path) -> Path:
    """certified_curve.html in `folder`: one line per certify result (*.json with per-image radii) there."""
    from core.tables.render import certified_figure

    results = []
    for path in sorted(folder.glob("*.json")):
        document = json.loads(path.read_text())
        if isinstance(document, dict) and "per_image" in document and "sigma" in document:
            results.append(document)
    out = folder / "certified_curve.html"
    certified_figure(results).write_html(out, include_plotlyjs="cdn")
    return out


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    app.command("certify")(certify_command)
