"""`purifylab purify`, `purifylab purifiers` and `purifylab train diffusion`.

Every output file gets its resolved configuration beside it (FILE.json), so any purified image can
be traced back to the purifier, parameters, seed and resize that produced it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from core.cli.options import Device, DeviceDefaultCpu, Epochs, MaxMinutes, Overwrite, Resume, Ship, Threads, parse_param_options, seed_option
from core.cli.preflight import (
    check_distinct_outputs,
    check_not_shipped,
    check_not_weights_folder,
    check_output,
    check_run,
    check_run_folder,
    check_shippable,
    training_resume_hint,
    use_device,
)
from core.errors import PurifyLabError


def purify_file(image: Path, purifier_name: str, params: dict[str, str], seed: int, out: Path, device: str | None = None, threads: int | None = None) -> dict:
    """Purify one image file into a PNG and write the resolved config beside it; returns that config.
    The input is recorded by its SHA-256, never its name: a file name can identify a patient."""
    from core.image_file import check_output_png, decode_image

    check_output_png(out)
    loaded = decode_image(image)  # a bad file is refused before torch and diffusers are imported
    from core.purifiers import PURIFIERS

    PURIFIERS.check(purifier_name)  # and a mistyped purifier name
    device = use_device(device)
    import torch

    from core.cli import set_threads
    from core.cli.reporting import provenance_of, write_config
    from core.defense import purifier_spec_text
    from core.devices import device_name
    from core.io import save_image, to_model_input
    from core.purifiers import create_purifier
    from core.weights import sha256_of

    set_threads(threads)
    purifier = create_purifier(purifier_name, **params).to(device)
    if purifier.nfe() > 1:  # a chain of denoiser calls can run for minutes: say it started, on stderr (stdout is the JSON)
        typer.echo(f"purifying with {purifier_spec_text(purifier.name, purifier.config.to_dict())}: {purifier.nfe()} denoiser calls", err=True)
    size = getattr(purifier, "image_size", None)  # model-free purifiers keep the native size
    pixels = torch.from_numpy(loaded.pixels)[None, None]
    x = to_model_input(pixels, size) if size is not None else pixels
    x = x.to(device)
    purified = purifier.purify(x, seed=seed).cpu()
    save_image(purified, out)
    width, height = loaded.original_size
    config = {
        **purifier.describe(),
        "seed": seed,
        "device": device_name(x),  # the purifier's noise is drawn there: another device draws other noise
        "input_sha256": sha256_of(image),
        "input_format": loaded.format,
        "input_size": [height, width],
        "resized_to": [size, size] if size is not None else None,
        "output": str(out),
        "output_size": list(purified.shape[-2:]),
    }
    return write_config(out, config, provenance_of(purifier))


def _check_denoiser_weights(weights: Path | None, preset: str, data: Path, overwrite: bool, run_dir: Path) -> Path | None:
    """A denoiser's --weights, checked before the training it would end: a .safetensors path that can
    be written and replaces nothing purifylab did not write (check_output), never the data, never in
    the shipped weights folder (only --ship copies into it), and neither it nor its card is the run's config."""
    if weights is not None:
        from core.weights import card_path

        check_distinct_outputs({"--weights": weights, "--weights' card": card_path(weights), "the run's config": run_dir / "config.json"})
        check_not_shipped(preset, weights, "--weights")  # first: a shipped card predates the provenance check_output looks for
        check_not_weights_folder(weights.parent, "--weights")
        check_output(weights, "--weights", inputs=(data,), overwrite=overwrite, suffix=".safetensors", creates_folder=True)
    return weights


def _train_denoiser(
    train: Callable[..., dict],
    config,
    data: Path,
    run_dir: Path,
    weights: Path | None,
    stem: str,
    preset: str,
    resume: bool,
    overwrite: bool,
    ship: bool,
) -> None:
    """The common end of `train diffusion` and `train cold`: the default weights path checked (a given
    --weights was, before the imports; the default has a name only now that the preset chose it), the
    run, and --ship once its card is whole, as `stem`, the name its purifier loads it by."""
    from core.train.diffusion import run_weights_path

    if weights is None:
        weights = _check_denoiser_weights(run_weights_path(run_dir, stem), preset, data, overwrite, run_dir)
    with training_resume_hint(run_dir, resume):
        card = train(config, data, run_dir, weights_path=weights)
    if not card:
        return  # not the main process of a multi-GPU run
    if ship:
        from core.weights import ship as ship_to_weights

        typer.echo(ship_to_weights(weights, stem))
    typer.echo(json.dumps(card["quality"], indent=2))


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("purify")
    def purify(
        image: Annotated[Path, typer.Argument(help="X-ray image (PNG, JPEG, DICOM, ...)")],
        out: Annotated[Path, typer.Option("--out", help="output PNG; its config goes to the same name .json")],
        purifier: Annotated[str, typer.Option("--purifier", help="purifier name (see 'purifylab purifiers')")] = "ddpm",
        param: Annotated[list[str] | None, typer.Option("--param", help="purifier parameter k=v (repeatable)")] = None,
        seed: Annotated[int, seed_option("seed for the purifier's noise")] = 0,
        overwrite: Overwrite = False,
        device: DeviceDefaultCpu = None,
        threads: Threads = None,
    ) -> None:
        """Purify one image and write it as a PNG (resized to the purifier's resolution)."""
        check_output(out, "--out", inputs=(image,), overwrite=overwrite, suffix=".png")
        config = purify_file(image, purifier, parse_param_options(param or []), seed, out, device, threads)
        typer.echo(json.dumps(config, indent=2))

    @app.command("purifiers")
    def purifiers(
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON list instead of a table")] = False,
    ) -> None:
        """List the purifiers with their description, denoiser calls (NFE) at the defaults and sweeps."""
        from core.purifiers import PURIFIERS, list_purifiers, planned_calls

        rows = []
        for name, description in list_purifiers().items():
            try:
                nfe = planned_calls(name)  # from the classes and the cards: no weights are loaded
            except PurifyLabError:  # weights not trained/shipped yet
                nfe = None
            rows.append({"name": name, "nfe": nfe, "sweeps": sorted(PURIFIERS.get(name).sweeps), "description": description})
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        from core.cli.reporting import aligned

        nfe = {row["name"]: "n/a (weights missing)" if row["nfe"] is None else row["nfe"] for row in rows}
        lines = [(row["name"], f"NFE {nfe[row['name']]}", f"sweeps {','.join(row['sweeps']) or '-'}", row["description"]) for row in rows]
        typer.echo(aligned(lines))

    @groups["train"].command("diffusion")
    def train_diffusion_command(
        preset: Annotated[str, typer.Option("--preset", help="tiny | cpu | gpu (X-rays) | mnist | cifar10")] = "cpu",
        data: Annotated[Path | None, typer.Option("--data", help="data set (default: the preset's, e.g. ../shared/data/chest_xray_pneumonia/train)")] = None,
        out: Annotated[
            Path | None,
            typer.Option(
                "--out", help="run folder: checkpoints, sample grids, log (default runs/ddpm or runs/ddpm_<preset> in the repository, or in $PURIFYLAB_RUNS)"
            ),
        ] = None,
        weights: Annotated[Path | None, typer.Option("--weights", help="final .safetensors (default OUT/ddpm_unet[_<preset>].safetensors)")] = None,
        epochs: Epochs = None,
        resume: Resume = False,
        overwrite: Overwrite = False,
        ship: Ship = False,
        max_minutes: MaxMinutes = None,
        device: Device = None,
    ) -> None:
        """Train the DDPM denoiser (epsilon prediction, EMA) into its run folder; --ship copies it and its card into weights/."""
        from core.data.locations import default_data_for
        from core.train.layout import DIFFUSION_PRESETS, check_not_reporting_cohort, check_preset, diffusion_run_dir

        check_preset(preset, DIFFUSION_PRESETS)
        run_dir = out or diffusion_run_dir(preset)
        check_run_folder(run_dir, resume, overwrite)
        data = data or default_data_for(preset)
        _check_denoiser_weights(weights, preset, data, overwrite, run_dir)
        if ship:
            check_shippable(preset)
        check_run(data, out, "--out", device)
        check_not_reporting_cohort(preset, data)
        from core.train.diffusion import DiffusionTrainConfig, train_diffusion

        config = DiffusionTrainConfig.from_preset(preset, resume=resume, max_minutes=max_minutes, epochs=epochs)
        _train_denoiser(train_diffusion, config, data, run_dir, weights, config.weights_stem, preset, resume, overwrite, ship)

    @groups["train"].command("cold")
    def train_cold_command(
        preset: Annotated[str, typer.Option("--preset", help="tiny | cpu | gpu")] = "cpu",
        data: Annotated[Path | None, typer.Option("--data", help="X-ray folder (default: ../shared/data/chest_xray_pneumonia/train)")] = None,
        out: Annotated[
            Path | None, typer.Option("--out", help="run folder: checkpoints, sample grids, log (default runs/cold in the repository, or in $PURIFYLAB_RUNS)")
        ] = None,
        weights: Annotated[Path | None, typer.Option("--weights", help="final .safetensors (default OUT/cold_unet.safetensors)")] = None,
        epochs: Epochs = None,
        resume: Resume = False,
        overwrite: Overwrite = False,
        ship: Ship = False,
        max_minutes: MaxMinutes = None,
        device: Device = None,
    ) -> None:
        """Train the cold-diffusion deblurring UNet (x0 prediction from blur, EMA) into its run folder; --ship copies it and its card into weights/."""
        from core.data.locations import XRAY_TRAIN_DIR
        from core.train.layout import COLD_PRESETS, check_not_reporting_cohort, check_preset, cold_run_dir

        check_preset(preset, COLD_PRESETS)
        out = out or cold_run_dir()
        check_run_folder(out, resume, overwrite)
        data = data or XRAY_TRAIN_DIR
        _check_denoiser_weights(weights, preset, data, overwrite, out)
        if ship:
            check_shippable(preset)
        check_run(data, out, "--out", device)
        check_not_reporting_cohort(preset, data)
        from core.purifiers.cold import COLD_WEIGHTS_STEM
        from core.train.cold import ColdTrainConfig, train_cold

        config = ColdTrainConfig.from_preset(preset, resume=resume, max_minutes=max_minutes, epochs=epochs)
        _train_denoiser(train_cold, config, data, out, weights, COLD_WEIGHTS_STEM, preset, resume, overwrite, ship)
