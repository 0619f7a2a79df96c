"""gradio_app's page as a browser session drives it, through Gradio's own Blocks.process_api: no server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import gradio as gr
import pytest

import gradio_app

REPO_ROOT = Path(__file__).resolve().parents[1]
LABELS = {  # the inputs, by the start of their labels
    "Upload": None,
    "…or a sample": "real normal #1",
    "Classifier": "vit",
    "Attack": "fgsm",
    "Budget": 0.03,
    "Purifier": "cold_blur",
}


def _run(page: gr.Blocks, session: str, listener: int, values: dict[str, object]) -> list:
    """One listener's answer to the session `session`, as the server sends it: its postprocessed outputs."""
    inputs = [next((value for start, value in values.items() if block.label.startswith(start)), None) for block in page.fns[listener].inputs]
    return asyncio.run(page.process_api(block_fn=listener, inputs=inputs, request=gr.Request(session_hash=session)))["data"]


def _click(page: gr.Blocks, session: str, button: str, **changed: object) -> tuple[int, dict[str, object]]:
    """A click on `button` with some inputs changed: the unqueued listeners run at once, in order, as the
    browser runs them; the queued run is returned, to be finished later."""
    values = {**LABELS, **changed}
    target = next(block._id for block in page.blocks.values() if isinstance(block, gr.Button) and block.value == button)
    queued = None
    for listener, function in page.fns.items():
        if (target, "click") in [tuple(t) for t in function.targets]:
            if function.queue:
                queued = listener
            else:
                _run(page, session, listener, values)
    return queued, values


@pytest.fixture()
def page(tmp_path, monkeypatch) -> gr.Blocks:
    """The page, writing its answers' images under tmp_path rather than the shared gradio cache."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    return gradio_app.build()


def test_a_run_overtaken_by_a_newer_click_leaves_the_newer_panels_alone(page, tmp_path):
    # Without it a slow run finishing after the visitor changed the image and ran again painted the old
    # image's answer over the new one's panels.
    assert page.config["connect_heartbeat"] is False  # a gr.State would hold one open and stop gradio emptying its cache
    session = "a visitor"
    older = _click(page, session, "Attack, then purify", **{"…or a sample": "real pneumonia #1"})
    upload = tmp_path / "xray.png"  # in the upload folder, where the browser's uploads land
    upload.write_bytes((REPO_ROOT / "assets" / "gallery" / "real" / "normal_1.png").read_bytes())
    newer = _click(page, session, "Classify", Upload={"path": str(upload), "orig_name": upload.name, "meta": {"_type": "gradio.FileData"}})
    newer_answer = _run(page, session, *newer)
    assert newer_answer[-1].startswith("image: an upload")  # noted at the click as the run received it: answered
    older_answer = _run(page, session, *older)  # finished after the newer click
    assert len(older_answer) == 8
    assert all(answer == {"__type__": "update"} for answer in older_answer), older_answer


def test_an_api_caller_is_answered_whatever_it_sent_since(page):
    # gradio_client calls the named endpoints only (the listener noting clicks is private), and one Client
    # is one session: its concurrent jobs must each get their own answer.
    session = "a client"
    endpoint = next(index for index, function in page.fns.items() if function.api_name == "classify")
    first = _run(page, session, endpoint, {**LABELS, "…or a sample": "real pneumonia #1"})
    second = _run(page, session, endpoint, LABELS)
    assert first[-1].startswith("image: real pneumonia #1") and second[-1].startswith("image: real normal #1")


def test_the_page_opens_on_the_recommended_defense(page):
    """It opened on `vit` and `cold_direct` while configs/defenses/recommended.yaml, which the Streamlit lab
    opens on, named another classifier and purifier."""
    from core.defense import load_defense

    recommended = load_defense("recommended")
    dropdowns = {block.label: block for block in page.blocks.values() if isinstance(block, gr.Dropdown)}
    classifier, purifier = dropdowns["Classifier"], dropdowns["Purifier"]
    assert (classifier.value, purifier.value) == (recommended.classifier, recommended.purifier)
    assert classifier.value in [value for _, value in classifier.choices] and purifier.value in [value for _, value in purifier.choices]


def test_the_verdict_says_when_the_purifier_alone_changes_the_clean_reading():
    # The Streamlit lab appends it and the server did not: here the Blurred purifier on its own reads this
    # NORMAL X-ray as PNEUMONIA, so "purification changed it" is the purifier's habit, not the attack undone.
    import torch

    from core.attacks import AttackConfig
    from core.data.gallery import gallery
    from core.io import load_image, to_model_input
    from core.lab import attack_image, read, verdict
    from pages.common import DEFAULT_DEPTH, DEFAULT_RECON_STEPS, DEFAULT_T_STAR, cached_purify, image_key, purifier_variants

    answer = gradio_app.attack_and_purify(None, "real normal #1", "resnet_at", "pgd", 0.03, "cold_blur")[6]
    # the lab's calls (pages/lab.py) for the same image, attack and purifier
    model = gradio_app._classifier("resnet_at")
    path, true_class = gallery()["real normal #1"]
    image = to_model_input(load_image(path), model.image_size)
    adversarial = attack_image(model, image, AttackConfig(name="pgd", eps=0.03, steps=10)).image
    name, params = purifier_variants(DEFAULT_DEPTH, DEFAULT_T_STAR, DEFAULT_RECON_STEPS)["Blurred"]
    clean, attacked = read(model, torch.cat([image, adversarial]))
    purified = read(model, cached_purify(image_key(adversarial), adversarial, name, params).image)[0]
    alone = read(model, cached_purify(image_key(image), image, name, params).image)[0]
    lab = verdict(clean, attacked, purified, true_class, through_purifier=True, purified_clean=alone).text
    assert answer == lab
    assert lab.endswith("; this purifier alone reads the clean image as PNEUMONIA")


def test_the_server_offers_the_labs_attacks_and_says_when_one_found_nothing(page):
    # It offered 9 attacks, AutoAttack at a minute a click and Square at 10 queries, which returned the
    # clean image with nothing said.
    from core.lab import INTERACTIVE_ATTACKS

    dropdown = next(block for block in page.blocks.values() if isinstance(block, gr.Dropdown) and block.label.startswith("Attack"))
    assert dropdown.choices == list(INTERACTIVE_ATTACKS.items())
    with pytest.raises(gr.Error) as refused:
        gradio_app.attack(None, "real normal #1", "resnet_at", "autoattack", 0.03)
    assert refused.value.message.endswith("attack 'autoattack' is not offered here; choose one of: fgsm, pgd, apgd")
    # resnet_at is adversarially trained: APGD finds nothing within 0.005 and returns the original
    found_nothing = gradio_app.attack(None, "real normal #1", "resnet_at", "apgd", 0.005)[-1].splitlines()
    assert found_nothing[2].endswith(": found nothing within ε that changes the reading; the attacked image is the original")
    flipped = gradio_app.attack(None, "real normal #1", "resnet_at", "pgd", 0.1)  # a large budget flips it
    assert flipped[1] != flipped[2] and flipped[-1].splitlines()[2] == "attack: pgd, 10 steps, L∞ ε 0.1 (25.5/255), seed 0"


def test_the_none_purifier_is_said_to_be_no_purifier():
    details = gradio_app.attack_and_purify(None, "real normal #1", "vit", "fgsm", 0.0, "none")[-1].splitlines()
    assert "threat model: grey-box, attacker sees the classifier only; no purifier in this answer" in details  # not "applied at test time"


def test_an_eps_of_true_from_the_api_gets_cores_one_line(page):
    # A bool is an int: it passed the slider's number check, and gradio refused True as "greater than maximum value 0.1".
    endpoint = next(index for index, function in page.fns.items() if function.api_name == "attack")
    with pytest.raises(gr.Error) as refused:
        _run(page, "a client", endpoint, {**LABELS, "Budget": True})
    assert refused.value.message == "This input cannot be used: eps must be a number; got True"
