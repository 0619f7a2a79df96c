"""The `purifylab` CLI: real files in, exit 0; hostile files in, exit 2 with one line, fast."""

from __future__ import annotations

import json
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
    listings = {"classifiers", "purifiers", "presets", "data describe", "data split"}  # read files, no model
    assert listings < set(commands)
    missing = [name for name, options in commands.items() if name not in listings and "--device" not in options]
    assert not missing, missing


def _grey_png() -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("L", (64, 64), 128).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("command", "keys"), [("classifiers", {"name", "shipped", "description"}), ("purifiers", {"name", "nfe", "description"}), ("presets", {"name", "title"})]
)
def test_listing_commands_print_json(capsys, command, keys):
    code, out, _ = run_cli([command, "--json"], capsys)
    rows = json.loads(out)
    assert code == 0 and rows and all(set(row) == keys for row in rows)
