"""The verdicts the app prints under every purified panel."""

from __future__ import annotations

from core.lab import Reading, verdict

NORMAL, PNEUMONIA = Reading((0.9, 0.1)), Reading((0.2, 0.8))


def test_a_flipped_reading_brought_back_is_restored():
    result = verdict(NORMAL, PNEUMONIA, NORMAL, "NORMAL")
    assert result.restored and result.correct and result.text == "reading restored (matches the true label)"


def test_a_flipped_reading_left_flipped_is_not_restored():
    result = verdict(NORMAL, PNEUMONIA, PNEUMONIA, "NORMAL")
    assert not result.restored and result.correct is False
    assert result.text == "not restored: still PNEUMONIA (the true label is NORMAL)"


def test_a_wrong_clean_reading_is_said_even_when_restored():
    result = verdict(PNEUMONIA, NORMAL, PNEUMONIA, "NORMAL")
    assert result.restored and result.correct is False
    assert "the model was wrong before any attack" in result.text


def test_an_attack_without_effect_and_an_unknown_label():
    result = verdict(NORMAL, NORMAL, PNEUMONIA)
    assert not result.restored and result.correct is None
    assert result.text == "the attack did not change the reading; purification changed it"


def test_session_report_holds_the_settings_and_every_panels_reading_and_verdict():
    from core.lab import session_report

    report = session_report(
        {"image": "real normal #1", "true label": "NORMAL", "threat model": "grey"},
        {"Original": NORMAL, "Adversarial": PNEUMONIA, "DDPM": NORMAL},
        {"DDPM": verdict(NORMAL, PNEUMONIA, NORMAL, "NORMAL")},
    )
    assert "- **true label:** NORMAL" in report and "not a diagnostic device" in report
    assert "| Adversarial | PNEUMONIA | 80% | – |" in report
    assert "| DDPM | NORMAL | 90% | reading restored (matches the true label) |" in report


def test_with_no_purifier_the_verdict_does_not_credit_a_purification():
    result = verdict(NORMAL, NORMAL, NORMAL, "NORMAL", through_purifier=False)
    assert result.text == "the attack did not change the reading (matches the true label)"


def test_the_attacked_image_is_what_its_png_holds_and_stays_in_budget():
    """The reading shown beside a saved or downloaded attacked image was taken on the float image;
    8-bit rounding undid small attacks (27 of 576 gallery cases read otherwise from the file)."""
    import io

    import torch
    from PIL import Image

    from core.attacks import AttackConfig
    from core.io import encode_png, load_image, to_model_input
    from core.lab import attack_image, perturbation_norms
    from core.models import create_classifier

    torch.manual_seed(0)
    model = create_classifier("student_cnn", pretrained=False, image_size=32, widths=(4, 8, 8, 8)).eval()
    clean = torch.rand(1, 1, 32, 32)  # not on the grey levels, as a resized upload is not
    for config in (AttackConfig(name="pgd", eps=0.005, steps=3), AttackConfig(name="pgd", norm="l2", eps=0.2, steps=3)):
        attacked = attack_image(model, clean, config)
        adversarial = attacked.image
        assert torch.equal(adversarial, (adversarial * 255).round() / 255)
        saved = to_model_input(load_image(encode_png(adversarial)), 32)
        assert (saved - adversarial).abs().max() < 1e-6  # the decoder's float, one ulp apart
        assert torch.equal(attacked.clean, (clean * 255).round() / 255)  # the budget's centre: the input on the grey levels
        assert perturbation_norms(attacked.clean, saved)[config.norm] <= config.eps + 1e-6
    assert Image.open(io.BytesIO(encode_png(adversarial))).mode == "L"


def test_an_xray_attacked_and_saved_as_png_stays_inside_its_budget(xray_paths):
    """`purifylab attack --norm l2 --eps 0.1` wrote a PNG at L2 0.175 from the model's input, and an L-inf eps
    under half a grey level was exceeded: the resized X-ray lies off the 8-bit grey levels and every pixel
    went to its nearest one. The attack now starts from the input on the grey levels, and each pixel's
    change is rounded towards it."""
    import torch

    from core.attacks import AttackConfig
    from core.io import encode_png, load_image, to_model_input
    from core.lab import attack_image, perturbation_norms
    from core.models import create_classifier

    model = create_classifier("resnet").eval()
    image = to_model_input(load_image(xray_paths["NORMAL"][0]), model.image_size)
    on_levels = (image * 255).round() / 255
    assert not torch.equal(image, on_levels)  # the antialiased resize left the grey levels
    for config in (
        AttackConfig(name="pgd", norm="l2", eps=0.1),
        AttackConfig(name="pgd", norm="l2", eps=0.5),
        AttackConfig(name="pgd", eps=1 / 255),
        AttackConfig(name="pgd", eps=0.03),
    ):
        attacked = attack_image(model, image, config)
        saved = to_model_input(load_image(encode_png(attacked.image)), model.image_size)
        norms = perturbation_norms(on_levels, saved)
        assert norms[config.norm] <= config.eps + 1e-6, (config, norms)
        assert norms["linf"] > 0, config  # the attack survived the rounding
        assert torch.equal(attacked.clean, on_levels)


def test_an_attack_that_finds_nothing_returns_exactly_the_clean_image_on_grey_levels(xray_paths):
    """APGD hands back its input where it fails; the 8-bit rounding of a resized X-ray then showed as a
    perturbation (L-inf 0.002, L2 0.14), so the lab's "found nothing within eps" note could never show."""
    import torch

    from core.attacks import AttackConfig
    from core.io import load_image, to_model_input
    from core.lab import attack_image, perturbation_norms, read
    from core.models import create_classifier

    model = create_classifier("resnet_at").eval()
    image = to_model_input(load_image(xray_paths["NORMAL"][0]), model.image_size)
    attacked = attack_image(model, image, AttackConfig(name="apgd", eps=0.005))
    assert read(model, attacked.image)[0].label == read(model, image)[0].label  # APGD found nothing here
    assert torch.equal(attacked.image, attacked.clean) and torch.equal(attacked.clean, (image * 255).round() / 255)
    assert perturbation_norms(attacked.clean, attacked.image) == {"linf": 0.0, "l2": 0.0}


def test_a_budget_under_one_grey_level_is_refused_before_the_attack_runs():
    """No 8-bit image but the clean one lies within it: the attack would vanish without a word (an L-inf eps
    of 0.0005 once came out at 0.0025 instead). eps 0 stays a budget: the clean image itself."""
    import pytest
    import torch

    from core.attacks import AttackConfig
    from core.errors import PurifyLabError
    from core.lab import attack_image
    from core.models import create_classifier

    torch.manual_seed(0)
    model = create_classifier("student_cnn", pretrained=False, image_size=32, widths=(4, 8, 8, 8)).eval()
    forwards = []
    model.register_forward_hook(lambda *_: forwards.append(1))
    image = torch.rand(1, 1, 32, 32)
    for config in (AttackConfig(name="pgd", eps=0.0005), AttackConfig(name="fgsm", eps=0.0039), AttackConfig(name="pgd", norm="l2", eps=0.002)):
        with pytest.raises(PurifyLabError, match=r"^eps .* is under one grey level") as refused:
            attack_image(model, image, config)
        assert "\n" not in str(refused.value)
    assert not forwards  # refused before the classifier ran once
    assert torch.equal(attack_image(model, image, AttackConfig(name="pgd", eps=0.0)).image, (image * 255).round() / 255)


def test_the_lab_says_when_the_attack_found_nothing():
    """pages/lab.py measured the perturbation from the off-grid input, so its 'found no perturbation within
    eps' note never showed for a sample or an upload: 8-bit rounding counted as the attack's change."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    app.switch_page("pages/lab.py").run()
    app.selectbox(key="classifier").set_value("resnet_at")
    app.selectbox(key="attack").set_value("AutoPGD (APGD-CE)")
    app.slider(key="eps").set_value(0.005).run()  # the adversarially trained classifier holds there on the first sample
    assert not app.exception, app.exception
    assert any(info.value.startswith("AutoPGD (APGD-CE) found no perturbation within ε = 0.005") for info in app.info)
    assert any(markdown.value.startswith("L∞ 0.000 · L2 0.00 ·") for markdown in app.markdown)


def test_a_misread_clean_image_is_told_against_the_true_label_first():
    """The model misread a NORMAL X-ray; the attack flipped it to NORMAL and the purifier kept NORMAL: a
    red 'not restored: still NORMAL' read as a failure where the final reading is right."""
    from pages.common import verdict_line

    kept_right = verdict(PNEUMONIA, NORMAL, NORMAL, "NORMAL")
    assert kept_right.correct and not kept_right.restored
    assert kept_right.text == "reads NORMAL, the true label (the model was wrong before any attack: it read PNEUMONIA)"
    assert verdict_line(kept_right).startswith(":green[")
    restored_wrong = verdict(PNEUMONIA, NORMAL, PNEUMONIA, "NORMAL")
    assert restored_wrong.restored and verdict_line(restored_wrong).startswith(":orange[")
    assert verdict_line(verdict(NORMAL, PNEUMONIA, PNEUMONIA, "NORMAL")).startswith(":red[")


def test_a_purifier_that_alone_changes_the_clean_reading_says_so():
    result = verdict(NORMAL, NORMAL, PNEUMONIA, "NORMAL", purified_clean=PNEUMONIA)
    assert result.text.endswith("; this purifier alone reads the clean image as PNEUMONIA")
    assert "alone" not in verdict(NORMAL, NORMAL, NORMAL, "NORMAL", purified_clean=NORMAL).text


def test_each_png_download_of_the_lab_says_what_made_it():
    """The lab's PNGs once carried no settings, so two downloads looked alike whatever made them; now each
    holds the facts the report states for its image, and never the image's name."""
    import contextlib
    import gc
    import io
    from pathlib import Path

    from PIL import Image
    from streamlit.runtime.media_file_storage import MediaFileStorageError
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
    from streamlit.testing.v1 import AppTest

    def downloaded(label: str) -> bytes:
        """The first download button labelled `label`'s file, from the in-memory media store AppTest keeps."""
        button = next(b for b in app.get("download_button") if b.proto.label.startswith(label))
        file_id = button.proto.url.split("/")[-1].split(".")[0]
        for store in (o for o in gc.get_objects() if isinstance(o, MemoryMediaFileStorage)):
            with contextlib.suppress(MediaFileStorageError):
                return store.get_file(file_id).content
        raise AssertionError(f"no media store holds {button.proto.url}")

    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    app.switch_page("pages/lab.py").run()
    assert not app.exception
    report = dict(line[4:].split(":** ", 1) for line in downloaded("Report of these readings").decode().splitlines() if line.startswith("- **"))
    attacked = Image.open(io.BytesIO(downloaded("Attacked image (PNG)"))).text
    purified = Image.open(io.BytesIO(downloaded("PNG"))).text
    stated = ("classifier", "attack", "threat model")
    assert set(attacked) == {"generated (UTC)", *stated} and set(purified) == {*attacked, "purifier"}
    assert {key: attacked[key] for key in stated} == {key: purified[key] for key in stated} == {key: report[key] for key in stated}
    assert purified["purifier"] in report["purifiers"].split("; ") and "weights SHA-256 " in attacked["classifier"]


def test_a_shown_probability_never_reads_as_certain():
    """0.9952 was printed "100%" in the badges, the probability table and the report, on attacked images and
    on uploads that are no X-ray alike; a rounded 0 read as impossible."""
    from core.lab import session_report, shown_percent
    from pages.common import probability_table, reading_badge

    assert [shown_percent(p) for p in (0.995, 0.9949, 0.004, 0.5, 1.0, 0.0)] == [">99%", "99%", "<1%", "50%", ">99%", "<1%"]
    near_certain = Reading((0.0048, 0.9952))
    assert reading_badge(near_certain).endswith("**PNEUMONIA**] · >99%")
    assert probability_table({"Adversarial": near_certain}).endswith("| Adversarial | <1% | >99% |")
    report = session_report({"threat model": "grey"}, {"Adversarial": near_certain}, {})
    assert "| Adversarial | PNEUMONIA | >99% | – |" in report and "100%" not in report


def test_the_lab_says_a_transfer_attacker_never_saw_the_classifier_and_the_notice_bounds_the_calibration():
    """The lab told a transfer attack, crafted on the substitute, that it "saw only the classifier"; and its
    notice called every percentage calibrated, uploads and attacked images included."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from core.evaluate import EvaluationConfig

    app = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    app.switch_page("pages/lab.py").run()
    notice = next(caption.value for caption in app.caption if caption.value.startswith("Research tool, not a diagnostic device"))
    assert "Kermany test cohort only" in notice and "an attacked image) it is not a calibrated probability" in notice
    app.selectbox(key="classifier").set_value("resnet")
    app.selectbox(key="threat").set_value("transfer").run()
    assert not app.exception, app.exception
    said = f"crafted the image on **{EvaluationConfig.substitute}** and never saw this classifier or the purifier"
    assert any(info.value.startswith(f"The attacker above (**transfer**) {said}.") for info in app.info)
    assert not [info for info in app.info if "saw only the classifier" in info.value]
    assert any(caption.value.endswith(f"the attacker {said}") for caption in app.caption)
