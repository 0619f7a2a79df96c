"""`purifylab data describe` and `purifylab data split`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from core.cli.options import Overwrite, count_option, seed_option, within
from core.cli.preflight import check_data, check_output
from core.cli.reporting import provenance_of, write_config
from core.errors import PurifyLabError


def describe_command(
    path: Annotated[Path, typer.Argument(help="Data folder or file (class folders, .npz, idx, .tar.gz).")],
    split: Annotated[str | None, typer.Option(help="Split to read (npz key prefix or split folder).")] = None,
    json_file: Annotated[Path | None, typer.Option("--json", help="Also write the full summary as JSON.")] = None,
    limit: Annotated[int | None, count_option("--limit", "Scan at most this many images, spread over classes.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Counts per class, image sizes, modes, duplicate groups and undecodable files."""
    check_data(path, "PATH")
    check_output(json_file, "--json", inputs=(path,), overwrite=overwrite, suffix=".json", creates_folder=True)
    from core.data.describe import describe

    summary = describe(path, split=split, limit=limit, progress=True)
    typer.echo(summary.table())
    if json_file is not None:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps(summary.to_dict(), indent=1) + "\n")
        write_config(json_file, {"command": "data describe", "path": str(path), "split": split, "limit": limit}, provenance_of())
        typer.echo(f"summary written to {json_file}")


def _fraction_option(flag: str, part: str) -> typer.models.OptionInfo:
    """--val / --test, each refused outside [0, 1) before the folder is decoded."""
    help = f"Fraction of each class for {part} (whole patients), in [0, 1); default: the project's split"
    return typer.Option(flag, help=help, callback=within(flag, 0, 1, high_open=True))


def split_command(
    path: Annotated[Path, typer.Argument(help="Data folder or file to split.")],
    out: Annotated[Path, typer.Option(help="Where to write the split (a .json; its config goes to NAME.config.json).")],
    seed: Annotated[int, seed_option("the same seed gives the same split")] = 0,
    val: Annotated[float | None, _fraction_option("--val", "validation")] = None,
    test: Annotated[float | None, _fraction_option("--test", "test")] = None,
    split: Annotated[str | None, typer.Option(help="Split to read (npz key prefix or split folder).")] = None,
    size: Annotated[int | None, typer.Option(help="Resize before comparing pixels; needed only for mixed image sizes.")] = None,
    overwrite: Overwrite = False,
) -> None:
    """Remove pixel-identical duplicates, then split whole patients stratified per class and save the split.

    Patients come from a groups.csv (path,group) in the folder, else the Kermany file names, else
    each image is its own group (with a warning)."""
    check_data(path, "PATH")
    check_output(out, "--out", inputs=(path,), overwrite=overwrite, suffix=".json", creates_folder=True)
    if val is not None and test is not None and val + test >= 1:  # before the whole folder is decoded
        raise PurifyLabError(f"--val {val} and --test {test} leave no images to train on; their sum must be below 1")
    from core.data import load_dataset, make_splits
    from core.data.groups import group_images
    from core.data.loading import SPLIT_SEED, describe_cut, project_fractions

    image_set = load_dataset(path, split=split, size=size, progress=True)
    # The sources are relative to the split's own folder, where its groups.csv sits.
    grouping = group_images(image_set.sources, path / split if split is not None and (path / split).is_dir() else path)
    default = project_fractions(grouping)
    val, test = default["val"] if val is None else val, default["test"] if test is None else test
    spec = make_splits(image_set, val=val, test=test, seed=seed, grouping=grouping)
    if not len(spec.indices["train"]):  # whole groups are rounded, so fractions summing below 1 can still take them all
        raise PurifyLabError(f"val {val:g} and test {test:g} of {_count(spec.group_count, 'group')} leave none to train on; lower --val or --test")
    cut = describe_cut(grouping)
    if (val, test, seed) != (default["val"], default["test"], SPLIT_SEED):
        cut = f"val {val:.0%}, test {test:.0%}, seed {seed}: not the project's split ({cut})"
    spec.save(out)
    config = {"command": "data split", "path": str(path), "split": split, "size": size, "seed": seed, "val": val, "test": test, "cut": cut}
    write_config(out, config, provenance_of())
    counts = ", ".join(f"{name} {len(indices):,}" for name, indices in spec.indices.items())
    typer.echo(
        f"{_count(len(image_set), 'image')} ({len(image_set.skipped)} undecodable skipped), "
        f"{_count(len(spec.duplicates_removed), 'duplicate')} removed, {_count(spec.group_count, 'group')} ({spec.grouping}) -> {counts}; "
        f"{cut}; data hash {spec.data_hash[:12]}; written to {out}"
    )


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    groups["data"].command("describe")(describe_command)
    groups["data"].command("split")(split_command)
