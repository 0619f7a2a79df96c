"""Clinician walkthrough: one X-ray, the model's reading, an invisible attack, and the purified image."""

from __future__ import annotations

import streamlit as st

from core.lab import amplified_perturbation, perturbation_norms, read
from core.io import load_image, to_model_input
from core.purifiers.cold import ColdConfig
from pages.common import (
    available_classifiers, cached_attack, cached_purify, classifier, gallery, gallery_attribution, image_key,
    reading_badge, show_image, true_label_note,
)

DEFENCE = ("cold_blur", (("depth", ColdConfig().depth),))
ATTACK = (("name", "pgd"), ("eps", 0.03), ("steps", 10))
STEPS = ("The X-ray", "An invisible attack", "The purified image", "What this does and does not show")

st.title("Clinician walkthrough")
st.caption("A guided story in four steps. No maths needed; every term is explained where it appears.")

names = available_classifiers()
samples = gallery()
if "vit" not in names or not samples:
    st.error("The walkthrough needs the shipped `vit` classifier and at least one sample image.")
    st.stop()

step = st.session_state.setdefault("walkthrough_step", 0)
choice = st.selectbox("X-ray used in this story", list(samples), key="walkthrough_sample")
st.caption(gallery_attribution())
path, true_class = samples[choice]
model = classifier("vit")
image = to_model_input(load_image(path), model.image_size)
key = image_key(image)
clean = read(model, image)[0]

st.progress((step + 1) / len(STEPS), text=f"Step {step + 1} of {len(STEPS)}: {STEPS[step]}")

if step >= 1:
    with st.spinner("The attacker is computing its perturbation …"):
        adversarial = cached_attack(key, image, "vit", ATTACK, "grey", *DEFENCE, 1)
    attacked = read(model, adversarial.image)[0]
if step >= 2:
    purified = cached_purify(key, adversarial.image, *DEFENCE)
    restored = read(model, purified.image)[0]

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
            "confidence, not a probability of disease."
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
        show_image(amplified_perturbation(image, adversarial.image), "The change, amplified")
    norms = perturbation_norms(image, adversarial.image)
    st.markdown(
        f"The two images on the left look the same to a person: no pixel moved by more than "
        f"**{norms['linf'] * 100:.0f}%** of the grey scale. Yet the model now reads "
        f"{reading_badge(attacked)}. An *adversarial attack* is a tiny, deliberately computed change "
        "that exploits how the network weighs pixels; the heat map on the right shows where it was made."
    )
elif step == 2:
    cols = st.columns(3)
    for column, (img, caption, reading) in zip(
        cols, ((image, "Original", clean), (adversarial.image, "Attacked", attacked), (purified.image, "Purified", restored))
    ):
        with column:
            show_image(img, caption)
            st.markdown(reading_badge(reading))
    st.markdown(
        "*Purification* blurs the attacked image just enough to wash out the engineered change, before "
        "the model reads it (a cold-diffusion model can then restore detail: see the lab). "
        f"After purification the model reads {reading_badge(restored)}."
    )
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
if back.button("◀ Back", disabled=step == 0, key="walkthrough_back"):
    st.session_state.walkthrough_step = step - 1
    st.rerun()
if forward.button("Next ▶", disabled=step == len(STEPS) - 1, key="walkthrough_next"):
    st.session_state.walkthrough_step = step + 1
    st.rerun()
