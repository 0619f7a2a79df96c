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
