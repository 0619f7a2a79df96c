"""`purifylab bench` (also `python -m benchmarks`): the performance suite in benchmarks/, see BENCHMARKS.md."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import typer

from core.cli.options import Overwrite, Threads, count_option
from core.errors import PurifyLabError


def _names(value: str | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(name.strip() for name in value.split(",") if name.strip())


def _benchmarks(module: str):
    """A module of the `benchmarks` package, installed beside `core` (pyproject) or found in the source checkout."""
    try:
        return importlib.import_module(f"benchmarks.{module}")
    except ImportError as error:
        raise PurifyLabError(f"purifylab bench needs the benchmarks package ({error}); install the project with `pip install -e .`") from None


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @app.command("bench")
    def bench_command(
        preset: Annotated[str | None, typer.Option("--preset", help="cpu | gpu | smoke (tiny models); default: cpu, or gpu with --device cuda")] = None,
        device: Annotated[str | None, typer.Option("--device", help="cpu | cuda")] = None,
        out: Annotated[
            Path | None,
            typer.Option("--out", help="JSON report; default bench_<preset>.json in the benchmarks folder of $PURIFYLAB_RESULTS (results/ unless set)"),
        ] = None,
        sections: Annotated[str | None, typer.Option("--sections", help="comma-separated: purify,attack,train,app")] = None,
        purifiers: Annotated[str | None, typer.Option("--purifiers", help="comma-separated purifiers (default: every registered one)")] = None,
        data: Annotated[
            Path | None, typer.Option("--data", help="X-ray folder (default ../shared/data/chest_xray_pneumonia/train; random images if absent)")
        ] = None,
        threads: Threads = None,
        overwrite: Overwrite = False,
        purify_batch: Annotated[int | None, count_option("--purify-batch", "large batch for purification")] = None,
        train_batch: Annotated[int | None, count_option("--train-batch", "large batch for training steps")] = None,
        warmup: Annotated[int | None, typer.Option("--warmup", help="untimed runs before timing (purify, train, app)")] = None,
        repeats: Annotated[int | None, count_option("--repeats", "timed runs, median reported (purify, train)")] = None,
        attack_steps: Annotated[int | None, count_option("--attack-steps", "PGD / APGD steps on the classifier alone")] = None,
        attack_batch: Annotated[int | None, count_option("--attack-batch", "large batch, attacks on the classifier alone")] = None,
        chain_purifiers: Annotated[str | None, typer.Option("--chain-purifiers", help="purifiers to attack through (default ddpm,ddim,cold_recon)")] = None,
        chain_threats: Annotated[str | None, typer.Option("--chain-threats", help="bpda | bpda-eot | white, comma-separated")] = None,
        chain_steps: Annotated[int | None, count_option("--chain-steps", "attack steps through a purifier")] = None,
        chain_eot: Annotated[int | None, count_option("--chain-eot", "EOT draws per step through a stochastic purifier")] = None,
        chain_batch: Annotated[int | None, count_option("--chain-batch", "large batch, attacks through a purifier")] = None,
        naive_attack_images: Annotated[
            int | None, typer.Option("--naive-attack-images", help="time the naive (one image at a time) attacks on at most N images of a batch")
        ] = None,
        bf16: Annotated[bool | None, typer.Option("--bf16/--no-bf16", help="CUDA: bf16 autocast on our path")] = None,
        channels_last: Annotated[bool | None, typer.Option("--channels-last/--no-channels-last", help="CUDA: NHWC convolutions")] = None,
        compile_models: Annotated[bool | None, typer.Option("--compile/--no-compile", help="CUDA: torch.compile the networks")] = None,
        cuda_graphs: Annotated[bool | None, typer.Option("--cuda-graphs/--no-cuda-graphs", help="CUDA: compile mode reduce-overhead (needs --compile)")] = None,
    ) -> None:
        """Measure throughput of purifiers, attacks, training and the app path against a naive reference.

        A report measured with other settings is not replaced without --overwrite (another --out keeps both)."""
        from core.cli.preflight import check_data, check_output
        from core.cli.reporting import write_config
        from core.data.locations import portable_path

        options = _benchmarks("options")
        chosen = preset or ("gpu" if device == "cuda" else "cpu")
        out = out or options.REPORTS_DIR / f"bench_{chosen}.json"
        if data is not None:  # a folder the user named must exist; the random-image fallback is for the default only
            check_data(data)
        check_output(out, "--out", inputs=(data,), overwrite=overwrite, suffix=".json", creates_folder=True)
        suite, report = _benchmarks("suite"), _benchmarks("report")
        settings = _benchmarks("settings").BenchSettings.from_preset(
            chosen, device=device, threads=threads, sections=_names(sections), purifiers=_names(purifiers),
            purify_batch=purify_batch, train_batch=train_batch, warmup=warmup, repeats=repeats, attack_steps=attack_steps,
            attack_batch=attack_batch, chain_purifiers=_names(chain_purifiers), chain_threats=_names(chain_threats),
            chain_steps=chain_steps, chain_eot=chain_eot, chain_batch=chain_batch, naive_attack_images=naive_attack_images,
            bf16=bf16, channels_last=channels_last, compile=compile_models, cuda_graphs=cuda_graphs,
        )  # fmt: skip
        config = {"command": "bench", "data": None if data is None else portable_path(data), **settings.to_dict()}
        options.check_same_settings(out, config, overwrite)

        def log(line: str) -> None:
            typer.echo(line, err=True)

        result = suite.run_suite(settings, data, log)
        path = suite.write_report(result, out)
        write_config(path, config)
        typer.echo(report.markdown(result))
        typer.echo(f"report: {path}", err=True)
