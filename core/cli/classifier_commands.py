"""`purifylab train classifier`, `purifylab evaluate`, `purifylab attack` and `purifylab classifiers`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from core.cli import set_threads
from core.cli.options import (
    BatchSize,
    ClassifierWeights,
    Device,
    DeviceDefaultCpu,
    Epochs,
    LearningRate,
    MaxMinutes,
    Overwrite,
    Progress,
    Resume,
    Ship,
    Threads,
    at_least_one,
    count_option,
    known_classifier,
    known_purifier_spec,
    parse_param_options,
    parse_purifier_spec,
    positive,
    seed_option,
    split_option,
    within,
)
from core.cli.preflight import (
    check_attack_options_need_attack,
    check_data,
    check_data_layout,
    check_eot_has_attack,
    check_not_weights_folder,
    check_output,
    check_run,
    check_run_folder,
    check_shippable,
    check_steps_apply,
    resume_hint,
    training_resume_hint,
    use_device,
)
from core.errors import PurifyLabError, check_range
from core.train.layout import MAX_NOISE_AUGMENT, MAX_SMOOTHING_SIGMA, check_split_not_carved_from_cohort

if TYPE_CHECKING:
    from core.attacks import AttackConfig


EotIter = Annotated[int, typer.Option("--eot-iter", help="gradient samples the attack itself averages per step (EOT attacks; --eot counts purifier draws)")]
Restarts = Annotated[int, typer.Option("--restarts", help="runs of the attack from fresh random starts, each on the images not yet fooled")]


def _attack_config(name: str, norm: str, eps: float, steps: int, seed: int, eot_iter: int, restarts: int) -> AttackConfig:
    """The attack as typed; AttackConfig refuses settings the attack would ignore. 'eotpgd' with one sample
    per step is PGD bit for bit, and the report would print it under EOT's name."""
    if name == "eotpgd" and eot_iter == 1:
        raise PurifyLabError("--attack eotpgd with --eot-iter 1 is plain PGD; give --eot-iter 2 or more, or use --attack pgd")
    from core.attacks import AttackConfig

    return AttackConfig(name=name, norm=norm, eps=eps, steps=steps, seed=seed, eot_iter=eot_iter, restarts=restarts)


def _check_threat_draws(threat: str, eot: int) -> None:
    """The threat's own rule on --eot (at most MAX_EOT; bpda-eot needs two draws or more), before the
    model and its libraries load: crafting would refuse it only after them."""
    from core.attacks import threat_model

    threat_model(threat).check_eot(eot)


def _check_threat_needs_no_data_set(threat: str) -> None:
    """`attack` crafts one image: a transfer attack is measured on a data set (a substitute crafts, the
    target reads), so it is refused here, before torch, the image and the model load."""
    from core.attacks import threat_model

    if threat_model(threat).needs_substitute:
        raise PurifyLabError(f"threat '{threat}' needs a data set to measure transfer; use 'purifylab evaluate --threat {threat}'")


def _report_card(card: dict, run_dir: Path | None = None, model: str = "", ship: bool = False) -> None:
    """Print a card's calibration and figures (with its weights file when written to `run_dir`), after
    copying the file and its card into weights/ if `ship`."""
    if ship:
        from core.weights import ship as ship_to_weights

        typer.echo(ship_to_weights(run_dir / f"{model}.safetensors", model))
    summary = {key: card[key] for key in ("calibration", "val_metrics", "test_metrics") if key in card}
    weights = {"weights": str(run_dir / f"{model}.safetensors")} if run_dir is not None else {}
    typer.echo(json.dumps({**weights, **summary}, indent=2))


def attack_file(
    image: Path,
    out: Path,
    attack: AttackConfig,
    *,
    classifier: str = "vit",
    threat: str = "grey",
    purifier: str = "none",
    purifier_params: dict | None = None,
    eot: int = 1,
    weights: Path | None = None,
    device: str = "cpu",
) -> dict:
    """Attack one image file with `core.lab.attack_image` and write the adversarial PNG (at the model's
    resolution) with its resolved config beside it (`out`.json); returns that config. The input is
    recorded by its SHA-256, never its name: a file name can identify a patient."""
    import torch

    from core.attacks import evaluate_defended, threat_model
    from core.attacks.robust import attack_budget
    from core.cli.reporting import provenance_of, write_config
    from core.devices import device_name
    from core.io import check_output_png, load_image, save_image, to_model_input

    out = check_output_png(out)
    spec = threat_model(threat)
    loaded = load_image(image)
    from core.lab import attack_image, read
    from core.metrics import CLASS_NAMES
    from core.models import create_classifier
    from core.purifiers import create_purifier
    from core.weights import sha256_of

    model = create_classifier(classifier, pretrained=True, weights=weights).to(device)
    model.check_classes(CLASS_NAMES, "a chest X-ray")
    attack.check_fits_input(model.in_channels, model.image_size, classifier)
    defense = create_purifier(purifier, **(purifier_params or {})).to(device)
    crafted = attack_image(model, to_model_input(loaded, model.image_size).to(device), attack, threat=threat, purifier=defense, eot=eot)
    x, adversarial = crafted.clean, crafted.image  # the budget holds from the input on grey levels, not the resized one
    label = torch.tensor([read(model, x)[0].label], device=device)
    clean, attacked = (evaluate_defended(model, defense, batch, label, seed=attack.seed) for batch in (x, adversarial))
    save_image(adversarial.cpu(), out)
    budget = attack_budget(attack, threat, eot, defense)
    width, height = loaded.original_size
    record = {
        "input_sha256": sha256_of(image),
        "input_size": [height, width],
        "resized_to": [model.image_size, model.image_size],
        "output": str(out),
        "classifier": classifier,
        **model.provenance(),
        "purifier": defense.describe(),
        "threat_model": {"name": spec.name, "description": spec.describe(budget["threat_eot"]), "eot": eot},
        "attack": attack.resolved(),
        "budget": budget,
        "label": int(label[0]),
        "device": device_name(x),  # as evaluate, certify and purify name it
        "clean_probabilities": [round(float(p), 6) for p in clean.probabilities[0]],
        "adversarial_probabilities": [round(float(p), 6) for p in attacked.probabilities[0]],
        "flipped": bool(attacked.predictions[0, 0] != clean.predictions[0, 0]),  # both through the purifier
        "linf_distance": float((adversarial - x).abs().max()),
        "l2_distance": float((adversarial - x).flatten().norm()),
    }
    return write_config(out, record, provenance_of(model, defense))


def _purifier_dict(spec: str | None) -> dict | None:
    """'ddim:t_star=0.14' -> {'purifier': 'ddim', 'params': {'t_star': 0.14}}, checked by building its
    config (torch, not yet timm) in the flag's own name."""
    if spec is None:
        return None
    from core.purifiers import purifier_config

    name, params = parse_purifier_spec(spec)
    try:
        return {"purifier": name, "params": purifier_config(name, **params).to_dict()}
    except PurifyLabError as error:
        raise PurifyLabError(f"--purified-half {spec}: {error}") from None


def register(app: typer.Typer, groups: dict[str, typer.Typer]) -> None:
    @groups["train"].command("classifier")
    def train_classifier_command(
        model: Annotated[str, typer.Option("--model", help="classifier name (see 'purifylab classifiers')", callback=known_classifier("--model"))],
        preset: Annotated[str, typer.Option("--preset", help="tiny | cpu | gpu")] = "cpu",
        data: Annotated[
            Path | None, typer.Option("--data", help="data set (default: the model's: X-rays, or MNIST / CIFAR-10 for mnist_* / cifar10_*)")
        ] = None,
        out: Annotated[Path | None, typer.Option("--out", help="run folder (default runs/<model> in the repository, or in $PURIFYLAB_RUNS)")] = None,
        epochs: Epochs = None,
        batch_size: BatchSize = None,
        lr: LearningRate = None,
        seed: Annotated[int | None, seed_option("seed (default: the preset's)")] = None,
        image_size: Annotated[
            int | None, typer.Option("--image-size", help="input side in pixels (X-rays: 128, the purifiers' size; 224, the files' size)")
        ] = None,
        noise_augment: Annotated[
            float | None,
            typer.Option(
                "--noise-augment",
                help=f"purifier-aware fine-tuning: max Gaussian noise std on noised/blurred copies, in (0, {MAX_NOISE_AUGMENT:g}]",
                callback=within("--noise-augment", 0, MAX_NOISE_AUGMENT, low_open=True),
            ),
        ] = None,
        temperature: Annotated[float | None, typer.Option("--temperature", help="distillation temperature (> 0)", callback=positive("--temperature"))] = None,
        distill_from: Annotated[
            str | None,
            typer.Option(
                "--distill-from",
                help="teacher classifier (student_cnn's preset names one; with an adversarial model: ARD)",
                callback=known_classifier("--distill-from"),
            ),
        ] = None,
        distill_clean_weight: Annotated[
            float | None, typer.Option("--distill-clean-weight", help="robust distillation: share of the loss on the student's clean reading")
        ] = None,
        init_from: Annotated[
            str | None, typer.Option("--init-from", help="start from this classifier's shipped weights", callback=known_classifier("--init-from"))
        ] = None,
        purified_half: Annotated[
            str | None,
            typer.Option(
                "--purified-half",
                help="purifier-aware: NAME:k=v,... purifies a random half of each batch (a fresh draw per step)",
                callback=known_purifier_spec("--purified-half"),
            ),
        ] = None,
        smoothing_sigma: Annotated[
            float | None,
            typer.Option(
                "--smoothing-sigma",
                help=f"randomized smoothing: train under Gaussian noise of this std, in (0, {MAX_SMOOTHING_SIGMA:g}] ([0, 1] pixels)",
                callback=within("--smoothing-sigma", 0, MAX_SMOOTHING_SIGMA, low_open=True),
            ),
        ] = None,
        trades_beta: Annotated[
            float | None, typer.Option("--trades-beta", help="adversarial models: TRADES with this beta instead of PGD training (the paper: 6)")
        ] = None,
        max_minutes: MaxMinutes = None,
        threads: Threads = None,
        resume: Resume = False,
        overwrite: Overwrite = False,
        ship: Ship = False,
        progress: Progress = True,
        device: Device = None,
    ) -> None:
        """Train a classifier; writes RUN/<model>.safetensors (fp16) and its card with val metrics."""
        from core.data.decode import MAX_IMAGE_SIZE
        from core.data.locations import default_data_for
        from core.image_file import MIN_SIDE
        from core.train.layout import CLASSIFIER_PRESETS, check_not_reporting_cohort, check_preset, classifier_run_dir, classifier_run_files

        check_preset(preset, CLASSIFIER_PRESETS)
        if image_size is not None:
            check_range("--image-size", image_size, MIN_SIDE, MAX_IMAGE_SIZE)
        run_dir = out or classifier_run_dir(model)
        check_run_folder(run_dir, resume, overwrite, classifier_run_files(model))
        if ship:
            check_shippable(preset)
        check_run(data, out, "--out", device)
        check_not_reporting_cohort(model, data or default_data_for(model))
        purified = _purifier_dict(purified_half)  # its settings, before timm and the data
        from core.train.classifier import preset as make_preset
        from core.train.classifier import train_classifier

        config = make_preset(
            preset,
            model,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            image_size=image_size,
            noise_augment=noise_augment,
            temperature=temperature,
            distill_from=distill_from,
            distill_clean_weight=distill_clean_weight,
            init_from=init_from,
            purified_half=purified,
            smoothing_sigma=smoothing_sigma,
            trades_beta=trades_beta,
            max_minutes=max_minutes,
            threads=threads,
        )
        with training_resume_hint(run_dir, resume):
            card = train_classifier(config, data or default_data_for(model), run_dir, progress=progress, resume=resume)
        if not card:
            return  # not the main process of a multi-GPU run
        _report_card(card, run_dir, model, ship)

    @groups["train"].command("calibrate")
    def calibrate_command(
        model: Annotated[str, typer.Option("--model", help="classifier name", callback=known_classifier("--model"))],
        weights: Annotated[Path | None, typer.Option("--weights", help="weights file (default: weights/<model>.safetensors)")] = None,
        data: Annotated[Path | None, typer.Option("--data", help="the folder it was trained on (default: the model's)")] = None,
        device: Device = None,
    ) -> None:
        """Refit temperature and decision threshold on val and re-measure the card (weights unchanged)."""
        if weights is not None:
            check_data(weights, "--weights")
        if data is not None:
            check_data(data)
        use_device(device)
        from core.data.locations import default_data_for
        from core.train.layout import check_not_reporting_cohort

        check_not_reporting_cohort(model, data or default_data_for(model))
        from core.models import weights_path_for
        from core.train.classifier import recalibrate

        _report_card(recalibrate(model, weights or weights_path_for(model), data or default_data_for(model)))

    @groups["train"].command("soup")
    def soup_command(
        model: Annotated[str, typer.Option("--model", help="classifier name", callback=known_classifier("--model"))],
        members: Annotated[list[Path], typer.Option("--weights", help="a member's weights file (give two or more, fine-tuned from one start)")],
        out: Annotated[Path, typer.Option("--out", help="run folder for <model>.safetensors and its card")],
        data: Annotated[Path | None, typer.Option("--data", help="the folder they were trained on (default: the model's)")] = None,
        ship: Annotated[bool, typer.Option("--ship", help="copy the result and its card into weights/ (not a soup of --preset tiny runs)")] = False,
        overwrite: Overwrite = False,
        device: Device = None,
    ) -> None:
        """Average fine-tuned classifiers weight by weight (a model soup), then calibrate it on val."""
        from core.weights import read_card

        for member in members:
            check_data(member, "--weights")
        check_output(check_not_weights_folder(out, "--out") / f"{model}.safetensors", "--out", overwrite=overwrite, suffix=".safetensors", creates_folder=True)
        if ship:
            for member in members:
                check_shippable(read_card(member).get("training_config", {}).get("preset", ""))
        check_run(data, out, "--out", device)
        from core.data.locations import default_data_for
        from core.train.soup import make_soup

        _report_card(make_soup(model, members, out, data or default_data_for(model)), out, model, ship)

    @app.command("evaluate")
    def evaluate_command(
        context: typer.Context,
        data: Annotated[Path, typer.Option("--data", help="class-per-folder directory, .tar.gz, MedMNIST .npz or MNIST idx file")],
        classifier: Annotated[str | None, typer.Option("--classifier", help="classifier name (default vit)")] = None,
        split: Annotated[
            str | None,
            split_option(
                "val | train (the patient split of a training folder) | all; default: val of the model's training folder, else all. "
                "Data with splits of its own (MedMNIST .npz, split folders): the one to read whole"
            ),
        ] = None,
        limit: Annotated[int | None, count_option("--limit", "N images evenly spaced through the split")] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", help="images per forward pass", callback=at_least_one("--batch-size"))] = 100,
        purifier: Annotated[
            str | None, typer.Option("--purifier", help="purify every image first: NAME or NAME:k=v,... (see 'purifylab purifiers'; default none)")
        ] = None,
        param: Annotated[list[str] | None, typer.Option("--param", help="purifier parameter k=v (repeatable)")] = None,
        weights: ClassifierWeights = None,
        seed: Annotated[int, seed_option("bootstrap, attack and purifier seed")] = 0,
        attack: Annotated[str | None, typer.Option("--attack", help="attack name (see 'purifylab attacks'); omit for clean only")] = None,
        eps: Annotated[float, typer.Option("--eps", help="budget in the [0, 1] pixel scale")] = 0.03,
        norm: Annotated[str, typer.Option("--norm", help="linf | l2")] = "linf",
        steps: Annotated[int, typer.Option("--steps", help="attack iterations")] = 10,
        eot_iter: EotIter = 1,
        restarts: Restarts = 1,
        threat: Annotated[str, typer.Option("--threat", help="threat model (see 'purifylab threats')")] = "grey",
        eot: Annotated[int, typer.Option("--eot", help="purifier draws per attack step (bpda-eot, white)", callback=at_least_one("--eot"))] = 1,
        redraws: Annotated[int, typer.Option("--redraws", help="test-time purifier draws; the worst case is reported", callback=at_least_one("--redraws"))] = 1,
        substitute: Annotated[str, typer.Option("--substitute", help="black-box model for --threat transfer")] = "substitute",
        attack_batch_size: Annotated[
            int, typer.Option("--attack-batch-size", help="images per attack batch", callback=at_least_one("--attack-batch-size"))
        ] = 16,
        threads: Threads = None,
        json_path: Annotated[Path | None, typer.Option("--json", help="also write the result here (and FILE.config.json beside it)")] = None,
        overwrite: Overwrite = False,
        defense: Annotated[
            str | None,
            typer.Option("--defense", help="a named defense (see 'purifylab defenses'): sets --classifier and --purifier; --param and --weights are refused"),
        ] = None,
        device: Device = None,
    ) -> None:
        """Accuracy, balanced accuracy, AUROC, sensitivity, specificity and calibration error on a split.

        Each figure with its 95 % interval; with --attack also clean vs robust accuracy under the stated threat model."""
        check_data(data)
        check_output(json_path, "--json", inputs=(data, weights), overwrite=overwrite, suffix=".json")
        check_eot_has_attack(eot, attack, threat)
        check_attack_options_need_attack(context, attack, ("threat", "eps", "norm", "steps", "eot_iter", "restarts", "redraws"))
        if defense is not None:  # before torch is imported: an unknown name is refused at once
            from core.defense import load_defense, refuse_conflicts

            chosen = load_defense(defense)
            if purifier is not None and chosen.runs_purifier(*parse_purifier_spec(purifier)):
                purifier = chosen.purifier_spec  # t_star=0.160 is the file's 0.16, not a conflict
            given = {"--classifier": (classifier, chosen.classifier), "--purifier": (purifier, chosen.purifier_spec)}
            classifier, purifier = refuse_conflicts(f"--defense {defense}", given)
            for option, given in (("--param", param), ("--weights", weights)):
                if given:  # either would measure another model or purifier under the defense's name
                    raise PurifyLabError(f"--defense {defense} fixes its classifier and purifier, but {option} was given; drop one of them")
        check_data_layout(data, split)
        classifier, purifier = classifier or "vit", purifier or "none"
        from core.models import classifiers

        classifiers.check(classifier)  # the registry's names need no torch: a typo costs no import
        check_split_not_carved_from_cohort(classifier, data, split)
        attack_config = None
        if attack is not None:  # the threat means nothing without an attack (as in EvaluationConfig)
            _check_threat_draws(threat, eot)
            check_steps_apply(context, attack)
            attack_config = _attack_config(attack, norm, eps, steps, seed, eot_iter, restarts)  # torch-free: before --device's import
        placement = use_device(device)
        from core.cli.reporting import format_report, provenance_of, write_json
        from core.purifiers import purifier_config

        set_threads(threads)
        purifier_name, purifier_params = parse_purifier_spec(purifier)
        purifier_params = purifier_config(purifier_name, **{**purifier_params, **parse_param_options(param or [])}).to_dict()  # stored resolved
        from core.evaluate import EvaluationConfig, evaluate  # after the purifier's checks: it imports timm and torchattacks too

        config = EvaluationConfig(  # validates the attack and threat before any data is read
            data=str(data),
            classifier=classifier,
            split=split,
            limit=limit,
            batch_size=batch_size,
            seed=seed,
            weights=str(weights) if weights else None,
            purifier=purifier_name,
            purifier_params=purifier_params,
            attack=attack_config,
            threat=threat,
            eot=eot,
            redraws=redraws,
            substitute=substitute,
            attack_batch_size=attack_batch_size,
        )
        import torch

        # --device's default (cuda where there is one) for the clean pass too, as accelerate picks for an attacked one
        clean_device = placement if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        with resume_hint("evaluate keeps no partial results, so a rerun starts over; `purifylab table` resumes cell by cell"):
            result = evaluate(config, progress=True, device=clean_device)
        from core.data.locations import portable_path

        result["defense"] = result["config"]["defense"] = defense
        # paths as certify records them: from the repository, not from wherever this ran
        result["config"].update(data=portable_path(data), weights=None if weights is None else portable_path(weights))
        loaded_weights = result.pop("loaded_weights")  # the config's provenance records them, once
        typer.echo(format_report(result))
        if json_path is not None:
            write_json(result, json_path, {**provenance_of(), "weights": loaded_weights})

    @app.command("attack")
    def attack_command(
        context: typer.Context,
        image: Annotated[Path, typer.Argument(help="X-ray image (PNG, JPEG, DICOM, ...)")],
        out: Annotated[Path, typer.Option("--out", help="adversarial PNG; its config goes to the same name .json")],
        classifier: Annotated[str, typer.Option("--classifier", help="classifier name")] = "vit",
        attack: Annotated[str, typer.Option("--attack", help="attack name")] = "pgd",
        eps: Annotated[float, typer.Option("--eps", help="budget in the [0, 1] pixel scale")] = 0.03,
        norm: Annotated[str, typer.Option("--norm", help="linf | l2")] = "linf",
        steps: Annotated[int, typer.Option("--steps", help="attack iterations")] = 10,
        eot_iter: EotIter = 1,
        restarts: Restarts = 1,
        threat: Annotated[str, typer.Option("--threat", help="grey | bpda | bpda-eot | white (transfer needs a data set: purifylab evaluate)")] = "grey",
        purifier: Annotated[str, typer.Option("--purifier", help="defense the attacker targets: NAME or NAME:k=v,...")] = "none",
        eot: Annotated[int, typer.Option("--eot", help="purifier draws per attack step (bpda-eot, white)", callback=at_least_one("--eot"))] = 1,
        weights: ClassifierWeights = None,
        seed: Annotated[int, seed_option("attack seed")] = 0,
        threads: Threads = None,
        overwrite: Overwrite = False,
        device: DeviceDefaultCpu = None,
    ) -> None:
        """Attack one image (label = the model's own reading) and write the adversarial PNG."""
        from core.image_file import decode_image

        check_output(out, "--out", inputs=(image, weights), overwrite=overwrite, suffix=".png")
        decode_image(image)  # a bad file is refused before torch is imported
        from core.models import classifiers
        from core.purifiers import PURIFIERS

        classifiers.check(classifier)
        purifier_name, purifier_params = parse_purifier_spec(purifier)
        PURIFIERS.check(purifier_name)  # the purifiers' names need no torch either
        _check_threat_needs_no_data_set(threat)
        _check_threat_draws(threat, eot)
        check_steps_apply(context, attack)
        attack_config = _attack_config(attack, norm, eps, steps, seed, eot_iter, restarts)  # torch-free: before --device's import
        placement = use_device(device)
        set_threads(threads)
        record = attack_file(
            image,
            out,
            attack_config,
            classifier=classifier,
            threat=threat,
            purifier=purifier_name,
            purifier_params=purifier_params,
            eot=eot,
            weights=weights,
            device=placement,
        )
        typer.echo(json.dumps(record, indent=2))

    @app.command("classifiers")
    def classifiers_command(
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON list instead of a table")] = False,
    ) -> None:
        """List the classifiers and whether their weights are shipped."""
        from core.models import list_classifiers, weights_path_for

        rows = [{"name": name, "shipped": weights_path_for(name).is_file(), "description": description} for name, description in list_classifiers().items()]
        _print_listing(rows, as_json, lambda row: (row["name"], "shipped" if row["shipped"] else "not trained", row["description"]))

    @app.command("attacks")
    def attacks_command(
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON list instead of a table")] = False,
    ) -> None:
        """List the attacks --attack takes."""
        from core.attacks import list_attacks

        rows = [{"name": name, "description": description} for name, description in list_attacks().items()]
        _print_listing(rows, as_json, lambda row: (row["name"], row["description"]))

    @app.command("threats")
    def threats_command(
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON list instead of a table")] = False,
    ) -> None:
        """List the threat models --threat takes: what the attacker sees of the defense."""
        from core.attacks import THREAT_MODELS

        rows = [
            {
                "name": name,
                "description": threat.describe(),
                "through_purifier": threat.goes_through_purifier,
                "uses_eot": threat.uses_eot,
                "needs_substitute": threat.needs_substitute,
            }
            for name, threat in THREAT_MODELS.items()
        ]
        _print_listing(rows, as_json, lambda row: (row["name"], row["description"]))

    @app.command("defenses")
    def defenses_command(
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON list instead of a table")] = False,
    ) -> None:
        """List the named defenses --defense takes (configs/defenses/): a classifier and its purifier."""
        from core.defense import list_defenses, load_defense

        rows = []
        for name in list_defenses():  # a broken file is a row with its error: one draft must not hide the others
            try:
                defense = load_defense(name)
            except PurifyLabError as error:
                rows.append({"name": name, "error": str(error)})
                continue
            rows.append({"name": name, "classifier": defense.classifier, "purifier": defense.purifier_spec, "description": defense.description})
        _print_listing(rows, as_json, _defense_cells)


def _defense_cells(row: dict) -> tuple[str, ...]:
    if "error" in row:  # a file that does not load
        return (row["name"], "", "", f"error: {row['error']}")
    return (row["name"], row["classifier"], row["purifier"], row["description"])


def _print_listing(rows: list[dict], as_json: bool, cells) -> None:
    """A listing command's rows: a JSON list, or one aligned line per row of `cells(row)`."""
    from core.cli.reporting import aligned

    typer.echo(json.dumps(rows, indent=2) if as_json else aligned([cells(row) for row in rows]))
