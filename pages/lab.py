"""Attack & purify lab: pick an X-ray, attack the classifier, purify, compare side by side."""

from __future__ import annotations

import streamlit as st

from core.attacks import THREAT_MODELS
from core.lab import amplified_perturbation, perturbation_norms, read, verdict
from pages.common import (
    available_classifiers, cached_attack, cached_purify, classifier, decode_upload, gallery, image_key,
    probability_chart, purifier, reading_badge, show_image, true_label_note, verdict_line,
)
from core.data.gallery import gallery_attribution
from core.errors import PurifyLabError
from core.purifiers import PURIFIERS
from core.purifiers.cold import ColdConfig
from core.io import load_image, to_model_input

DEFAULT_DEPTH = ColdConfig().depth
ATTACKS = {"FGSM": "fgsm", "PGD": "pgd", "AutoPGD (APGD-CE)": "apgd"}

st.title("Attack & purify lab")
names = available_classifiers()
if not names:
    st.error("No trained classifier is shipped in weights/: train one with `purifylab train classifier`.")
    st.stop()

with st.sidebar:
    st.header("Image")
    sources = gallery()
    choice = st.selectbox("Sample X-ray", list(sources), key="sample", disabled=not sources)
    st.caption(gallery_attribution())
    upload = st.file_uploader("…or upload your own (PNG, JPEG, DICOM)", key="upload",
                              type=["png", "jpg", "jpeg", "dcm", "dicom", "bmp", "tif", "tiff", "webp", "gif"])
    st.header("Classifier and attack")
    classifier_name = st.selectbox("Classifier", names, key="classifier")
    attack_label = st.selectbox("Attack", list(ATTACKS), index=1, key="attack")
    eps = st.slider("Budget ε (L∞, pixel scale 0–1)", 0.0, 0.1, 0.03, 0.005, key="eps", format="%.3f",
                    help="Largest change allowed to any pixel; 0.03 is the papers' setting (about 8/255).")
    threat = st.selectbox("Threat model", list(THREAT_MODELS), key="threat",
                          format_func=lambda t: f"{t} — {THREAT_MODELS[t].description}")

model = classifier(classifier_name)
size = model.image_size
true_class = None
if upload is not None:
    image = decode_upload(upload.getvalue(), size)
    origin = "your upload (kept in memory only)"
elif sources:
    path, true_class = sources[choice]
    image = to_model_input(load_image(path), size)
    origin = choice
else:
    st.info("No sample images are available: upload an X-ray in the sidebar.")
    st.stop()
if image is None:
    st.stop()

key = image_key(image)
attack = (("name", ATTACKS[attack_label]), ("eps", eps), ("steps", 1 if ATTACKS[attack_label] == "fgsm" else 10))
defence = ("cold_blur", (("depth", st.session_state.get("depth", DEFAULT_DEPTH)),))
with st.spinner("Attacking …"):
    adversarial = cached_attack(key, image, classifier_name, attack, threat, *defence, THREAT_MODELS[threat].draws_per_step(4))

adversarial_key = image_key(adversarial.image)  # purifications are of this image, not of the clean one
clean_reading, adversarial_reading = read(model, image)[0], read(model, adversarial.image)[0]
norms = perturbation_norms(image, adversarial.image)
st.caption(f"Image: {origin} · {true_label_note(true_class)} · model input {size}×{size} · threat model **{threat}**: {THREAT_MODELS[threat].description}")

top = st.columns(3)
with top[0]:
    show_image(image, "Original")
    st.markdown(reading_badge(clean_reading))
with top[1]:
    show_image(adversarial.image, "Adversarial")
    st.markdown(reading_badge(adversarial_reading))
with top[2]:
    show_image(amplified_perturbation(image, adversarial.image), "|perturbation| (amplified)")
    st.markdown(f"L∞ {norms['linf']:.3f} · L2 {norms['l2']:.2f} · attack {adversarial.seconds:.2f} s")


@st.fragment
def purification_panel() -> None:
    st.subheader("Purified (the adversarial image after the defence)")
    controls = st.columns(3)
    depth = controls[0].slider("Blur depth (cold diffusion)", 1, 20, DEFAULT_DEPTH, key="depth",
                               help="How far the image is blurred before it is restored.")
    t_star = controls[1].slider("t* (diffusion noise level, fraction of T)", 0.01, 0.25, 0.04, 0.01, key="t_star",
                                help="How much noise the DDPM-family purifiers add before removing it again.")
    recon_steps = controls[2].slider("Reconstruction steps", 1, 20, 5, key="recon_steps")
    def knob(name: str) -> tuple[str, float]:
        """The slider a purifier reads, under the field name its class declares: t* if it has one, else depth."""
        sweeps = PURIFIERS.get(name).sweeps
        return (sweeps["tstar"], t_star) if "tstar" in sweeps else (sweeps["depth"], depth)

    variants = {
        PURIFIERS.get(name).display_name: (name, (knob(name), *extra))
        for name, extra in (("cold_blur", ()), ("cold_direct", ()), ("one_shot", ()), ("cold_recon", (("steps", min(recon_steps, depth)),)),
                            ("ddpm", ()), ("ddim", ()), ("diffdefense", ()))
    }
    costs = {label: purifier(name, params).nfe() for label, (name, params) in variants.items()}
    chosen = st.multiselect(
        "Purifiers to run (cost in denoiser calls; about 0.1 s each on 2 CPU cores)", list(variants),
        default=list(variants)[:3], key="purifiers", format_func=lambda label: f"{label} ({costs[label]} calls)",
        help="The heavy ones run only when you add them here.",
    )
    readings = {"Original": clean_reading, "Adversarial": adversarial_reading}
    columns = st.columns(max(len(chosen), 1))
    for column, label in zip(columns, chosen):
        name, params = variants[label]
        try:
            with column, st.spinner(f"{label}: {costs[label]} denoiser calls …"):
                output = cached_purify(adversarial_key, adversarial.image, name, params)
        except PurifyLabError as error:  # e.g. that purifier's weights are not shipped
            column.warning(f"{label}: {error}")
            continue
        reading = read(model, output.image)[0]
        readings[label] = reading
        with column:
            show_image(output.image, label)
            st.markdown(f"{reading_badge(reading)} · {output.seconds:.2f} s")
            st.markdown(verdict_line(verdict(clean_reading, adversarial_reading, reading, true_class)))
    st.plotly_chart(probability_chart(readings), key="probabilities")


purification_panel()
st.info(f"The attacker above targeted the classifier through `{defence[0]}` under the **{threat}** threat model "
        "(grey: it saw the classifier only). An attacker who also differentiates through the purifier "
        "(bpda-eot, white) is much stronger — see the robustness tables.")
