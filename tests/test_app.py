"""Every page of the Streamlit app loads without exceptions (AppTest, no browser)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


@pytest.fixture()
def app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=120)


def test_home_loads_and_says_what_the_lab_does(app):
    app.run()
    assert not app.exception
    assert app.title[0].value == "PurifyLab"
    assert any("not a diagnostic device" in md.value for md in app.markdown)
    # the X-ray classifiers lead, with test-cohort figures; paper re-runs and denoisers sit in an expander
    xray = app.dataframe[0].value
    assert {"resnet", "vit", "student_cnn"} <= set(xray["model"])
    assert not {"mnist_cnn", "ddpm_unet"} & set(xray["model"])
    assert "test balanced acc. [95 % CI]" in xray.columns and not xray.isna().any().any()
    assert {"Start here"} <= {header.value for header in app.subheader}
    others = {name for frame in app.dataframe[1:] for name in frame.value["model"]}
    assert {"mnist_cnn", "cifar10_cnn", "ddpm_unet"} <= others
    # the test figures come first; each model says in plain words how it was trained, from its card
    assert list(xray.columns[:2]) == ["model", "test balanced acc. [95 % CI]"]
    resnet_at = xray.set_index("model").loc["resnet_at"]
    assert resnet_at["what"] == "adversarial training (PGD L-inf 0.03), weight soup of 3; recommended defense"
    assert resnet_at["parameters"] == "711,202" and resnet_at["test AUROC [95 % CI]"] == "0.968 [0.950, 0.983]"
    # a soup's minutes are its members', the GPU one marked; figures keep their trailing zeros
    assert resnet_at["training (min)"] == "26.3 + 29.8 + 4.0 (GPU)" and resnet_at["test specificity [95 % CI]"] == "0.752 [0.662, 0.829]"
    # the smoothing base classifier's figures were read through its noise, and the table says so
    assert xray.set_index("model").loc["resnet_smooth", "what"].endswith("figures read through the 'gaussian' purifier (sigma 0.5)")
    denoisers = next(frame.value for frame in app.dataframe[1:] if "cold_unet" in set(frame.value["model"])).set_index("model")
    assert denoisers.loc["cold_unet", "what"] and denoisers.loc["ddpm_unet", "what"].startswith("DDPM noise predictor")


def _badges(app) -> list[str]:
    """The class names in the reading badges, in page order (Original, Adversarial, purified ...)."""
    return [name for md in app.markdown for name in ("NORMAL", "PNEUMONIA") if f"**{name}**" in md.value]


def test_lab_attack_flips_the_reading_of_a_real_xray_and_zero_budget_does_not(app, xray_paths):
    app.switch_page("pages/lab.py").run()
    assert not app.exception, app.exception
    assert any(caption.value.startswith("Research tool, not a diagnostic device") for caption in app.caption)
    assert {"Sample X-ray", "Classifier", "Attack", "Threat model"} <= {element.label for element in app.selectbox}
    from core.defense import load_defense

    assert app.selectbox(key="classifier").value == load_defense("recommended").classifier  # the lab opens on it
    real = [option for option in app.selectbox(key="sample").options if option.startswith("real pneumonia")]
    app.selectbox(key="sample").set_value(real[0])
    app.selectbox(key="classifier").set_value("resnet").run()  # undefended: the attack must get through
    original, attacked = _badges(app)[:2]
    assert original != attacked, "grey-box PGD at eps 0.03 should flip the undefended reading"
    app.slider(key="eps").set_value(0.0).run()
    assert not app.exception, app.exception
    original, attacked = _badges(app)[:2]
    assert original == attacked


def _purified_readings(app) -> list[str]:
    """The purified panels' readings with their confidence, timings stripped, in page order."""
    badges = [md.value for md in app.markdown if ("**NORMAL**" in md.value or "**PNEUMONIA**" in md.value)]
    return [badge.rsplit(" · ", 1)[0] for badge in badges if badge.endswith(" s")]


def test_lab_purifies_the_image_attacked_now_not_a_cached_earlier_one(app):
    """Purifications are cached by the attacked image: moving eps must change what is purified
    (a cache keyed by the clean image kept showing the eps = 0 purifications)."""
    app.switch_page("pages/lab.py").run()
    real = [option for option in app.selectbox(key="sample").options if option.startswith("real pneumonia")]
    app.selectbox(key="sample").set_value(real[0]).run()
    app.slider(key="eps").set_value(0.0).run()
    unattacked = _purified_readings(app)
    app.slider(key="eps").set_value(0.03).run()
    attacked = _purified_readings(app)
    assert not app.exception, app.exception
    assert len(unattacked) == len(attacked) >= 2
    assert unattacked != attacked, "the purified panels did not change with the attack"
    # every purified panel says whether the reading came back, against the true label of the gallery X-ray
    verdicts = [md.value for md in app.markdown if "restored" in md.value or "did not change" in md.value]
    assert len(verdicts) == len(attacked) and all("true label" in v for v in verdicts)


def test_lab_offers_every_purifier_and_runs_a_heavy_one_only_when_added(app):
    app.switch_page("pages/lab.py").run()
    chooser = app.multiselect(key="purifiers")
    offered = {option.rsplit(" (", 1)[0] for option in chooser.options}  # options read "DDIM (4 calls)"
    assert {"Blurred", "One-shot DDPM", "DDPM", "DDIM", "DiffDefense", "Reconstructed"} <= offered
    assert "DDIM" not in chooser.value and len(_purified_readings(app)) == len(chooser.value)
    chooser.set_value([*chooser.value, "DDIM"]).run()
    assert not app.exception, app.exception
    assert len(_purified_readings(app)) == len(app.multiselect(key="purifiers").value)
    assert any("DDIM: 4 denoiser calls, about" in caption.value for caption in app.caption)


def test_lab_runs_an_adaptive_attack_only_when_asked_and_says_what_the_attacker_saw(app):
    from pages.common import DEFAULT_DEFENSE

    app.switch_page("pages/lab.py").run()
    assert tuple(app.multiselect(key="purifiers").value) == DEFAULT_DEFENSE
    app.selectbox(key="attack").set_value("FGSM").run()
    app.selectbox(key="threat").set_value("bpda-eot").run()
    assert not app.exception, app.exception
    assert any("denoiser calls, about" in info.value for info in app.info)
    assert not _purified_readings(app), "an adaptive attack ran before it was asked for"
    app.button(key="run_attack").click().run()
    assert not app.exception, app.exception
    notes = [caption.value for caption in app.caption if caption.value.startswith("bpda-eot:")]
    assert "bpda-eot: the attacker differentiated through this purifier" in notes  # One-shot DDPM, added to the panels
    assert len(notes) == len(_purified_readings(app)) == len(DEFAULT_DEFENSE) + 1
    # EOT is said where it is spent: the stochastic one-shot DDPM is drawn 4 times a step, a blur once
    said = next(caption.value for caption in app.caption if "threat model **bpda-eot**" in caption.value)
    assert "EOT 4 draws per step" in said and "over 4 purifier draws" in said
    app.selectbox(key="target").set_value("Blurred").run()
    said = next(caption.value for caption in app.caption if "threat model **bpda-eot**" in caption.value)
    assert "EOT" not in said.split("threat model")[0] and "over 1 purifier draw " in said


def test_lab_says_in_one_line_that_white_box_needs_exact_gradients(app):
    """DiffDefense passes gradients straight through: a 'white' attack on it would be BPDA recorded as
    exact gradients, which the engine refuses; the page says so instead of showing a traceback."""
    app.switch_page("pages/lab.py").run()
    app.selectbox(key="attack").set_value("FGSM").run()
    app.selectbox(key="threat").set_value("white").run()
    app.selectbox(key="target").set_value("DiffDefense").run()
    assert not app.exception, app.exception
    assert [warning.value for warning in app.warning] == [
        "DiffDefense: purifier 'diffdefense' has no exact gradients; attack it with threat 'bpda' or 'bpda-eot'."
    ]
    assert not [caption for caption in app.caption if "the attacker differentiated" in caption.value], "no attack ran"


def test_lab_says_the_smoothing_classifier_reads_through_its_noise(app):
    """resnet_smooth's calibration and card figures are through Gaussian noise sigma 0.5; read without it
    on the test cohort its specificity is 0.58, not its card's 0.79."""
    app.switch_page("pages/lab.py").run()
    assert not [info for info in app.info if "calibrated to read X-rays through" in info.value]
    app.selectbox(key="classifier").set_value("resnet_smooth").run()
    assert not app.exception, app.exception
    assert [info.value for info in app.info if "calibrated to read X-rays through" in info.value] == [
        "resnet_smooth was trained and calibrated to read X-rays through the 'gaussian' purifier (sigma 0.5); "
        "read without it, its readings are not those its card measured."
    ]


def test_lab_counts_one_draw_per_step_of_a_deterministic_target(app):
    """A deterministic purifier is drawn once per step whatever EOT says: the cost shown before the run
    and the sidebar's threat model said 40 calls and 4 draws for a 10-call attack through Direct recon."""
    app.switch_page("pages/lab.py").run()
    app.selectbox(key="threat").set_value("bpda-eot").run()
    app.selectbox(key="target").set_value("Direct recon.").run()
    assert not app.exception, app.exception
    assert any("Direct recon.: 10 denoiser calls" in info.value for info in app.info), [info.value for info in app.info]
    assert any(caption.value == "BPDA with expectation over 1 purifier draw per step" for caption in app.sidebar.caption)
    app.selectbox(key="target").set_value("One-shot DDPM").run()
    assert any("One-shot DDPM: 40 denoiser calls" in info.value for info in app.info)


def test_lab_keeps_its_settings_across_pages(app):
    """Streamlit drops a widget's value once its page is left: back from the tables, the lab showed its
    defaults, not the classifier, budget and purifiers it was left with."""
    app.switch_page("pages/lab.py").run()
    app.selectbox(key="classifier").set_value("vit").run()
    app.slider(key="eps").set_value(0.01).run()
    app.slider(key="t_star").set_value(0.1).run()
    app.multiselect(key="purifiers").set_value(["Blurred"]).run()
    app.switch_page("pages/tables.py").run()
    app.switch_page("pages/lab.py").run()
    assert not app.exception, app.exception
    assert app.selectbox(key="classifier").value == "vit" and app.slider(key="eps").value == 0.01
    assert app.slider(key="t_star").value == 0.1 and app.multiselect(key="purifiers").value == ["Blurred"]
    assert not app.warning, [warning.value for warning in app.warning]  # no default competing with a restored value


def test_lab_does_not_call_an_attack_on_the_substitute_itself_transfer(app):
    """Transfer examples are crafted on the substitute: scored on the substitute they are grey-box ones."""
    app.switch_page("pages/lab.py").run()
    app.selectbox(key="classifier").set_value("substitute").run()
    app.selectbox(key="threat").set_value("transfer").run()
    assert not app.exception, app.exception
    assert [warning.value for warning in app.warning] == [
        "Transfer attacks are crafted on substitute: against substitute itself that is the grey-box attack; choose grey."
    ]
    assert not [caption for caption in app.caption if "threat model **transfer**" in caption.value]


def test_lab_clears_the_question_once_the_adaptive_attack_runs(app):
    app.switch_page("pages/lab.py").run()
    app.selectbox(key="attack").set_value("FGSM").run()
    app.selectbox(key="threat").set_value("bpda-eot").run()
    app.button(key="run_attack").click().run()
    assert _purified_readings(app)
    assert not [info for info in app.info if "denoiser calls, about" in info.value], "the question stayed after the answer"


def test_lab_calls_the_recommended_panel_so_only_with_the_recommended_classifier(app):
    from pages.common import RECOMMENDED, RECOMMENDED_PANEL

    app.switch_page("pages/lab.py").run()
    assert RECOMMENDED_PANEL in _probability_rows(app)
    other = next(name for name in app.selectbox(key="classifier").options if name != RECOMMENDED.classifier)
    app.selectbox(key="classifier").set_value(other).run()
    assert not app.exception, app.exception
    rows = _probability_rows(app)
    assert RECOMMENDED_PANEL not in rows and f"No purification ({other})" in rows


def _probability_rows(app) -> list[str]:
    tables = [md.value for md in app.markdown if md.value.startswith("| panel |")]
    return [line.split(" | ")[0].removeprefix("| ") for line in tables[-1].splitlines()[2:]]


def test_lab_upload_of_a_hostile_file_shows_one_clear_error(app):
    app.switch_page("pages/lab.py").run()
    app.file_uploader(key="upload").set_value(("x.png", b"<html>not an image</html>", "image/png")).run()
    assert not app.exception
    assert any("cannot be used" in error.value for error in app.error)


def test_walkthrough_steps_forward_to_the_purified_image(app, xray_paths):
    app.switch_page("pages/walkthrough.py").run()
    assert not app.exception, app.exception
    assert app.selectbox(key="walkthrough_sample").value.startswith("real normal")
    assert any("true label: **NORMAL**" in md.value for md in app.markdown)
    for _ in range(2):
        app.button(key="walkthrough_next").click().run()
        assert not app.exception, app.exception
    verdicts = [md.value for md in app.markdown if md.value.startswith("**Verdict:**")]
    assert len(verdicts) == 1 and ("restored" in verdicts[0] or "did not change" in verdicts[0])
    assert any("applied to the original, unattacked X-ray" in md.value for md in app.markdown)  # the purifier's own effect
    assert any("grey-box" in caption.value for caption in app.caption)
    app.button(key="walkthrough_next").click().run()
    assert app.session_state["walkthrough_step"] == 3
    assert any("not a diagnostic device" in md.value for md in app.markdown)


def test_walkthrough_resumes_on_the_same_x_ray_after_another_page(app):
    """Streamlit drops a widget's value on another page while the story's step survives: on return the
    step must still be told on the X-ray and budget it was left with."""
    app.switch_page("pages/walkthrough.py").run()
    sample = app.selectbox(key="walkthrough_sample").options[1]
    app.selectbox(key="walkthrough_sample").set_value(sample).run()
    app.radio(key="walkthrough_budget").set_value("2/255 (subtle)").run()
    app.button(key="walkthrough_next").click().run()
    app.switch_page("pages/tables.py").run()
    app.switch_page("pages/walkthrough.py").run()
    assert not app.exception, app.exception
    assert app.session_state["walkthrough_step"] == 1
    assert app.selectbox(key="walkthrough_sample").value == sample
    assert app.radio(key="walkthrough_budget").value == "2/255 (subtle)"


def test_an_uploads_conversions_are_said(app, xray_paths):
    """The loader flattens alpha, keeps an animation's first frame, rescales DICOM: the page says what it changed."""
    import io

    from PIL import Image

    rgba = Image.open(xray_paths["NORMAL"][0]).convert("RGBA")
    buffer = io.BytesIO()
    rgba.save(buffer, format="PNG")
    app.switch_page("pages/walkthrough.py").run()
    app.file_uploader(key="walkthrough_upload").set_value(("mine.png", buffer.getvalue(), "image/png")).run()
    assert not app.exception, app.exception
    assert any(caption.value.startswith("Upload converted: ") for caption in app.caption)


def test_walkthrough_restarts_when_its_upload_is_gone(app, xray_paths):
    app.switch_page("pages/walkthrough.py").run()
    app.file_uploader(key="walkthrough_upload").set_value(("mine.jpeg", xray_paths["NORMAL"][0].read_bytes(), "image/jpeg")).run()
    app.button(key="walkthrough_next").click().run()
    app.switch_page("pages/tables.py").run()
    app.switch_page("pages/walkthrough.py").run()
    assert not app.exception, app.exception
    assert app.session_state["walkthrough_step"] == 0
    assert any("not kept after a visit to another page" in info.value for info in app.info)


def test_walkthrough_keeps_its_place_when_a_refused_upload_is_removed(app):
    app.switch_page("pages/walkthrough.py").run()
    app.button(key="walkthrough_next").click().run()
    app.file_uploader(key="walkthrough_upload").set_value(("notes.png", b"not an image", "image/png")).run()
    assert any("This file cannot be used" in error.value for error in app.error)
    app.file_uploader(key="walkthrough_upload").set_value(None).run()
    assert not app.exception, app.exception
    assert app.session_state["walkthrough_step"] == 1
    assert not any("is gone" in info.value for info in app.info)


def test_walkthrough_tells_the_story_of_an_upload(app, xray_paths):
    app.switch_page("pages/walkthrough.py").run()
    app.file_uploader(key="walkthrough_upload").set_value(("mine.jpeg", xray_paths["NORMAL"][0].read_bytes(), "image/jpeg")).run()
    assert not app.exception, app.exception
    assert any("true label: unknown" in md.value for md in app.markdown)
    assert any(caption.value.startswith("Research tool, not a diagnostic device") for caption in app.caption)
    app.file_uploader(key="walkthrough_upload").set_value(("x.png", b"<html>not an image</html>", "image/png")).run()
    assert not app.exception
    assert any("cannot be used" in error.value for error in app.error)


def test_tables_page_shows_a_stored_table_with_its_threat_model(app):
    app.switch_page("pages/tables.py").run()
    assert not app.exception, app.exception
    # the stored table's own caption (the intro above it, markdown[0], names threat models whatever is stored)
    assert any("Threat model" in md.value for md in app.markdown[1:])
    # one entry per results folder: the full adaptive table leads, its CPU-sized run beside it
    options = app.selectbox(key="table_choice").options
    assert options[:2] == ["adaptive", "adaptive-limit64"]
    # a folder's README is not its table: the convergence run at 64 X-rays shows its measured table
    assert "certify" not in options and not any(o.endswith("-candidates") for o in options)
    app.selectbox(key="table_choice").set_value("adaptive-convergence-limit64").run()
    assert any(md.value.startswith("# ") and "| Attack |" in md.value for md in app.markdown)


def test_curves_page_draws_a_stored_sweep(app):
    app.switch_page("pages/curves.py").run()
    assert not app.exception, app.exception
    assert app.selectbox(key="curve_choice").options
    assert len(app.get("plotly_chart")) == 2  # the certified curve and the chosen run's


def test_curves_figure_has_one_line_per_row():
    import json

    from core.tables.render import curves_figure

    path = next(p for p in (Path(APP).parent / "results").glob("sweep-*/*.json") if not p.name.endswith(".config.json"))
    document = json.loads(path.read_text())
    figure = curves_figure(document).to_dict()
    rows = {r["row"] for r in document["results"]}
    assert len(figure["data"]) == len(rows)
    assert all(0 <= y <= 100 for trace in figure["data"] for y in trace["y"])


def test_curve_subtitles_come_from_the_runs_record_and_each_panel_has_its_own_legend():
    """A chart says who attacked, how many images of which split and in which metric; the swept
    parameter is the record's, not the sweep's name (the MNIST 'depth' sweep varies t_start)."""
    import json

    from core.tables.render import curves_figure

    results = Path(APP).parent / "results"
    sweep = json.loads((results / "sweep-tstar-ddpm" / "sweep-tstar-ddpm.json").read_text())
    (title,) = [a["text"] for a in curves_figure(sweep, "../shared/data/chest_xray_pneumonia/test").to_dict()["layout"]["annotations"]]
    assert title.startswith("accuracy vs t*: ddpm in front of vit<br>")
    assert "threat grey: PGD-10 L-inf 0.03 · 64 images, split 'all' of chest_xray_pneumonia/test · accuracy (%), not balanced" in title
    mnist = curves_figure(json.loads((results / "mnist-diffdefense" / "mnist-diffdefense.json").read_text())).to_dict()
    titles = [a["text"] for a in mnist["layout"]["annotations"]]
    assert titles[0].startswith("accuracy vs t_start: diffdefense") and titles[1].startswith("attack detection: ROC")
    assert not any("sweep depth" in t or "ROC roc" in t for t in titles)
    legends = {trace.get("legend", "legend") for trace in mnist["data"]}
    assert legends == {"legend", "legend2"} and "legend2" in mnist["layout"]


@pytest.mark.slow
def test_tables_page_regenerates_the_quick_table_beside_the_stored_one(xray_train_dir):
    app = AppTest.from_file(APP, default_timeout=900)
    app.switch_page("pages/tables.py").run()
    app.button(key="regenerate").click().run()
    assert not app.exception, app.exception
    assert not app.error, [e.value for e in app.error]
    regenerated = app.session_state["regenerated"]
    assert "| Attack | Original |" in regenerated and "grey" in regenerated
    assert any(md.value == "**Regenerated now**" for md in app.markdown)
    assert not [button for button in app.button if button.key == "cancel_regenerate"]  # nothing left to cancel


def test_the_https_only_xsrf_cookie_is_set_inside_a_space_only():
    """The Spaces iframe needs the cross-site XSRF cookie; anywhere else (a container or LAN on plain
    HTTP) that HTTPS-only cookie would make every upload fail, so neither the config nor the image's
    entry point sets it. The file watcher is off when serving."""
    import tomllib

    from pages.startup import SPACE_XSRF_COOKIE, launch_arguments

    root = Path(APP).parent
    config = tomllib.loads((root / ".streamlit" / "config.toml").read_text())
    assert "xsrfCookieSameSite" not in config["server"] and config["server"]["fileWatcherType"] == "none"
    from core.image_file import MAX_UPLOAD_BYTES

    # a 15-MP, 30 MB DICOM that the engine and the Gradio server take was refused by a 20 MB uploader
    assert config["server"]["maxUploadSize"] * 1024 * 1024 == MAX_UPLOAD_BYTES
    assert "xsrfCookieSameSite" not in (root / "Dockerfile").read_text().split("ENTRYPOINT", 1)[1]
    options = ["--server.port=8501", "--server.headless=true"]
    assert launch_arguments(options, {"HOME": "/home/user"}) == options
    assert launch_arguments(options, {"SPACE_ID": "someone/purifylab"}) == [*options, SPACE_XSRF_COOKIE]
    chosen = [*options, "--server.xsrfCookieSameSite=strict"]
    assert launch_arguments(chosen, {"SPACE_ID": "someone/purifylab"}) == chosen


def test_the_engine_warm_up_starts_once_however_many_visitors_arrive_at_once():
    """Each page run asks for it (and `python app.py` before any visitor): one thread per process."""
    from concurrent.futures import ThreadPoolExecutor

    from pages.startup import start_warm_up

    with ThreadPoolExecutor(8) as pool:
        threads = set(pool.map(lambda _: start_warm_up(), range(8)))
    assert len(threads) == 1 and threads == {start_warm_up()}


def _downloaded(app, label_start: str) -> str:
    """What a download button hands the visitor: AppTest keeps the file in Streamlit's in-memory media store."""
    import contextlib
    import gc

    from streamlit.runtime.media_file_storage import MediaFileStorageError
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    button = next(b for b in app.get("download_button") if b.proto.label.startswith(label_start))
    file_id = button.proto.url.split("/")[-1].split(".")[0]
    for store in (o for o in gc.get_objects() if isinstance(o, MemoryMediaFileStorage)):  # one per AppTest so far
        with contextlib.suppress(MediaFileStorageError):
            return store.get_file(file_id).content.decode()
    raise AssertionError(f"no media store holds {button.proto.url}")


def test_lab_report_names_each_panels_purifier_settings_and_the_weights(app):
    """Two reports differing only in the blur depth once read alike but for their verdicts."""
    app.switch_page("pages/lab.py").run()
    report = _downloaded(app, "Report of these readings")
    assert "- **purifiers:** " in report and "cold_blur at depth 20" in report
    assert "weights SHA-256 " in report


def test_curves_page_skips_and_names_a_file_it_cannot_read(app, tmp_path, monkeypatch):
    """A full disk left a truncated quick.json (or certify result), and the whole page failed on it."""
    import shutil

    import core.paths

    results = Path(core.paths.RESULTS_DIR)
    shutil.copytree(results / "sweep-depth-cold_blur", tmp_path / "sweep-depth-cold_blur")
    (tmp_path / "certify").mkdir()
    shutil.copy(results / "certify" / "resnet_smooth-sigma-0.25.json", tmp_path / "certify")
    (tmp_path / "certify" / "cut.json").write_text('{"per_image": [')
    (tmp_path / "quick").mkdir()
    (tmp_path / "quick" / "quick.json").write_text((results / "quick" / "quick.json").read_text()[:2000])
    monkeypatch.setattr(core.paths, "RESULTS_DIR", tmp_path)
    app.switch_page("pages/curves.py").run()
    assert not app.exception, app.exception
    assert [warning.value for warning in app.warning] == ["Skipped 2 file(s) that are not readable JSON: certify/cut.json, quick/quick.json"]
    assert app.selectbox(key="curve_choice").options and len(app.get("plotly_chart")) == 2  # the certified curve and the sweep


def _lower_case_card_without_ece_or_calibration(folder: Path) -> Path:
    """The shipped resnet card as a model trained on lower-case class folders (which check_classes
    accepts), with no ECE, specificity or calibration: figures the tables must not show as 0."""
    import json

    from core.weights import WEIGHTS_DIR

    card = json.loads((Path(WEIGHTS_DIR) / "resnet.json").read_text())
    card["classes"] = ["normal", "pneumonia"]
    test = card["test_metrics"]
    test["sensitivity"] = {name.lower(): value for name, value in test["sensitivity"].items()}
    for key in ("ece", "specificity"):
        test.pop(key)
    card.pop("calibration")
    path = folder / "resnet_lower.json"
    path.write_text(json.dumps(card))
    return path


def test_home_model_table_shows_a_missing_figure_as_a_dash_and_reads_the_cards_positive_class(tmp_path, monkeypatch):
    """It showed test sensitivity 0.000 (measured 0.979) for lower-case classes, and 0.000 for a missing ECE."""
    import json

    import core.weights
    from pages.model_table import shipped_models_table

    card = json.loads(_lower_case_card_without_ece_or_calibration(tmp_path).read_text())
    monkeypatch.setattr(core.weights, "WEIGHTS_DIR", tmp_path)
    shipped_models_table.clear()
    try:
        [row] = shipped_models_table()["chest X-rays"]
    finally:
        shipped_models_table.clear()
    assert row["test sensitivity [95 % CI]"] == f"{card['test_metrics']['sensitivity']['pneumonia']:.3f}" != "0.000"
    assert row["test specificity [95 % CI]"] == row["test ECE"] == "–"


def test_card_table_shows_an_uncalibrated_card_as_a_dash_not_zero(tmp_path):
    """scripts/card_table.py printed "0 / 0" for temperature / threshold and failed on lower-case classes."""
    import json
    import subprocess
    import sys

    path = _lower_case_card_without_ece_or_calibration(tmp_path)
    sensitivity = json.loads(path.read_text())["test_metrics"]["sensitivity"]["pneumonia"]
    root = Path(APP).parent
    done = subprocess.run([sys.executable, "scripts/card_table.py", "--runs", str(path)], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    cells = [cell.strip() for cell in done.stdout.strip().splitlines()[-1].split("|")]
    assert cells[1] == f"`{tmp_path.name} (not shipped)`"
    assert cells[8:12] == [f"{sensitivity:.3f}", "–", f"{json.loads(path.read_text())['val_metrics']['ece']:.3f} / –", "– / –"]


def test_curves_page_lists_each_results_folder_when_two_runs_share_a_title(app, xray_test_dir, tmp_path, monkeypatch):
    """A smaller re-run of a sweep in another folder shares its title, and replaced the committed run in the menu."""
    import core.paths
    from core.sweeps import sweep_preset
    from core.tables import run_preset

    results = tmp_path / "results"
    for folder, limit in (("sweep-tstar-noise", 3), ("sweep-tstar-noise-limit2", 2)):
        preset = sweep_preset("tstar", "noise", (0.1,), classifier="student_cnn", data=xray_test_dir, split="all", limit=limit)
        run_preset(preset, tmp_path / "s.sqlite", results / folder, progress=False)
    monkeypatch.setattr(core.paths, "RESULTS_DIR", results)
    app.switch_page("pages/curves.py").run()
    assert not app.exception, app.exception
    title = "Accuracy vs t_star of noise in front of student_cnn"
    options = app.selectbox(key="curve_choice").options
    assert options == [f"{title} (sweep-tstar-noise, 3 images)", f"{title} (sweep-tstar-noise-limit2, 2 images)"]
    for option, n in zip(options, (3, 2), strict=True):
        app.selectbox(key="curve_choice").set_value(option).run()
        assert any(f"On {n} images of split 'all'" in md.value for md in app.markdown), option


def test_curves_page_caption_gives_the_certified_results_own_input_size(app, tmp_path, monkeypatch):
    """The caption said "128 px input" beside the certified curve of a 32 px (CIFAR-10-sized) model."""
    import json

    import torch

    import core.paths
    from core.certify import CertifyConfig, certify_images
    from core.models import create_classifier

    classifier = create_classifier("student_cnn", pretrained=False, image_size=32, widths=(4, 4, 4, 4)).eval()
    result = certify_images(classifier, None, torch.rand(2, 1, 32, 32), torch.tensor([0, 1]), CertifyConfig(sigma=0.25, n0=2, n=8, alpha=0.1))
    (tmp_path / "certify").mkdir()
    (tmp_path / "certify" / "small.json").write_text(json.dumps(result | {"classifier": "student_cnn"}))
    monkeypatch.setattr(core.paths, "RESULTS_DIR", tmp_path)
    app.switch_page("pages/curves.py").run()
    assert not app.exception, app.exception
    [caption] = [caption.value for caption in app.caption if "CERTIFY" in caption.value]
    assert "pixels at the classifier's 32 px input)" in caption and "128 px" not in caption


def test_an_upload_is_decoded_once_however_often_the_page_reruns(app):
    """Every click reruns the page: a 3 MB many-page TIFF cost 9.4 s a slider move when each rerun
    decoded the upload again. It is decoded on the first run only, kept under the SHA-256 of its bytes."""
    import hashlib

    from hostile_files import LEGITIMATE

    data = LEGITIMATE["many_pages.tif"]()
    app.switch_page("pages/walkthrough.py").run()
    app.file_uploader(key="walkthrough_upload").set_value(("scan.tif", data, "image/tiff")).run()
    assert not app.exception, app.exception
    assert "Upload converted: animated: first frame of more than 3" in [caption.value for caption in app.caption]
    decoded = dict(app.session_state["decoded_uploads"])
    assert [digest for digest, _ in decoded] == [hashlib.sha256(data).hexdigest()]
    app.radio(key="walkthrough_budget").set_value(list(app.radio(key="walkthrough_budget").options)[0]).run()
    assert not app.exception, app.exception
    kept = app.session_state["decoded_uploads"]
    assert kept.keys() == decoded.keys() and all(kept[key] is decoded[key] for key in decoded), "the rerun decoded the upload again"


def test_the_tables_and_curves_pages_import_no_torch():
    """They show stored Markdown and JSON: importing the engine with them (torch, torchattacks, timm)
    made their first render as slow as the lab's, 12 s on 2 busy cores. A fresh interpreter runs each
    page's own import statements, so a heavy import added to either page fails here."""
    import ast
    import subprocess
    import sys

    root = Path(APP).parent
    statements = [
        ast.unparse(node)
        for page in ("pages/tables.py", "pages/curves.py")
        for node in ast.parse((root / page).read_text()).body
        if isinstance(node, ast.Import | ast.ImportFrom) and getattr(node, "module", None) != "__future__"
    ]
    assert any("core.tables" in statement for statement in statements)
    heavy = ("torch", "torchvision", "torchattacks", "timm", "diffusers")
    code = "\n".join(["import sys", *statements, f"print(sorted(m for m in {heavy} if m in sys.modules))"])
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_certified_curve_is_drawn_without_torch():
    """The curves page draws stored certify results: the numpy-only curve lived in core.certify beside
    the torch-based CERTIFY, so drawing it imported torch."""
    import subprocess
    import sys

    result = {
        "sigma": 0.25,
        "n": 10,
        "images": 2,
        "image_size": 128,
        "classifier": "vit",
        "per_image": [{"label": 0, "prediction": 0, "radius": 0.4}, {"label": 1, "prediction": -1, "radius": None}],
    }
    code = "\n".join(
        [
            "import sys",
            "from core.tables.render import certified_figure",
            f"figure = certified_figure([{result!r}])",
            "print(list(figure.data[0].y[:2]), sorted(m for m in ('torch', 'torchvision', 'diffusers') if m in sys.modules))",
        ]
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(APP).parent, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[50.0, 50.0] []"


@pytest.mark.parametrize("sample", ["real normal #4", "real normal #6"])
def test_walkthrough_tells_an_x_ray_the_model_misreads_as_misread_not_as_an_attack_undone(app, sample):
    """On an X-ray the model already misread, step 2 called the attack's move to the true label harm and
    step 3 praised the purifier for bringing the wrong reading back ("undid the engineered change")."""
    app.switch_page("pages/walkthrough.py").run()
    app.selectbox(key="walkthrough_sample").set_value(sample).run()
    [reading] = [md.value for md in app.markdown if md.value.startswith("**The model's reading:**")]
    assert "**PNEUMONIA**" in reading and "true label: **NORMAL**" in reading  # the model misreads it
    app.button(key="walkthrough_next").click().run()
    assert not app.exception, app.exception
    told = " ".join(md.value for md in app.markdown)
    assert "The model already misread this X-ray (its true label is NORMAL); the attack changed its reading to" in told
    assert "Yet the model now reads" not in told
    app.button(key="walkthrough_next").click().run()
    assert not app.exception, app.exception
    [verdict] = [md.value for md in app.markdown if md.value.startswith("**Verdict:**")]
    assert "the model was wrong before any attack" in verdict
    told = " ".join(md.value for md in app.markdown)
    assert "here the purifier brought back the model's original, **wrong** reading" in told
    assert "undid the engineered change" not in told


def test_home_gives_each_figure_its_interval_and_each_expander_table_its_split_and_n(app):
    """Home showed student_cnn's test sensitivity as a bare 1.000 (the card holds [0.981, 1.0]), and the
    MNIST / CIFAR val accuracies with no n and no split, under the X-ray caption's patient-disjoint split."""
    import json

    from core.weights import WEIGHTS_DIR

    app.run()
    assert not app.exception, app.exception
    student = app.dataframe[0].value.set_index("model").loc["student_cnn"]
    test = json.loads((Path(WEIGHTS_DIR) / "student_cnn.json").read_text())["test_metrics"]
    for column, value, interval in (
        ("test sensitivity [95 % CI]", test["sensitivity"]["PNEUMONIA"], test["confidence_95"]["sensitivity_PNEUMONIA"]),
        ("test specificity [95 % CI]", test["specificity"], test["confidence_95"]["sensitivity_NORMAL"]),
    ):
        assert student[column] == f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"
    [expander] = app.expander
    shown = list(expander.children.values())
    tables = [index for index, element in enumerate(shown) if element.type == "dataframe"]
    assert tables and all(shown[index - 1].type == "caption" for index in tables)  # a caption per table, right above it
    for stem in ("mnist_cnn", "cifar10_cnn"):
        card = json.loads((Path(WEIGHTS_DIR) / f"{stem}.json").read_text())
        [index] = [index for index in tables if stem in set(shown[index].value["model"])]
        assert shown[index].value.set_index("model").loc[stem, "val n"] == card["val_metrics"]["n"]
        caption = shown[index - 1].value
        assert f"`{card['data']['folder']}` (split: {card['data']['split']}, seed {card['data']['split_seed']})" in caption
        assert "patient-disjoint" not in caption
