"""The `purifylab` CLI: real files in, exit 0; hostile files in, exit 2 with one line, fast."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from hostile_files import HOSTILE, LEGITIMATE
from PIL import Image

from core.cli import main


@pytest.fixture(scope="module", autouse=True)
def _engine_imported():
    """Time the refusal, not the one-off import of torch and diffusers."""
    import core.io
    import core.purifiers  # noqa: F401


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return int(exit_info.value.code or 0), captured.out, captured.err


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_file_gives_one_line_and_exit_2_fast(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(HOSTILE[name]())
    # How fast: `python -m benchmarks.refusals` (BENCHMARKS.md), not a timed test on a shared machine.
    code, out, err = run_cli(["purify", str(path), "--purifier", "none", "--out", str(tmp_path / "o.png")], capsys)
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("name", sorted(LEGITIMATE))
def test_legitimate_variants_purify_and_write_config_beside(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_bytes(LEGITIMATE[name]())
    out = tmp_path / "o.png"
    code, stdout, _ = run_cli(["purify", str(path), "--purifier", "none", "--out", str(out)], capsys)
    assert code == 0
    with Image.open(out) as written:
        assert written.mode == "L" and min(written.size) >= 16
    assert json.loads(out.with_suffix(".json").read_text())["purifier"] == "none"


def test_real_xray_through_blur_keeps_size(xray_paths, tmp_path, capsys):
    out = tmp_path / "blurred.png"
    code, _, _ = run_cli(["purify", str(xray_paths["NORMAL"][0]), "--purifier", "blur", "--param", "sigma=2", "--out", str(out)], capsys)
    assert code == 0
    assert Image.open(out).size == (224, 224)


def test_bad_parameter_is_named(tmp_path, xray_paths, capsys):
    code, _, err = run_cli(["purify", str(xray_paths["NORMAL"][0]), "--purifier", "blur", "--param", "sigma=-3", "--out", str(tmp_path / "o.png")], capsys)
    assert code == 2 and "sigma=-3.0" in err and len(err.strip().splitlines()) == 1


def test_data_describe_reports_kermany_counts_and_duplicates(xray_train_dir, capsys):
    code, out, _ = run_cli(["data", "describe", str(xray_train_dir)], capsys)
    assert code == 0
    assert "1,341" in out and "3,875" in out and "duplicate groups: 24" in out


def test_help_on_every_command(capsys):
    for args in (["data"], ["data", "describe"], ["data", "split"], ["purify"], ["purifiers"], ["train"]):
        code, out, _ = run_cli([*args, "--help"], capsys)
        assert code == 0 and "Usage" in out, args


def test_python_dash_m_core_entry_point():
    result = subprocess.run([sys.executable, "-m", "core", "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "purify" in result.stdout


def test_an_output_that_is_a_folder_is_refused_before_any_compute(tmp_path, xray_paths, capsys):
    (tmp_path / "out.png").mkdir()
    for command in (["purify", str(xray_paths["NORMAL"][0]), "--purifier", "ddpm"], ["attack", str(xray_paths["NORMAL"][0])]):
        code, _, err = run_cli([*command, "--out", str(tmp_path / "out.png")], capsys)
        assert code == 2 and "is a folder" in err and len(err.strip().splitlines()) == 1


def test_serve_refuses_a_bad_option_before_importing_gradio(capsys):
    code, _, err = run_cli(["serve", "--concurrency", "0"], capsys)
    assert code == 2 and err.strip() == "error: --concurrency=0 is outside the allowed range [1, 64]"


def test_version(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.startswith("purifylab ")


def test_help_imports_no_torch():
    """--help and the command list load no heavy library (torch alone takes 2-5 s on 2 busy cores)."""
    import subprocess
    import sys

    heavy = "('torch', 'diffusers', 'torchattacks', 'pydicom', 'gradio')"
    code = "\n".join(
        [
            "import sys",
            "from core.cli import main",
            "try:",
            "    main(['--help'])",
            "except SystemExit:",
            "    pass",
            f"print(sorted(m for m in {heavy} if m in sys.modules))",
        ]
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def _refusal_in_a_fresh_process(args: list[str]) -> tuple[str, str]:
    """(last stdout line: exit code and the heavy modules imported, stderr) of main(args) in a new process."""
    code = (
        "import sys\nfrom core.cli import main\ntry:\n"
        f"    main({args!r})\n"
        "except SystemExit as exit:\n"
        "    print(exit.code, sorted(m for m in ('torch', 'diffusers', 'torchattacks') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return done.stdout.strip().splitlines()[-1], done.stderr


def test_bad_inputs_are_refused_before_torch_is_imported(tmp_path):
    (tmp_path / "bad.png").write_text("<html>not an image</html>")
    (tmp_path / "good.png").write_bytes(_grey_png())
    (tmp_path / "folder.png").mkdir()
    bad, good, folder, missing = (str(tmp_path / name) for name in ("bad.png", "good.png", "folder.png", "missing"))
    cases = {
        "not an image": [["purify", bad, "--purifier", "ddpm", "--out", str(tmp_path / "o.png")], ["attack", bad, "--out", str(tmp_path / "o.png")]],
        "is a folder": [["purify", good, "--out", folder], ["attack", good, "--out", folder], ["evaluate", "--data", str(tmp_path), "--json", folder],
                        ["certify", "--data", str(tmp_path), "--json", folder], ["data", "split", str(tmp_path), "--out", folder]],
        "does not exist": [["evaluate", "--data", missing], ["certify", "--data", missing], ["table", "quick", "--data", missing]],
        "defense 'nope' not found": [["evaluate", "--data", str(tmp_path), "--defense", "nope"], ["certify", "--data", str(tmp_path), "--defense", "nope"]],
        "--device must be": [["purify", good, "--out", str(tmp_path / "o.png"), "--device", "tpu"],
                             ["attack", good, "--out", str(tmp_path / "o.png"), "--device", "tpu"],
                             ["train", "calibrate", "--model", "vit", "--device", "tpu"]],
    }  # fmt: skip
    _assert_refused_before_torch(cases)


def _assert_refused_before_torch(cases: dict[str, list[list[str]]]) -> None:
    """Each command, in a fresh process, exits 2 with its one-line message and never imported torch."""
    for message, commands in cases.items():
        for args in commands:
            outcome, stderr = _refusal_in_a_fresh_process(args)
            assert outcome == "2 []", (args, outcome, stderr)
            assert message in stderr and len(stderr.strip().splitlines()) == 1, (args, stderr)


def test_every_command_that_computes_takes_device():
    import typer.main

    from core.cli import _register_commands, app

    _register_commands()
    commands = {}

    def collect(command, path=()):
        for name, sub in (getattr(command, "commands", None) or {}).items():
            collect(sub, (*path, name))
        if not getattr(command, "commands", None):
            commands[" ".join(path)] = {option for parameter in command.params for option in parameter.opts}

    collect(typer.main.get_command(app))
    listings = {"classifiers", "purifiers", "presets", "attacks", "threats", "defenses", "data describe", "data split"}  # read files, no model
    assert listings < set(commands)
    missing = [name for name, options in commands.items() if name not in listings and "--device" not in options]
    assert not missing, missing


def _grey_png() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("L", (64, 64), 128).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("command", "keys"),
    [
        ("classifiers", {"name", "shipped", "description"}),
        ("purifiers", {"name", "nfe", "sweeps", "description"}),
        ("presets", {"name", "title"}),
        ("attacks", {"name", "description"}),
        ("threats", {"name", "description", "through_purifier", "uses_eot", "needs_substitute"}),
        ("defenses", {"name", "classifier", "purifier", "description"}),
    ],
)
def test_listing_commands_print_json(capsys, command, keys):
    code, out, _ = run_cli([command, "--json"], capsys)
    rows = json.loads(out)
    assert code == 0 and rows and all(set(row) == keys for row in rows)


_PROGRESS = re.compile(r"\|\s*\d+/\d+ \[")  # a tqdm bar: data decoded before the check (none when cached)


def _one_line_refusal(code: int, err: str, *fragments: str) -> None:
    err = "\n".join(line for line in err.splitlines() if line.strip() and not _PROGRESS.search(line))
    assert code == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_an_output_never_replaces_an_input(tmp_path, capsys):
    image = tmp_path / "victim.png"
    image.write_bytes(_grey_png())
    for command in (["purify", str(image), "--purifier", "none"], ["attack", str(image), "--classifier", "student_cnn", "--steps", "1"]):
        code, _, err = run_cli([*command, "--out", str(image), "--overwrite"], capsys)
        _one_line_refusal(code, err, "is one of the command's inputs")
    assert image.read_bytes() == _grey_png()


def test_existing_files_purifylab_did_not_write_are_kept_unless_overwrite(tmp_path, capsys):
    image = tmp_path / "in.png"
    image.write_bytes(_grey_png())
    (tmp_path / "existing.png").write_text("precious")
    (tmp_path / "notes.json").write_text('{"mine": 1}')
    (tmp_path / "res.json").write_text("precious")
    (tmp_path / "res.config.json").write_text("precious")
    cases = [
        ["purify", str(image), "--purifier", "none", "--out", str(tmp_path / "existing.png")],
        ["purify", str(image), "--purifier", "none", "--out", str(tmp_path / "notes.png")],  # its config would replace notes.json
        ["evaluate", "--data", str(tmp_path), "--json", str(tmp_path / "res.json")],
        ["data", "split", str(tmp_path), "--out", str(tmp_path / "res.json")],
        ["bench", "--preset", "smoke", "--out", str(tmp_path / "res.json")],
    ]
    for args in cases:
        code, _, err = run_cli(args, capsys)
        _one_line_refusal(code, err, "exists and purifylab did not write it", "--overwrite")
    assert (tmp_path / "existing.png").read_text() == "precious" and (tmp_path / "notes.json").read_text() == '{"mine": 1}'
    assert (tmp_path / "res.json").read_text() == "precious" == (tmp_path / "res.config.json").read_text()
    out = tmp_path / "o.png"
    for _ in range(2):  # purifylab's own output pair is replaced without --overwrite
        assert run_cli(["purify", str(image), "--purifier", "none", "--out", str(out)], capsys)[0] == 0
    assert run_cli(["purify", str(image), "--purifier", "none", "--out", str(tmp_path / "existing.png"), "--overwrite"], capsys)[0] == 0
    assert json.loads((tmp_path / "existing.json").read_text())["purifier"] == "none"


def test_outputs_that_cannot_be_written_are_refused_before_any_compute(tmp_path, xray_test_dir, capsys):
    image = tmp_path / "in.png"
    image.write_bytes(_grey_png())
    (tmp_path / "dj.json").mkdir()
    cases = {
        "cannot write --out /proc/x.png": ["purify", str(image), "--purifier", "ddpm", "--out", "/proc/x.png"],
        "cannot write --json /proc/r.json": ["evaluate", "--data", str(xray_test_dir), "--json", "/proc/r.json"],
        "cannot write --out /proc/s.json": ["data", "split", str(tmp_path), "--out", "/proc/s.json"],
        "its config": ["purify", str(image), "--purifier", "none", "--out", str(tmp_path / "dj.png")],
        "is a folder": ["bench", "--preset", "smoke", "--out", str(tmp_path / "dj.json")],
        "must end in .json": ["data", "split", str(tmp_path), "--out", str(tmp_path / "split.png")],
    }
    for message, args in cases.items():
        code, _, err = run_cli(args, capsys)
        _one_line_refusal(code, err, message)
    assert not (tmp_path / "dj.png").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["purify", "IMAGE", "--out", "OUT/o.png"],
        ["attack", "IMAGE", "--out", "OUT/o.png"],
        ["evaluate", "--data", "OUT"],
        ["certify", "--data", "OUT"],
        ["sweep", "tstar", "--purifier", "noise", "--values", "0.1"],
        ["data", "split", "OUT", "--out", "OUT/s.json"],
        ["train", "classifier", "--model", "student_cnn", "--out", "OUT/run"],
    ],
)
@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_seed_range_is_checked_the_same_way_everywhere(tmp_path, capsys, command, seed):
    image = tmp_path / "in.png"
    image.write_bytes(_grey_png())
    args = [str(image) if arg == "IMAGE" else arg.replace("OUT", str(tmp_path)) for arg in command]
    code, _, err = run_cli([*args, "--seed", seed], capsys)
    assert code == 2 and err.strip() == f"error: --seed={seed} is outside the allowed range [0, 4294967295]"


def test_defense_refuses_explicit_options_it_would_override(xray_test_dir, capsys):
    cases = [
        ["evaluate", "--data", str(xray_test_dir), "--defense", "recommended", "--classifier", "vit"],
        ["evaluate", "--data", str(xray_test_dir), "--defense", "recommended", "--purifier", "ddpm"],
        ["certify", "--data", str(xray_test_dir), "--defense", "smoothing", "--sigma", "0.1"],
        ["certify", "--data", str(xray_test_dir), "--defense", "smoothing", "--classifier", "vit"],
    ]
    for args in cases:
        code, _, err = run_cli(args, capsys)
        _one_line_refusal(code, err, f"--defense {args[4]} sets {args[5]}", f"{args[5]} {args[6]} was given")


def test_classifier_and_data_with_other_classes_are_refused_before_inference(shared_data, xray_test_dir, tmp_path, capsys):
    mnist = shared_data / "mnist" / "t10k-images-idx3-ubyte.gz"
    evaluate = ["evaluate", "--limit", "2", "--data"]
    cases = {
        "classifier mnist_cnn answers 10 classes": [*evaluate, str(xray_test_dir), "--classifier", "mnist_cnn"],
        "classifier student_cnn answers 2 classes (NORMAL, PNEUMONIA), but --data": [*evaluate, str(mnist), "--classifier", "student_cnn"],
        "classifier cifar10_cnn answers 10 classes (airplane": [*evaluate, str(xray_test_dir), "--classifier", "cifar10_cnn", "--attack", "pgd"],
    }
    for message, args in cases.items():
        code, _, err = run_cli(args, capsys)
        _one_line_refusal(code, err, message)
    image = tmp_path / "in.png"
    image.write_bytes(_grey_png())
    code, _, err = run_cli(["attack", str(image), "--classifier", "mnist_cnn", "--steps", "1", "--out", str(tmp_path / "a.png")], capsys)
    _one_line_refusal(code, err, "but a chest X-ray has 2 (NORMAL, PNEUMONIA)")
    assert not (tmp_path / "a.png").exists()


def test_evaluate_split_reads_a_split_of_an_npz(shared_data, capsys):
    npz = str(shared_data / "pneumoniamnist_28" / "pneumoniamnist.npz")
    code, out, _ = run_cli(["evaluate", "--data", npz, "--split", "val", "--classifier", "student_cnn", "--limit", "2"], capsys)
    assert code == 0 and "split val  n 2" in out
    code, _, err = run_cli(["evaluate", "--data", npz, "--classifier", "student_cnn", "--limit", "2"], capsys)
    _one_line_refusal(code, err, "holds splits train, val; choose one with --split")


def test_certify_names_its_data_and_split_and_ignores_unrelated_json(xray_test_dir, tmp_path, capsys):
    (tmp_path / "broken.json").write_text("not json {")
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "other.json").write_text("[1, 2]")
    (tmp_path / "other.config.json").write_text("{}")
    args = ["certify", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--denoiser", "none", "--n", "8", "--n0", "2", "--alpha", "0.1"]
    code, out, err = run_cli([*args, "--limit", "1", "--json", str(tmp_path / "c.json")], capsys)
    assert code == 0, err
    assert "data ../shared/data/chest_xray_pneumonia/test split all  images 1" in out.splitlines()[0]
    # "n" named the images on one line and the noise draws on the next; the abstentions came as a raw JSON line
    assert "(sigma 0.25, noise draws 8, alpha 0.1; drawn on cpu)" in out and "abstained on 0 of 1 images" in out
    assert not any(line.startswith("{") for line in out.splitlines()), out
    curve = json.loads((tmp_path / "certified_curve.json").read_text())
    assert curve["certify_results"] == ["c.json"] and curve["provenance"]["weights"] == {}  # drawn from files, no network loaded
    (tmp_path / "mine.html").write_text("my page")
    (tmp_path / "certified_curve.html").write_text("my page")
    (tmp_path / "certified_curve.json").unlink()
    code, _, err = run_cli([*args, "--limit", "1", "--json", str(tmp_path / "c.json")], capsys)
    _one_line_refusal(code, err, "certified_curve.html exists and purifylab did not write it")


def test_serve_names_a_bad_host_or_a_busy_port(capsys):
    import socket

    code, _, err = run_cli(["serve", "--host", "not_a_host!!"], capsys)
    _one_line_refusal(code, err, "--host 'not_a_host!!' is not a valid address")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run_cli(["serve", "--port", str(port)], capsys)
    _one_line_refusal(code, err, f"port {port} is in use", "--port")


def test_train_checks_its_options_and_run_folder_up_front(tmp_path, capsys):
    train = ["train", "classifier", "--model", "student_cnn", "--preset", "tiny", "--no-progress", "--out", str(tmp_path / "run")]
    code, _, err = run_cli([*train, "--image-size", "7"], capsys)
    _one_line_refusal(code, err, "--image-size=7 is outside the allowed range")
    code, _, err = run_cli([*train, "--max-minutes", "-1"], capsys)
    _one_line_refusal(code, err, "--max-minutes must be > 0")
    (tmp_path / "run" / "checkpoint").mkdir(parents=True)
    code, _, err = run_cli(train, capsys)
    _one_line_refusal(code, err, "holds a training run", "--resume", "--overwrite")


def test_a_corrupt_model_card_is_one_line(tmp_path, xray_test_dir, capsys):
    import shutil

    from core.weights import WEIGHTS_DIR

    shutil.copy(WEIGHTS_DIR / "student_cnn.safetensors", tmp_path / "bad.safetensors")
    (tmp_path / "bad.json").write_text("{bad")
    code, _, err = run_cli(["evaluate", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--weights", str(tmp_path / "bad.safetensors")], capsys)
    _one_line_refusal(code, err, "bad.json is not readable JSON")


def test_small_sweep_and_bench_refusals(tmp_path, capsys):
    sweep = ["sweep", "tstar", "--purifier", "noise", "--values", "0.01", "--classifier", "student_cnn", "--limit", "2"]
    code, _, err = run_cli(["sweep", "nope", *sweep[2:]], capsys)
    _one_line_refusal(code, err, "sweep 'nope' is unknown; choose one of: depth, tstar")
    code, _, err = run_cli([*sweep, "--param", "t_star=0.9"], capsys)
    _one_line_refusal(code, err, "--param t_star is what the tstar sweep varies")
    code, _, err = run_cli(["bench", "--preset", "smoke", "--out", str(tmp_path / "b.json"), "--data", str(tmp_path / "missing")], capsys)
    _one_line_refusal(code, err, "does not exist")


def test_sweep_refuses_repeated_values_and_fractional_depths_in_one_line(xray_test_dir, tmp_path, capsys):
    """--values 0.02,0.02,0.1 printed the clean number under the attack column; --values 2.5 of a depth
    sweep is no blur level. Both are refused before any model is built."""
    outputs = ["--store", str(tmp_path / "s.sqlite"), "--out-dir", str(tmp_path / "out")]
    common = ["--classifier", "student_cnn", "--limit", "2", "--data", str(xray_test_dir), *outputs]
    code, _, err = run_cli(["sweep", "tstar", "--purifier", "noise", "--values", "0.02,0.02,0.1", *common], capsys)
    _one_line_refusal(code, err, "--values '0.02,0.02,0.1' repeats 0.02; give each value once")
    code, _, err = run_cli(["sweep", "depth", "--purifier", "cold_blur", "--values", "2,2.5", *common], capsys)
    _one_line_refusal(code, err, "depth values must be whole blur levels >= 1, got 2, 2.5")
    assert not (tmp_path / "s.sqlite").exists() and not (tmp_path / "out").exists()


def test_absent_classes_have_no_sensitivity():
    import numpy as np

    from core.metrics import classification_metrics

    metrics = classification_metrics(np.array([0, 0]), np.array([[0.9, 0.1], [0.8, 0.2]]), bootstrap=0)
    assert metrics.sensitivity == {"NORMAL": 1.0, "PNEUMONIA": None}


def test_a_wheel_without_the_repository_is_one_line_not_an_empty_lab(tmp_path, capsys, monkeypatch):
    """Installed from a wheel, core/ has no configs/, weights/ or assets/ beside it: say so once,
    rather than list every model as untrained and every preset as missing."""
    import core.paths

    monkeypatch.setattr(core.paths, "CONFIGS_DIR", tmp_path / "configs")
    code, out, err = run_cli(["presets"], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "pip install -e ." in err


def _in_a_fresh_process_with_weights(args: list[str], weights_dir, cwd) -> tuple[int, str, list[str]]:
    """(exit code, stderr, heavy modules imported) of main(args) in a new process whose shipped weights
    folder is `weights_dir`: a command that failed to refuse would write there, never into weights/."""
    code = (
        "import sys\nfrom core.cli import main\ntry:\n"
        f"    main({args!r})\n"
        "except SystemExit as exit:\n"
        "    print(exit.code, sorted(m for m in ('torch', 'diffusers') if m in sys.modules))"
    )
    env = {**os.environ, "PURIFYLAB_WEIGHTS": str(weights_dir), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    exit_code, _, heavy = done.stdout.strip().splitlines()[-1].partition(" ")
    return int(exit_code), done.stderr, heavy


def test_train_refuses_bad_names_numbers_and_outputs_before_torch_is_imported(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder.safetensors").mkdir()
    classifier = ["train", "classifier", "--model", "substitute", "--preset", "tiny", "--out", str(tmp_path / "run")]
    cases = {
        "unknown preset 'huge'": [[*classifier, "--preset", "huge"], ["train", "diffusion", "--preset", "huge"], ["train", "cold", "--preset", "huge"]],
        "--epochs must be >= 1, got 0": [[*classifier, "--epochs", "0"], ["train", "diffusion", "--epochs", "0"], ["train", "cold", "--epochs", "0"]],
        "--batch-size must be >= 1, got 0": [[*classifier, "--batch-size", "0"]],
        "--lr must be > 0, got -1.0": [[*classifier, "--lr", "-1"]],
        "--threads must be >= 1, got -1": [[*classifier, "--threads", "-1"]],
        "--threads must be >= 1, got 0": [[*classifier, "--threads", "0"]],
        "cannot write --out /proc/purifylab_x": [[*classifier, "--out", "/proc/purifylab_x"]],
        "is a file, not a folder": [[*classifier, "--out", str(tmp_path / "afile" / "sub")]],
        "is a folder": [["train", "diffusion", "--preset", "tiny", "--out", str(tmp_path / "d"), "--weights", str(tmp_path / "folder.safetensors")]],
        "must end in .safetensors": [["train", "cold", "--preset", "tiny", "--out", str(tmp_path / "c"), "--weights", str(tmp_path / "c.txt")]],
    }  # fmt: skip
    _assert_refused_before_torch(cases)
    assert not (tmp_path / "run").exists() and not (tmp_path / "d").exists()


def test_train_never_replaces_a_users_file_or_a_shipped_model(tmp_path, capsys):
    weights = tmp_path / "weights"  # the shipped folder, as the commands under test see it
    weights.mkdir()
    for name in ("substitute", "cold_unet"):
        (weights / f"{name}.safetensors").write_bytes(b"shipped")
        (weights / f"{name}.json").write_text('{"name": "shipped"}')
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("my notes")
    (run / "history.json").write_text("mine")
    (tmp_path / "mine.safetensors").write_text("precious")
    soup = tmp_path / "soup"
    soup.mkdir()
    (soup / "substitute.json").write_text("user notes")
    (soup / "substitute.safetensors").write_text("x")
    (tmp_path / "tiny_member.safetensors").write_text("x")
    (tmp_path / "tiny_member.json").write_text('{"training_config": {"preset": "tiny"}}')
    tiny_member = ["--weights", str(tmp_path / "tiny_member.safetensors")] * 2
    classifier = ["train", "classifier", "--model", "substitute", "--preset", "tiny", "--no-progress", "--device", "cpu"]
    cases = {
        "exists and purifylab did not write it": [
            [*classifier, "--out", str(run)],
            ["train", "diffusion", "--preset", "tiny", "--out", str(tmp_path / "d"), "--weights", str(tmp_path / "mine.safetensors")],
            ["train", "cold", "--preset", "tiny", "--out", str(tmp_path / "c"), "--weights", str(tmp_path / "mine.safetensors")],
            ["train", "soup", "--model", "substitute", "--weights", str(tmp_path / "mine.safetensors"), "--weights", str(tmp_path / "mine.safetensors"),
             "--out", str(soup)],
        ],
        "a --preset tiny test run must never replace a shipped model": [
            [*classifier, "--out", str(tmp_path / "s1"), "--ship"],
            ["train", "cold", "--preset", "tiny", "--out", str(tmp_path / "c"), "--weights", str(weights / "cold_unet.safetensors")],
            ["train", "soup", "--model", "substitute", *tiny_member, "--out", str(tmp_path / "soup2"), "--ship"],
        ],
        "is the shipped weights folder": [[*classifier, "--out", str(weights), "--ship", "--preset", "cpu"]],
    }  # fmt: skip
    for message, commands in cases.items():
        for args in commands:
            code, stderr, heavy = _in_a_fresh_process_with_weights(args, weights, tmp_path)
            assert code == 2 and heavy == "[]", (args, code, stderr)
            assert message in stderr and len(stderr.strip().splitlines()) == 1, (args, stderr)
    assert (run / "config.json").read_text() == "my notes" and (run / "history.json").read_text() == "mine"
    assert (tmp_path / "mine.safetensors").read_text() == "precious" and (soup / "substitute.json").read_text() == "user notes"
    assert all((weights / f"{name}.safetensors").read_bytes() == b"shipped" for name in ("substitute", "cold_unet"))
    assert sorted(path.name for path in weights.iterdir()) == ["cold_unet.json", "cold_unet.safetensors", "substitute.json", "substitute.safetensors"]


def test_an_output_folder_that_cannot_be_written_is_refused_before_the_compute(tmp_path, capsys):
    """The table was computed in full, then failed on mkdir with a traceback."""
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(["table", "quick", "--limit", "2", "--out-dir", str(tmp_path / "afile" / "sub")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "is a file, not a folder" in err


def test_certify_refuses_a_json_name_that_its_curve_would_overwrite(xray_test_dir, tmp_path, capsys):
    """--json certified_curve.json: the curve's config (certified_curve.json) replaced the result just computed."""
    args = ["certify", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--denoiser", "none", "--n", "8", "--n0", "2", "--limit", "1"]
    code, _, err = run_cli([*args, "--json", str(tmp_path / "certified_curve.json")], capsys)
    _one_line_refusal(code, err, "--json and the certify curve's config would both be written to", "certified_curve.json")
    assert list(tmp_path.iterdir()) == []


def test_a_denoisers_weights_card_may_not_be_its_runs_config(tmp_path):
    run = tmp_path / "run"
    cases = {
        "--weights' card and the run's config would both be written to": [
            ["train", "diffusion", "--preset", "tiny", "--out", str(run), "--weights", str(run / "config.safetensors")],
            ["train", "cold", "--preset", "tiny", "--out", str(run), "--weights", str(run / "config.safetensors")],
        ]
    }
    _assert_refused_before_torch(cases)
    assert not run.exists()


def test_usage_errors_are_one_line_in_clicks_words_and_help_is_unchanged(capsys):
    cases = {
        "error: purifylab evaluate: Missing option '--data'.": ["evaluate"],
        "error: purifylab sweep: No such option: --no-progress": ["sweep", "tstar", "--no-progress"],
        "error: purifylab evaluate: Invalid value for '--limit'": ["evaluate", "--data", "x", "--limit", "abc"],
        "error: purifylab: No such command 'nope'.": ["nope"],
        "error: purifylab data split: Missing argument 'path'.": ["data", "split"],
    }
    for message, args in cases.items():
        with pytest.raises(SystemExit) as exit_info:
            main(args, prog_name="purifylab")
        out, err = capsys.readouterr()
        assert exit_info.value.code == 2 and out == "" and len(err.strip().splitlines()) == 1 and err.startswith(message), (args, err)
    code, out, _ = run_cli(["evaluate", "--help"], capsys)
    assert code == 0 and "Usage: " in out and "--attack-batch-size" in out
    code, out, _ = run_cli([], capsys)  # no command: the help, as before
    assert code == 2 and "Usage: " in out and "evaluate" in out


def test_every_commands_summary_is_a_whole_sentence():
    """The top-level --help shows each command's first docstring line: it broke evaluate's and certify's mid-sentence."""
    import typer.main

    from core.cli import _register_commands, app

    _register_commands()
    top = typer.main.get_command(app)
    for name, command in top.commands.items():
        summary = (command.help or "").strip().splitlines()[0]
        assert summary.endswith("."), (name, summary)


def test_defense_refuses_param_and_weights_and_its_result_names_it(xray_test_dir, tmp_path, capsys):
    weights = tmp_path / "w.safetensors"
    for option, value in (("--param", "sigma=0.9"), ("--weights", str(weights))):
        code, _, err = run_cli(["evaluate", "--data", str(xray_test_dir), "--defense", "smoothing", option, value], capsys)
        _one_line_refusal(code, err, "--defense smoothing fixes its classifier and purifier", f"{option} was given")
    out = tmp_path / "smoothing.json"
    args = ["evaluate", "--data", str(xray_test_dir), "--defense", "smoothing", "--limit", "2", "--threads", "1"]
    code, stdout, err = run_cli([*args, "--json", str(out)], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "smoothing.config.json").read_text())
    assert config["defense"] == "smoothing" == json.loads(out.read_text())["defense"] and "defense smoothing" in stdout.splitlines()[0]
    assert config["purifier_params"] == {"sigma": 0.5}  # the resolved value, not the string "0.5"


def test_a_collapsed_auroc_interval_is_not_printed_as_certainty(xray_test_dir, tmp_path, capsys):
    """On 8 X-rays resnet separates the classes perfectly: every bootstrap resample reads AUROC 1."""
    code, out, err = run_cli(["evaluate", "--data", str(xray_test_dir), "--classifier", "resnet", "--limit", "8", "--json", str(tmp_path / "e.json")], capsys)
    assert code == 0, err
    low, high = json.loads((tmp_path / "e.json").read_text())["confidence_95"]["auroc"]
    line = next(row for row in out.splitlines() if row.startswith("auroc"))
    assert ("bootstrap collapsed" in line) == (low == high)


def test_evaluate_stores_the_purifiers_resolved_parameters(xray_test_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["evaluate", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--purifier", "ddpm", "--param", "t_star=0.02", "--limit", "1"]
    code, _, err = run_cli([*args, "--threads", "1", "--json", str(out)], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "r.config.json").read_text())["purifier_params"] == {"denoiser": "ddpm_unet", "t_star": 0.02, "steps": 10}


def test_evaluate_under_attack_labels_the_clean_block_and_gives_robust_intervals(xray_test_dir, capsys):
    args = ["evaluate", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--limit", "4", "--attack", "fgsm", "--eps", "0.03", "--threads", "1"]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    names = [line.split()[0] for line in out.splitlines()]
    assert {"clean_accuracy", "clean_balanced_accuracy", "clean_auroc"} <= set(names) and "accuracy" not in names
    attack = names.index("attack")
    robust = out.splitlines()[attack + 1 : attack + 3]
    assert [line.split()[0] for line in robust] == ["robust_accuracy", "robust_balanced_accuracy"]
    assert all(re.search(r"\d\.\d{4}  \[\d\.\d{4}, \d\.\d{4}\]", line) for line in robust), robust


def test_sweep_and_table_on_a_training_folder_read_its_val_part_as_evaluate_does(xray_train_dir, xray_test_dir, tmp_path, capsys):
    sweep = ["sweep", "tstar", "--purifier", "noise", "--values", "0.1", "--classifier", "student_cnn", "--limit", "2", "--threads", "1"]
    for data, split in ((xray_train_dir, "val"), (xray_test_dir, "all")):
        out = tmp_path / f"sweep-{split}"
        code, stdout, err = run_cli([*sweep, "--data", str(data), "--store", str(tmp_path / "s.sqlite"), "--out-dir", str(out)], capsys)
        assert code == 0 and f"split {split}" in stdout.splitlines()[0], err
    preset = tmp_path / "clean.yaml"
    preset.write_text(
        "title: clean only\nlimit: 2\nbootstrap: 0\ntables:\n  - name: t\n    caption: c\n    classifiers: [{name: student_cnn}]\n"
        "    rows: [{label: Clean}]\n    columns: [{label: Undefended, purifier: none}]\n"
    )
    table = ["table", str(preset), "--data", str(xray_train_dir), "--threads", "1"]
    code, _, err = run_cli([*table, "--store", str(tmp_path / "t.sqlite"), "--out-dir", str(tmp_path / "t")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "t" / "clean.config.json").read_text())["split"] == "val"


def test_flags_are_named_as_typed_and_eot_needs_an_attack(xray_test_dir, capsys):
    sweep = ["sweep", "tstar", "--purifier", "noise", "--values", "0.1", "--classifier", "student_cnn"]
    cases = {
        "--attack-batch-size must be >= 1, got 0": ["evaluate", "--data", str(xray_test_dir), "--attack-batch-size", "0"],
        "--batch-size must be >= 1, got 0": ["evaluate", "--data", str(xray_test_dir), "--batch-size", "0"],
        "--eot must be >= 1, got 0": ["table", "quick", "--eot", "0"],
        "--redraws must be >= 1, got 0": [*sweep, "--redraws", "0"],
        "--purify-batch must be >= 1, got 0": ["bench", "--purify-batch", "0"],
        "--chain-eot must be >= 1, got 0": ["bench", "--chain-eot", "0"],
        "--eot 3 counts purifier draws per attack step, but no --attack was given": [*sweep, "--eot", "3"],
        "--eot 3 does not apply to --threat grey": [*sweep, "--eot", "3", "--attack", "fgsm"],
        "--eot 2 does not apply to --threat bpda": ["evaluate", "--data", str(xray_test_dir), "--attack", "fgsm", "--threat", "bpda", "--eot", "2"],
    }
    for message, args in cases.items():
        code, _, err = run_cli(args, capsys)
        _one_line_refusal(code, err, message)
    code, _, err = run_cli(["evaluate", "--data", str(xray_test_dir), "--eot", "3"], capsys)
    _one_line_refusal(code, err, "no --attack was given")


def test_listings_come_from_the_registries_and_align_their_columns(capsys):
    from core.attacks import ATTACKS, THREAT_MODELS
    from core.defense import list_defenses
    from core.models import list_classifiers
    from core.purifiers import PURIFIERS

    registered = {"attacks": ATTACKS.names(), "threats": list(THREAT_MODELS), "defenses": list_defenses(), "classifiers": list(list_classifiers())}
    for command, names in registered.items():
        code, out, _ = run_cli([command, "--json"], capsys)
        assert code == 0 and [row["name"] for row in json.loads(out)] == names, command
        code, out, _ = run_cli([command], capsys)
        lines = out.splitlines()
        starts = {len(line) - len(line[len(name) :].lstrip()) for line, name in zip(lines, names, strict=True)}
        assert code == 0 and len(starts) == 1, (command, out)  # the second column starts at one offset
    code, out, _ = run_cli(["purifiers", "--json"], capsys)
    assert {row["name"]: row["sweeps"] for row in json.loads(out)} == {name: sorted(PURIFIERS.get(name).sweeps) for name in PURIFIERS.names()}


def test_attack_settings_the_attack_would_ignore_are_refused_in_one_line(xray_test_dir, tmp_path, capsys):
    """--attack eotpgd ran plain PGD under EOT's name, and --eot-iter / --restarts did not exist."""
    good = tmp_path / "good.png"
    good.write_bytes(_grey_png())
    evaluate = ["evaluate", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--limit", "1", "--threads", "1"]
    attack = ["attack", str(good), "--classifier", "student_cnn", "--out", str(tmp_path / "o.png")]
    cases = {
        "--attack eotpgd with --eot-iter 1 is plain PGD": [[*evaluate, "--attack", "eotpgd"], [*attack, "--attack", "eotpgd"]],
        "restarts=2 does not apply to 'fgsm'": [[*evaluate, "--attack", "fgsm", "--restarts", "2"]],
        "eot_iter=2 does not apply to 'pgd'": [[*evaluate, "--attack", "pgd", "--eot-iter", "2"], [*attack, "--eot-iter", "2"]],
        "--eot-iter 2 sets the attack, but no --attack was given": [[*evaluate, "--eot-iter", "2"]],
        "--restarts 3 sets the attack, but no --attack was given": [[*evaluate, "--restarts", "3"]],
    }
    for message, commands in cases.items():
        for args in commands:
            code, _, err = run_cli(args, capsys)
            _one_line_refusal(code, err, message)
    assert not (tmp_path / "o.png").exists()


def test_bpda_eot_with_one_draw_is_refused_before_the_model_loads(xray_test_dir, tmp_path):
    """`attack --threat bpda-eot` built the model and only then refused eot 1; evaluate imported the
    model's libraries first. The threat's own rule answers now, before either."""
    good = tmp_path / "good.png"
    good.write_bytes(_grey_png())
    commands = [
        ["attack", str(good), "--threat", "bpda-eot", "--out", str(tmp_path / "o.png")],
        ["evaluate", "--data", str(xray_test_dir), "--attack", "fgsm", "--threat", "bpda-eot"],
    ]
    for args in commands:
        code = (
            "import sys\nfrom core.cli import main\ntry:\n"
            f"    main({args!r})\n"
            "except SystemExit as exit:\n"
            "    print(exit.code, sorted(m for m in ('timm', 'diffusers') if m in sys.modules))"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.stdout.strip().splitlines()[-1] == "2 []", (args, done.stdout, done.stderr)
        assert done.stderr.strip() == "error: threat 'bpda-eot' needs eot >= 2 purifier draws (got 1); use 'bpda' for one", args


def test_an_unusable_store_is_refused_before_torch_is_imported(tmp_path):
    """--store was checked only when the store opened, after torch (6-33 s); under a file it said "[Errno 17] File exists"."""
    (tmp_path / "afile").write_text("x")
    out = ["--out-dir", str(tmp_path / "out")]
    sweep = ["sweep", "tstar", "--purifier", "noise", "--values", "0.01", *out]
    cases = {
        f"{tmp_path / 'afile'} is a file, not a folder": [["table", "quick", "--store", str(tmp_path / "afile" / "s.sqlite"), *out],
                                                          [*sweep, "--store", str(tmp_path / "afile" / "s.sqlite")]],
        "is not an SQLite database": [["table", "quick", "--store", str(tmp_path / "afile"), *out]],
        "is a folder; name a file": [[*sweep, "--store", str(tmp_path)]],
    }  # fmt: skip
    _assert_refused_before_torch(cases)
    assert not (tmp_path / "out").exists()


def test_a_full_disk_leaves_no_half_written_certify_curve_and_the_rerun_runs(xray_test_dir, tmp_path, capsys):
    """On a full disk certify left an empty certified_curve.html and a traceback; the rerun was then
    refused: "certified_curve.html exists and purifylab did not write it"."""
    from full_disk import run_on_a_full_disk

    args = ["certify", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--denoiser", "none", "--n", "8", "--n0", "2", "--limit", "1"]
    code, _, err = run_cli([*args, "--json", str(tmp_path / "c.json")], capsys)
    assert code == 0, err
    (tmp_path / "certified_curve.html").unlink()
    (tmp_path / "certified_curve.json").unlink()
    done = run_on_a_full_disk(2000, f"from pathlib import Path\nfrom core.cli.certify_commands import write_curve\nwrite_curve(Path({str(tmp_path)!r}))")
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [f"error: cannot write {tmp_path / 'certified_curve.html'}: File too large"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["c.config.json", "c.json"]
    code, _, err = run_cli([*args, "--json", str(tmp_path / "c.json")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "certified_curve.json").read_text())["certify_results"] == ["c.json"]


def _interrupted(args: list[str], capsys, after_s: float = 5.0) -> tuple[int, list[str]]:
    """(exit code, stderr lines without progress bars) of main(args) given Ctrl-C `after_s` into it."""
    import signal
    import threading

    handler = signal.signal(signal.SIGINT, signal.default_int_handler)  # a background shell's pytest ignores SIGINT
    ctrl_c = threading.Timer(after_s, os.kill, (os.getpid(), signal.SIGINT))
    ctrl_c.start()
    try:
        code, _, err = run_cli(args, capsys)
    finally:
        ctrl_c.cancel()
        signal.signal(signal.SIGINT, handler)
    return code, [line for line in err.splitlines() if line.strip() and not _PROGRESS.search(line)]


def test_ctrl_c_says_so_in_one_line_and_how_to_resume_where_a_command_can(xray_test_dir, xray_train_dir, tmp_path, capsys):
    """typer turns Ctrl-C into a silent exit 130: certify and train printed nothing, not even --resume."""
    certify = ["certify", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--denoiser", "none", "--n", "100000000", "--batch-size", "1"]
    code, lines = _interrupted([*certify, "--n0", "2", "--limit", "1", "--json", str(tmp_path / "c.json")], capsys)
    assert (code, lines[-1:]) == (130, ["interrupted"]), lines
    assert list(tmp_path.iterdir()) == []
    train = ["train", "classifier", "--model", "student_cnn", "--preset", "tiny", "--epochs", "100000", "--data", str(xray_train_dir)]
    code, lines = _interrupted([*train, "--no-progress", "--out", str(tmp_path / "run")], capsys)
    assert (code, lines[-1:]) == (130, ["interrupted: rerun the same command with --resume to continue from its last checkpoint"]), lines


def test_evaluate_report_prints_the_purifier_settings_and_the_attack_budget(xray_test_dir, capsys):
    """blur:sigma=3 and blur:sigma=0.5 printed the same header 'purifier blur' (balanced accuracy 0.5 vs 1.0),
    and the attack line left out a budget of several restarts."""
    evaluate = ["evaluate", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--limit", "2", "--threads", "1"]
    headers = []
    for sigma in ("3", "0.5"):
        code, out, err = run_cli([*evaluate, "--purifier", f"blur:sigma={sigma}"], capsys)
        assert code == 0, err
        headers.append(out.splitlines()[0])
    assert "purifier blur:sigma=3.0 " in headers[0] and "purifier blur:sigma=0.5 " in headers[1], headers
    code, out, err = run_cli([*evaluate, "--attack", "pgd", "--steps", "1", "--restarts", "2"], capsys)
    assert code == 0, err
    assert "attack pgd linf eps=0.03 steps=1 restarts=2  threat grey" in out, out


def test_evaluate_prints_a_rate_over_the_seconds_beside_it(xray_test_dir, tmp_path, capsys):
    """Under an attack the rate was timed on the attack pass only: 'seconds 19.46 (0.8 images/s)' for 8 images."""
    out = tmp_path / "r.json"
    args = ["evaluate", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--limit", "4", "--threads", "1", "--attack", "pgd", "--steps", "2"]
    code, _, err = run_cli([*args, "--purifier", "blur:sigma=1", "--json", str(out)], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["images_per_second"] == pytest.approx(4 / result["seconds"], rel=0.02), result  # seconds is rounded to ms


def test_sweep_title_names_the_fixed_purifier_settings(xray_test_dir, tmp_path, capsys):
    """`sweep ... --param` was titled as the purifier at its defaults."""
    outputs = ["--store", str(tmp_path / "s.sqlite"), "--out-dir", str(tmp_path / "out")]
    args = ["sweep", "depth", "--purifier", "cold_recon", "--values", "1", "--param", "steps=1", "--classifier", "student_cnn", "--limit", "2"]
    code, out, err = run_cli([*args, "--data", str(xray_test_dir), "--threads", "1", *outputs], capsys)
    assert code == 0, err
    assert "# Accuracy vs depth of cold_recon in front of student_cnn; cold_recon:steps=1" in out, out


def test_attack_settings_without_an_attack_are_refused(xray_test_dir, tmp_path, capsys):
    """--threat white --eps 0.3 with no --attack exited 0 and recorded 'threat white' beside a clean-only figure."""
    evaluate = ["evaluate", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--limit", "2"]
    for option, value in (("--threat", "white"), ("--eps", "0.3"), ("--norm", "l2"), ("--steps", "5"), ("--redraws", "2")):
        code, _, err = run_cli([*evaluate, option, value], capsys)
        _one_line_refusal(code, err, f"{option} {value} sets the attack, but no --attack was given")
    sweep = ["sweep", "depth", "--purifier", "cold_blur", "--values", "2", "--classifier", "student_cnn", "--limit", "2"]
    code, _, err = run_cli([*sweep, "--threat", "white", "--store", str(tmp_path / "s.sqlite"), "--out-dir", str(tmp_path / "out")], capsys)
    _one_line_refusal(code, err, "--threat white sets the attack, but no --attack was given")
    assert not (tmp_path / "s.sqlite").exists()


def test_a_fixed_schedule_attack_refuses_steps(xray_test_dir, capsys):
    """--attack autoattack --steps 5 ran AutoAttack's own schedule while the JSON recorded steps 5."""
    args = ["evaluate", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--limit", "2", "--attack", "autoattack", "--steps", "5"]
    code, _, err = run_cli(args, capsys)
    _one_line_refusal(code, err, "--attack autoattack ignores --steps 5", "drop --steps")


def test_a_val_or_train_split_of_the_reporting_cohort_is_refused(xray_test_dir, capsys):
    """--split val on the test cohort carved a 45-image 'val' out of test/ and printed 'split val'."""
    for command in ("evaluate", "certify"):
        for split in ("val", "train"):
            code, _, err = run_cli([command, "--data", str(xray_test_dir), "--classifier", "student_cnn", "--limit", "2", "--split", split], capsys)
            _one_line_refusal(code, err, f"--split {split} would carve a '{split}' out of the reporting cohort", "--split all")


def test_a_val_preset_on_the_reporting_cohort_is_refused(xray_test_dir, tmp_path, capsys):
    """`table defense-selection --data <test>` carved its validation split out of the test cohort and computed on it."""
    store = tmp_path / "s.sqlite"
    args = ["table", "defense-selection", "--data", str(xray_test_dir), "--limit", "2", "--store", str(store), "--out-dir", str(tmp_path / "out")]
    code, _, err = run_cli(args, capsys)
    _one_line_refusal(code, err, "--split val would carve a 'val' out of the reporting cohort")
    assert not store.exists()


def test_attack_help_lists_only_the_threats_it_accepts(capsys):
    code, out, _ = run_cli(["attack", "--help"], capsys)
    threat_help = " ".join(out[out.index("--threat") :].split())[:120]
    assert code == 0 and "grey | bpda | bpda-eot | white" in threat_help and "grey | transfer" not in threat_help, threat_help


def test_a_missing_image_is_named(tmp_path, capsys):
    missing = tmp_path / "nope.png"
    code, _, err = run_cli(["attack", str(missing), "--classifier", "student_cnn", "--out", str(tmp_path / "x.png")], capsys)
    _one_line_refusal(code, err, f"image file {missing} not found")


def test_purify_names_a_denoiser_chain_on_stderr_and_keeps_stdout_json(xray_paths, tmp_path, capsys):
    """diffdefense_paper ran 200 s with nothing printed; a purifier of more than one denoiser call now says it started."""
    image = str(xray_paths["NORMAL"][0])
    args = ["purify", image, "--purifier", "ddpm", "--param", "steps=2", "--threads", "1", "--out", str(tmp_path / "d.png")]
    code, out, err = run_cli(args, capsys)
    config = json.loads(out)
    assert code == 0 and config["nfe"] == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("purifying with ddpm:") and f"t_star={config['t_star']}" in line and line.endswith(",steps=2: 2 denoiser calls")
    code, out, err = run_cli(["purify", image, "--purifier", "blur", "--out", str(tmp_path / "b.png")], capsys)
    assert code == 0 and json.loads(out)["nfe"] == 0 and err == ""  # a model-free purifier is instant: nothing to announce


def test_purify_applies_threads(xray_paths, tmp_path, capsys):
    import torch

    try:
        code, out, _ = run_cli(["purify", str(xray_paths["NORMAL"][0]), "--purifier", "none", "--threads", "2", "--out", str(tmp_path / "o.png")], capsys)
        assert code == 0 and json.loads(out)["purifier"] == "none" and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)  # conftest's
    code, _, err = run_cli(["purify", str(xray_paths["NORMAL"][0]), "--threads", "0", "--out", str(tmp_path / "z.png")], capsys)
    _one_line_refusal(code, err, "--threads must be >= 1")


def test_clean_evaluate_shows_the_batch_progress_of_the_attacked_path(shared_data, capsys):
    npz = str(shared_data / "pneumoniamnist_28" / "pneumoniamnist.npz")
    args = ["evaluate", "--data", npz, "--split", "val", "--classifier", "student_cnn", "--limit", "2", "--batch-size", "1", "--threads", "1"]
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "split val  n 2" in out and "batches" in err and "batches" not in out


def test_certify_prints_its_radius_units_and_each_figures_95_interval(xray_test_dir, tmp_path, capsys):
    """The table read "L2 radius  certified acc." with no scale and no interval, while its JSON had the units."""
    args = ["certify", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--denoiser", "none", "--n", "8", "--n0", "2", "--alpha", "0.1"]
    code, out, err = run_cli([*args, "--limit", "2", "--json", str(tmp_path / "c.json")], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "c.json").read_text())
    lines = out.splitlines()
    assert lines[1].startswith(f"L2 radius: {result['radius_units']}  (sigma 0.25") and "128 px input" in lines[1]
    assert "certified acc. [95 % CI]" in lines[2] and "certified balanced acc. [95 % CI, Bonferroni" in lines[2]
    intervals = result["confidence_95"]
    for line, (radius, value) in zip(lines[3:], result["certified_accuracy"].items(), strict=False):
        (low, high), (balanced_low, balanced_high) = intervals["certified_accuracy"][radius], intervals["certified_balanced_accuracy"][radius]
        balanced = result["certified_balanced_accuracy"][radius]
        assert line.split() == [radius, f"{value:.4f}", f"[{low:.4f},", f"{high:.4f}]", f"{balanced:.4f}", f"[{balanced_low:.4f},", f"{balanced_high:.4f}]"]
    assert len(intervals["certified_accuracy"]) == len(result["certified_accuracy"]) == len(lines[3:-2])


def test_a_sweep_on_the_reporting_cohort_says_its_curve_is_no_place_to_choose(xray_train_dir, xray_test_dir, tmp_path, capsys):
    """`purifylab sweep` read the test cohort by default and said nothing, though t* and depth are chosen
    from sweeps and choices are made on the training folder's val."""
    sweep = ["sweep", "tstar", "--purifier", "noise", "--values", "0.1", "--classifier", "student_cnn", "--limit", "2", "--threads", "1"]
    sweep += ["--store", str(tmp_path / "s.sqlite")]
    advice = f"its curve is a reported figure, not a way to choose; choose t_star on --data {xray_train_dir} --split val"
    for data in ([], ["--data", str(xray_test_dir)]):  # the default data, and the cohort named
        code, _, err = run_cli([*sweep, *data, "--out-dir", str(tmp_path / f"test-{len(data)}")], capsys)
        assert code == 0, err
        assert [line for line in err.splitlines() if line.startswith("warning: ")] == [
            f"warning: this sweep reads the reporting cohort {xray_test_dir}, so {advice}"
        ], err
    code, _, err = run_cli([*sweep, "--data", str(xray_train_dir), "--out-dir", str(tmp_path / "val")], capsys)
    assert code == 0 and "warning: " not in err, err


def test_a_mistyped_classifier_attack_or_purifier_is_refused_before_torch_is_imported(tmp_path):
    """Names were checked only in registries whose packages import torch, timm and torchattacks (9-15 s, 0.9 GB);
    they are declared without them now, as --defense names are."""
    for label in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "data" / label).mkdir(parents=True)
        (tmp_path / "data" / label / "a.png").write_bytes(_grey_png())
    (tmp_path / "good.png").write_bytes(_grey_png())
    data, good, out = str(tmp_path / "data"), str(tmp_path / "good.png"), str(tmp_path / "o.png")
    cases = {
        "unknown classifier 'nosuch'; choose one of: ": [["evaluate", "--data", data, "--classifier", "nosuch"],
                                                         ["attack", good, "--classifier", "nosuch", "--out", out],
                                                         ["certify", "--data", data, "--classifier", "nosuch"]],
        "unknown attack 'nosuch'; choose one of: ": [["evaluate", "--data", data, "--attack", "nosuch"], ["attack", good, "--attack", "nosuch", "--out", out]],
        "unknown purifier 'nosuch'; choose one of: ": [["evaluate", "--data", data, "--purifier", "nosuch"],
                                                       ["purify", good, "--purifier", "nosuch", "--out", out],
                                                       ["attack", good, "--purifier", "nosuch:t_star=0.1", "--out", out]],
    }  # fmt: skip
    _assert_refused_before_torch(cases)


def _listing_in_a_fresh_process(command: str, watched: tuple[str, ...]) -> tuple[list[dict], list[str]]:
    """(the rows `purifylab COMMAND --json` prints, which of `watched` it imported), in a new process."""
    code = (
        "import json, sys\nfrom core.cli import main\ntry:\n"
        f"    main([{command!r}, '--json'])\n"
        "except SystemExit as exit:\n"
        f"    print(json.dumps([exit.code, sorted(m for m in {watched!r} if m in sys.modules)]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    *rows, outcome = done.stdout.strip().splitlines()
    exit_code, imported = json.loads(outcome)
    assert exit_code == 0, done.stderr
    return json.loads("\n".join(rows)), imported


def test_classifier_attack_and_threat_listings_import_no_torch_and_match_the_full_registries():
    """`classifiers`, `attacks` and `threats` imported torch, timm and torchattacks (10-14 s) to print names
    and descriptions; what they print now is what the registries hold once every builder is imported."""
    printed = {}
    for command in ("classifiers", "attacks", "threats"):
        printed[command], imported = _listing_in_a_fresh_process(command, ("torch", "timm", "torchattacks"))
        assert imported == [], (command, imported)
    import core.attacks.library
    import core.attacks.threats
    import core.models.vit  # noqa: F401  (the builders' modules: they add no name of their own)
    from core.attacks import ATTACKS, THREAT_MODELS
    from core.models import list_classifiers

    assert {row["name"]: row["description"] for row in printed["classifiers"]} == list_classifiers()
    assert {row["name"]: row["description"] for row in printed["attacks"]} == ATTACKS.describe()
    assert {row["name"]: row["description"] for row in printed["threats"]} == {name: threat.describe() for name, threat in THREAT_MODELS.items()}


def test_the_purifier_listing_prices_each_purifier_without_loading_its_weights():
    """`purifiers` built every purifier (diffusers imported, the UNets loaded and hashed) to print its NFE;
    `planned_calls` gives the same count from the classes and the cards."""
    rows, imported = _listing_in_a_fresh_process("purifiers", ("diffusers", "safetensors"))
    assert imported == []
    from core.errors import PurifyLabError
    from core.purifiers import create_purifier

    registered = subprocess.run(  # a fresh registry: test modules register purifiers of their own in this process
        [sys.executable, "-c", "import json; from core.purifiers import list_purifiers; print(json.dumps(list(list_purifiers())))"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert [row["name"] for row in rows] == json.loads(registered.stdout)
    for row in rows:
        try:
            built = create_purifier(row["name"]).nfe()
        except PurifyLabError:  # weights not shipped: neither way has a count
            built = None
        assert row["nfe"] == built, row


def test_another_tools_json_beside_an_output_is_kept_unless_overwrite(tmp_path, capsys):
    """annotated.png and its labelme annotated.json were both replaced by `purify --out annotated.png`:
    any JSON object beside an output counted as purifylab's config. Only one carrying purifylab's
    provenance does; a purifylab run's own pair is still replaced, and --overwrite replaces anything."""
    image = tmp_path / "in.png"
    image.write_bytes(_grey_png())
    annotated, annotation = tmp_path / "annotated.png", tmp_path / "annotated.json"
    annotated.write_bytes(_grey_png() + b"mine")
    labelme = '{"version": "5.0", "shapes": [{"label": "nodule", "points": [[1, 2], [3, 4]]}], "imagePath": "annotated.png"}'
    annotation.write_text(labelme)
    (tmp_path / "res.json").write_text('{"mine": 1}')
    (tmp_path / "res.config.json").write_text('{"provenance": {"software": {"numpy": "2.0"}}}')  # some other tool's provenance
    cases = [
        ["purify", str(image), "--purifier", "none", "--out", str(annotated)],
        ["attack", str(image), "--classifier", "student_cnn", "--steps", "1", "--out", str(annotated)],
        ["data", "split", str(tmp_path), "--out", str(tmp_path / "res.json")],
    ]
    for args in cases:
        code, _, err = run_cli(args, capsys)
        _one_line_refusal(code, err, "exists and purifylab did not write it", "carries no purifylab provenance", "--overwrite")
    assert annotated.read_bytes() == _grey_png() + b"mine" and annotation.read_text() == labelme
    assert (tmp_path / "res.json").read_text() == '{"mine": 1}'
    out = tmp_path / "o.png"
    for _ in range(2):  # purifylab's own pair, recognised by its provenance
        code, _, err = run_cli(["purify", str(image), "--purifier", "none", "--out", str(out)], capsys)
        assert code == 0, err
    assert "purifylab" in json.loads(out.with_suffix(".json").read_text())["provenance"]["software"]
    assert run_cli(["purify", str(image), "--purifier", "none", "--out", str(annotated), "--overwrite"], capsys)[0] == 0
    assert json.loads(annotation.read_text())["purifier"] == "none"


def test_limit_split_and_split_fractions_are_refused_in_the_flags_name_before_torch_is_imported(tmp_path):
    """--limit 0 and --split bogus were refused 6-10 s later, after torch and the model, as 'limit must be a
    positive number'; data split --val 2 only after the whole folder was decoded, as 'fractions must be ...'."""
    for label in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "data" / label).mkdir(parents=True)
        (tmp_path / "data" / label / "a.png").write_bytes(_grey_png())
    data, out = str(tmp_path / "data"), str(tmp_path / "split.json")
    sweep = ["sweep", "tstar", "--purifier", "ddpm", "--values", "0.1", "--data", data, "--out-dir", str(tmp_path / "sweep")]
    split = ["data", "split", data, "--out", out]
    cases = {
        "--limit must be >= 1, got 0": [["evaluate", "--data", data, "--limit", "0"], ["certify", "--data", data, "--limit", "0"],
                                        ["table", "quick", "--limit", "0"], [*sweep, "--limit", "0"], ["data", "describe", data, "--limit", "0"]],
        "--limit must be >= 1, got -3": [["evaluate", "--data", data, "--limit", "-3"]],
        "--split bogus is unknown; choose one of: train, val, test, all": [["evaluate", "--data", data, "--split", "bogus"],
                                                                           ["certify", "--data", data, "--split", "bogus"], [*sweep, "--split", "bogus"]],
        "--val must be in [0, 1), got 2.0": [[*split, "--val", "2"]],
        "--val must be in [0, 1), got nan": [[*split, "--val", "nan"]],
        "--test must be in [0, 1), got -0.1": [[*split, "--test", "-0.1"]],
        "--val 0.5 and --test 0.6 leave no images to train on": [[*split, "--val", "0.5", "--test", "0.6"]],
    }  # fmt: skip
    _assert_refused_before_torch(cases)
    assert not (tmp_path / "split.json").exists()


def test_train_refuses_mistyped_names_and_out_of_range_values_in_the_flags_name_before_torch_is_imported(tmp_path):
    """A mistyped --model, --init-from, --distill-from or --purified-half name, and --smoothing-sigma 5, were
    refused only after torch and timm had loaded (4-10 s), the numbers by their config field's name."""
    classifier = ["train", "classifier", "--model", "substitute", "--preset", "tiny", "--out", str(tmp_path / "run")]
    soup = ["train", "soup", "--model", "resnett", "--weights", str(tmp_path / "a"), "--weights", str(tmp_path / "b"), "--out", str(tmp_path / "soup")]
    cases = {
        "--model: unknown classifier 'resnett'; choose one of: ": [["train", "classifier", "--model", "resnett", "--preset", "tiny"],
                                                                   ["train", "calibrate", "--model", "resnett"], soup],
        "--init-from: unknown classifier 'vitt'; choose one of: ": [[*classifier, "--init-from", "vitt"]],
        "--distill-from: unknown classifier 'vitt'; choose one of: ": [[*classifier, "--distill-from", "vitt"]],
        "--purified-half: unknown purifier 'ddimm'; choose one of: ": [[*classifier, "--purified-half", "ddimm"],
                                                                        [*classifier, "--purified-half", "ddimm:t_star=0.1"]],
        "--smoothing-sigma must be in (0, 1], got 5.0": [[*classifier, "--smoothing-sigma", "5"]],
        "--smoothing-sigma must be in (0, 1], got 0.0": [[*classifier, "--smoothing-sigma", "0"]],
        "--noise-augment must be in (0, 0.5], got 2.0": [[*classifier, "--noise-augment", "2"]],
        "--temperature must be > 0, got -1.0": [[*classifier, "--temperature", "-1"]],
        "--temperature must be > 0, got nan": [[*classifier, "--temperature", "nan"]],
    }  # fmt: skip
    _assert_refused_before_torch(cases)
    assert not (tmp_path / "run").exists() and not (tmp_path / "soup").exists()


def test_purified_half_settings_are_refused_in_the_flags_name_before_timm_and_the_data_load(tmp_path):
    """A purifier's settings are typed by its config, which torch defines; a mistyped one is still refused
    before the trainer imports timm, not after it (and the model, and the data)."""
    args = ["train", "classifier", "--model", "substitute", "--preset", "tiny", "--out", str(tmp_path / "run"), "--purified-half", "ddim:t_sta=0.1"]
    code = f"import sys\nfrom core.cli import main\ntry:\n    main({args!r})\nexcept SystemExit as exit:\n    print(exit.code, 'timm' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "2 False", done.stderr
    _one_line_refusal(2, done.stderr, "--purified-half ddim:t_sta=0.1: unknown parameter 't_sta' for this purifier; allowed: ")
    assert not (tmp_path / "run").exists()


def test_a_purified_images_config_names_the_device_its_noise_was_drawn_on(xray_paths, tmp_path, capsys):
    """The same seed draws other noise on a CUDA generator than on a CPU one; the config did not say which."""
    out = tmp_path / "p.png"
    code, stdout, err = run_cli(["purify", str(xray_paths["NORMAL"][0]), "--purifier", "noise", "--out", str(out), "--threads", "1"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["device"] == json.loads(out.with_suffix(".json").read_text())["device"] == "cpu"


def test_a_typed_steps_or_eps_that_the_attack_ignores_is_refused_even_at_its_default(xray_test_dir, tmp_path, capsys):
    """`--attack fgsm --steps 10` ran one step, and `--attack cw --eps 0.03` recorded an eps CW never used,
    while `--steps 3` and `--eps 0.5` were refused: the refusal hung on the value, not on what was typed."""
    good = tmp_path / "good.png"
    good.write_bytes(_grey_png())
    commands = {
        "evaluate": ["evaluate", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--limit", "1", "--threads", "1"],
        "attack": ["attack", str(good), "--classifier", "student_cnn", "--out", str(tmp_path / "o.png"), "--threads", "1"],
        "sweep": [
            "sweep", "depth", "--purifier", "cold_blur", "--values", "2", "--classifier", "student_cnn", "--limit", "1",
            "--store", str(tmp_path / "s.sqlite"), "--out-dir", str(tmp_path / "out"), "--threads", "1",
        ],
    }  # fmt: skip
    cases = [
        (["--attack", "fgsm", "--steps", "10"], "--attack fgsm ignores --steps 10 (one step); drop --steps"),
        (["--attack", "fgsm", "--steps", "1"], "--attack fgsm ignores --steps 1 (one step); drop --steps"),
        (["--attack", "autoattack", "--steps", "10"], "--attack autoattack ignores --steps 10 (own schedule: "),
        *(
            (["--attack", name, "--norm", "l2", "--eps", "0.03"], f"--attack {name} ignores --eps 0.03 (a minimal-perturbation attack: ")
            for name in ("cw", "deepfool", "ead")
        ),
    ]
    for command, given in commands.items():
        for options, message in cases:
            code, _, err = run_cli([*given, *options], capsys)
            _one_line_refusal(code, err, message)
            assert err.rstrip().endswith("drop --steps" if "--steps" in options else "drop --eps"), (command, err)
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "s.sqlite").exists() and not (tmp_path / "out").exists()
    code, _, err = run_cli([*commands["evaluate"], "--threat", "grey"], capsys)  # a typed default sets the attack too
    _one_line_refusal(code, err, "--threat grey sets the attack, but no --attack was given")


@pytest.mark.parametrize(
    "command, options, message",
    [
        ("evaluate", ["--attack", "pgd", "--eps", "-0.1"], "eps=-0.1 is outside the allowed range [0.0, 1.0]"),
        ("evaluate", ["--attack", "pgd", "--norm", "l1"], "norm 'l1' is not supported"),
        ("evaluate", ["--attack", "apgd", "--eot-iter", "0"], "eot_iter=0 is outside the allowed range [1, 1000]"),
        ("evaluate", ["--attack", "fgsm", "--steps", "50"], "--attack fgsm ignores --steps 50 (one step); drop --steps"),
        ("evaluate", ["--attack", "cw", "--norm", "l2", "--eps", "0.5"], "--attack cw ignores --eps 0.5 (a minimal-perturbation attack"),
        ("evaluate", ["--attack", "pgd", "--threat", "white", "--purifier", "gaussian", "--eot", "5000"], "eot=5000 is outside the allowed range [1, 1000]"),
        ("attack", ["--attack", "fgsm", "--steps", "50"], "--attack fgsm ignores --steps 50 (one step); drop --steps"),
        ("attack", ["--attack", "ead", "--norm", "l2", "--eps", "0.5"], "--attack ead ignores --eps 0.5 (a minimal-perturbation attack"),
        ("attack", ["--steps", "0"], "steps=0 is outside the allowed range [1, 100000]"),
        ("attack", ["--eot", "0"], "--eot must be >= 1, got 0"),
        ("attack", ["--threat", "white", "--purifier", "gaussian", "--eot", "5000"], "eot=5000 is outside the allowed range [1, 1000]"),
        ("attack", ["--threat", "transfer"], "threat 'transfer' needs a data set to measure transfer; use 'purifylab evaluate --threat transfer'"),
    ],
)
def test_the_cli_refuses_a_bad_attack_setting_in_one_line_before_torch_loads(tmp_path, xray_test_dir, xray_paths, command, options, message) -> None:
    """Each was refused only after torch (and for --eot 5000 after the clean pass), refused with the wrong
    reason (`attack --eot 0`: "does not apply to threat 'grey'"), or run silently (fgsm --steps 50, cw --eps)."""
    if command == "evaluate":
        given = ["evaluate", "--data", str(xray_test_dir), "--classifier", "student_cnn", "--limit", "2", "--threads", "1"]
    else:
        given = ["attack", str(xray_paths["NORMAL"][0]), "--out", str(tmp_path / "a.png"), "--classifier", "student_cnn", "--threads", "1"]
    outcome, stderr = _refusal_in_a_fresh_process([*given, *options])
    assert outcome == "2 []", stderr
    assert stderr.startswith(f"error: {message}") and "\n" not in stderr.rstrip("\n")
    assert not (tmp_path / "a.png").exists()
