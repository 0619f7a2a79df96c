"""Clinician walkthrough: one X-ray, the model's reading, an invisible attack, and the purified image."""

from __future__ import annotations

import streamlit as st

from core.data.gallery import gallery_attribution
from core.lab import amplified_perturbation, interactive_settings, misread, perturbation_norms, read, verdict
from pages.common import (
    PAGE_RENDERED,
    SAMPLE_HELP,
    available_classifiers,
    cached_attack,
    cached_purify,
    chosen_image,
    classifier,
    gallery,
    image_key,
    keep_across_pages,
    reading_badge,
    research_notice,
    show_image,
    true_label_note,
    upload_field,
    uploaded,
    verdict_line,
)
from pages.startup import through_app_navigation

through_app_navigation()

DEFENCE = ("cold_blur", interactive_settings()["cold_blur"])  # the lab's Blurred panel at rest
# The two budgets of the DDPM-defense and Defensive Diffusion papers: 2/255 is hard to see on a
# screen, 8/255 (about 0.03) leaves visible grain and banding on close inspection.
BUDGETS = {"2/255 (subtle)": 2 / 255, "8/255 (the papers' 0.03)": 8 / 255}
VISIBILITY = {
    "2/255 (subtle)": "On a normal screen the two images on the left are hard to tell apart:",
    "8/255 (the papers' 0.03)": "Look closely: the attacked image is grainier, with faint banding, although",
}
STEPS = ("The X-ray", "A small, targeted attack", "The purified image", "What this does and does not show")

st.title("Clinician walkthrough")
research_notice()
st.caption("A guided story in four steps. No maths needed; every term is explained where it appears.")

names = available_classifiers()
samples = gallery()
if "vit" not in names or not samples:
    st.error("The walkthrough needs the shipped `vit` classifier and at least one sample image.")
    st.stop()

step = st.session_state.setdefault("walkthrough_step", 0)
keep_across_pages("walkthrough_sample", "walkthrough_budget")
st.session_state.setdefault("walkthrough_budget", list(BUDGETS)[-1])  # the papers' budget first
choice = st.selectbox("X-ray used in this story", list(samples), key="walkthrough_sample", disabled=uploaded("walkthrough_upload"), help=SAMPLE_HELP)
st.caption(gallery_attribution())
upload = upload_field("walkthrough_upload")
if st.session_state.get("walkthrough_told_on_upload") and upload is None and step > 0:
    # an upload cannot be restored after a visit to another page: never tell its story on another image
    step = st.session_state.walkthrough_step = 0
    st.info("The uploaded X-ray is gone (removed, or not kept after a visit to another page): the story starts again on the X-ray chosen above.")
model = classifier("vit")
image, true_class = chosen_image(upload, samples[choice], model.image_size)  # an upload's: unknown
# only once the upload is accepted: removing a refused file leaves the story where it was
st.session_state.walkthrough_told_on_upload = upload is not None
key = image_key(image)
clean = read(model, image)[0]
misread_before_any_attack = misread(clean, true_class)

budget = st.radio(
    "Attack budget",
    list(BUDGETS),
    horizontal=True,
    key="walkthrough_budget",
    help="The largest change the attacker may make to any pixel, on the 0-255 grey scale.",
)
ATTACK = (("name", "pgd"), ("eps", BUDGETS[budget]), ("steps", 10))
st.progress((step + 1) / len(STEPS), text=f"Step {step + 1} of {len(STEPS)}: {STEPS[step]}")

if step >= 1:
    with st.spinner("The attacker is computing its perturbation …"):
        adversarial = cached_attack(key, image, "vit", ATTACK, "grey", *DEFENCE, 1)
    attacked = read(model, adversarial.image)[0]
if step >= 2:  # each image purified under its own key: the attacked one changes with the budget
    purified = cached_purify(image_key(adversarial.image), adversarial.image, *DEFENCE)
    restored = read(model, purified.image)[0]
    purified_clean = read(model, cached_purify(key, image, *DEFENCE).image)[0]

if step == 0:
    left, right = st.columns([1, 1])
    with left:
        show_image(image, "The X-ray as the model sees it")
    with right:
        st.markdown(f"**The model's reading:** {reading_badge(clean)} ({true_label_note(true_class)})")
        st.markdown(
            "The model is a *Vision Transformer*: a neural network that looks at the image in small "
            f"patches and weighs them against each other. It was trained by this project on "
            f"{model.card['data']['train_images']:,} pediatric chest X-rays. The percentage is its "
            "calibrated output for this reading on X-rays like those it was trained on, not a diagnosis."
        )
elif step == 1:
    cols = st.columns(3)
    with cols[0]:
        show_image(image, "Original")
        st.markdown(reading_badge(clean))
    with cols[1]:
        show_image(adversarial.image, "Attacked")
        st.markdown(reading_badge(attacked))
    with cols[2]:
        show_image(amplified_perturbation(adversarial.clean, adversarial.image), "The change, amplified")
    norms = perturbation_norms(adversarial.clean, adversarial.image)  # from the grey levels the attack started on
    flipped = attacked.label != clean.label
    if misread_before_any_attack:
        effect = f"The model already misread this X-ray (its true label is {true_class}); " + (
            f"the attack changed its reading to {reading_badge(attacked)}." if flipped else f"after the attack it still reads {reading_badge(attacked)}."
        )
    elif flipped:
        effect = f"Yet the model now reads {reading_badge(attacked)}."
    else:
        effect = f"This time the model still reads {reading_badge(attacked)}: the attack failed on this X-ray."
    st.markdown(
        f"{VISIBILITY[budget]} no pixel moved by more than **{norms['linf'] * 255:.0f} of 255** grey levels. "
        f"{effect} An *adversarial attack* is a small, deliberately computed change that exploits how the "
        "network weighs pixels; the map on the right shows where it was made (brighter = larger change)."
    )
elif step == 2:
    cols = st.columns(3)
    for column, (img, caption, reading) in zip(
        cols, ((image, "Original", clean), (adversarial.image, "Attacked", attacked), (purified.image, "Purified", restored)), strict=True
    ):
        with column:
            show_image(img, caption)
            st.markdown(reading_badge(reading))
    outcome = verdict(clean, attacked, restored, true_class)
    st.markdown(f"**Verdict:** {verdict_line(outcome)}")
    by_itself = purified_clean.label != clean.label
    if by_itself:
        worked = "changes the reading by itself, so this result says nothing about the attack"
    elif attacked.label == clean.label:
        worked = "had no attack to undo"
    elif misread_before_any_attack:
        worked = "brought back the model's original, **wrong** reading" if outcome.restored else "kept the attacked reading"
    else:
        worked = "undid the engineered change" if outcome.restored else "did **not** undo the attack on this X-ray"
    st.markdown(
        "*Purification* blurs the attacked image before the model reads it, to wash out the engineered "
        f"change (a cold-diffusion model can then restore detail: see the lab). The model reads "
        f"{reading_badge(restored)} after purification, and {reading_badge(purified_clean)} when the same "
        f"blur is applied to the original, unattacked X-ray: here the purifier {worked}. Blurring also "
        "removes detail the model uses."
    )
    st.caption("This attacker did not know about the purifier (grey-box): step 4 says what an attacker who does can do.")
else:
    st.markdown(
        "- **This is a research tool, not a diagnostic device.** The model was trained on one public "
        "pediatric data set and has not been validated for clinical use.\n"
        "- **The attacker here did not know about the purifier** (a *grey-box* attacker). An attacker who "
        "knows the defence and optimises through it (*adaptive* attack) is much stronger; the Robustness "
        "tables page reports both, with the threat model beside every number.\n"
        "- **Purification costs some accuracy on clean images**, and heavy blurring can hide real findings."
    )

back, _, forward = st.columns([1, 4, 1])


def go(offset: int) -> None:
    """A button's callback runs before the next run: one run per click, showing the new step."""
    st.session_state.walkthrough_step = min(max(st.session_state.walkthrough_step + offset, 0), len(STEPS) - 1)


back.button("◀ Back", disabled=step == 0, key="walkthrough_back", on_click=go, args=(-1,))
forward.button("Next ▶", disabled=step == len(STEPS) - 1, key="walkthrough_next", on_click=go, args=(1,))
PAGE_RENDERED.set()
