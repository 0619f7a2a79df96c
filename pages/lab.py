"""Attack & purify lab: pick an X-ray, attack the classifier, purify, compare side by side."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NoReturn

import streamlit as st

from core.attacks import ATTACKS as ATTACK_SPECS
from core.attacks import THREAT_MODELS, AttackConfig
from core.data.gallery import gallery_attribution
from core.errors import PurifyLabError
from core.io import encode_png
from core.jobs import attack_calls
from core.lab import INTERACTIVE_ATTACKS, amplified_perturbation, attack_image, perturbation_norms, purify_image, read, session_report, verdict
from core.purifiers import PURIFIERS
from core.weights import reads_through_note
from pages.common import (
    DEFAULT_DEFENSE,
    DEFAULT_DEPTH,
    DEFAULT_RECON_STEPS,
    DEFAULT_T_STAR,
    LIGHT_CALLS,
    PAGE_RENDERED,
    RECOMMENDED,
    RECOMMENDED_PANEL,
    SAMPLE_HELP,
    SUBSTITUTE,
    available_classifiers,
    cached_attack,
    cached_purify,
    call_cost,
    chosen_image,
    classifier,
    denoiser_calls,
    estimate_text,
    gallery,
    heavy_job,
    image_key,
    keep_across_pages,
    probability_table,
    purifier,
    purifier_variants,
    reading_badge,
    research_notice,
    session_result,
    show_image,
    true_label_note,
    upload_field,
    uploaded,
    verdict_line,
)
from pages.startup import through_app_navigation

through_app_navigation()

ADAPTIVE = tuple(name for name, spec in THREAT_MODELS.items() if spec.goes_through_purifier)  # bpda, bpda-eot, white
EOT_DRAWS = 4
DEFAULT_TARGET = "One-shot DDPM"
SETTINGS = ("sample", "attack", "eps", "classifier", "threat", "target")  # widgets of the page
PANEL_SETTINGS = ("depth", "t_star", "recon_steps", "purifiers")  # widgets of the purification fragment


def panel_title(label: str) -> str:
    """The recommended panel is the recommended defense only with its own classifier; with another
    it is that classifier behind the same purifier, and says so."""
    if label == RECOMMENDED_PANEL and classifier_name != RECOMMENDED.classifier:
        return f"{PURIFIERS.get(RECOMMENDED.purifier).display_name} ({classifier_name})"
    return label


def setting_text(variant: tuple[str, tuple]) -> str:
    return ", ".join(f"{key} {value}" for key, value in variant[1]) or "its defaults"


def current_variants() -> dict[str, tuple[str, tuple]]:
    """The purifiers at the purification panel's slider values (set further down the page)."""
    state = st.session_state
    return purifier_variants(state["depth"], state["t_star"], state["recon_steps"])


def purification_controls() -> tuple[dict[str, tuple[str, tuple]], list[str]]:
    """The panel's sliders and purifier choice (the purifiers at those settings, the chosen ones).
    Drawn by the panel, and by a run that stops before it: Streamlit forgets a widget a run does not
    draw, and the browser then shows it at its minimum while the panels above were computed at the
    old settings; its next click would make the minimums real."""
    controls = st.columns(3)
    depth = controls[0].slider("Blur depth (cold diffusion)", 1, 20, key="depth", help="How far the image is blurred before it is restored.")
    t_star = controls[1].slider(
        "t* (diffusion noise level, fraction of T)",
        0.01,
        0.25,
        step=0.01,
        key="t_star",
        help="How much noise the DDPM-family purifiers add before removing it again.",
    )
    recon_steps = controls[2].slider("Reconstruction steps", 1, 20, key="recon_steps")
    variants = purifier_variants(depth, t_star, recon_steps)
    costs = {label: denoiser_calls(name, params) for label, (name, params) in variants.items()}
    # Options keep their plain names: Streamlit keeps a picked option's label from the run it was
    # picked in, so labels that moved with the sliders (their cost, a classifier's name) went stale.
    chosen = st.multiselect(
        "Purifiers to run (add the diffusion ones here: One-shot DDPM, DDPM, DDIM, DiffDefense, cold-diffusion reconstructions)",
        list(variants),
        key="purifiers",
        help="The heavy ones (more than one denoiser call) run only when you add them here, one visitor's at a "
        "time in a line shared by everyone on this server.",
    )
    heavy = [label for label in variants if costs[label] > LIGHT_CALLS]
    st.caption("Cost of the heavy ones here: " + "; ".join(f"{label}: {estimate_text(call_cost(), variants[label][0], costs[label])}" for label in heavy))
    return variants, chosen


def stop_keeping_settings() -> NoReturn:
    """st.stop() for a run that ends before the purification panel, which keeps its settings drawn."""
    with st.expander("Purification settings (used once the attack has run)"):
        purification_controls()
    st.stop()


st.title("Attack & purify lab")
research_notice()
names = available_classifiers()
if not names:
    st.error("No trained classifier is shipped in weights/: train one with `purifylab train classifier`.")
    st.stop()
# Back from another page, the lab shows the settings it was left with; defaults live in session state
# (not in the widgets), so a restored value and a default never compete.
keep_across_pages(*SETTINGS, *PANEL_SETTINGS)
for key, default in {
    "attack": list(INTERACTIVE_ATTACKS)[1],
    "eps": 0.03,
    "classifier": RECOMMENDED.classifier if RECOMMENDED.classifier in names else names[0],
    "target": DEFAULT_TARGET,
    "depth": DEFAULT_DEPTH,
    "t_star": DEFAULT_T_STAR,
    "recon_steps": DEFAULT_RECON_STEPS,
    "purifiers": list(DEFAULT_DEFENSE),
}.items():
    st.session_state.setdefault(key, default)

st.caption(
    "The image, the attack and its budget are set here; the classifier, the threat model and the "
    "attacker's target are in the sidebar (on a phone: the » button at the top left)."
)
sources = gallery()
with st.expander("Image and attack", expanded=True):
    image_column, attack_column = st.columns(2)
    with image_column:
        choice = st.selectbox("Sample X-ray", list(sources), key="sample", disabled=not sources or uploaded("upload"), help=SAMPLE_HELP)
        st.caption(gallery_attribution())
        upload = upload_field("upload")
    with attack_column:
        attack_label = st.selectbox("Attack", list(INTERACTIVE_ATTACKS), key="attack")
        eps = st.slider(
            "Budget ε (L∞, pixel scale 0–1)",
            0.0,
            0.1,
            step=0.005,
            key="eps",
            format="%.3f",
            help="Largest change allowed to any pixel; 0.03 is the papers' setting (about 8/255).",
        )
with st.sidebar:
    st.header("Classifier and threat model")
    classifier_name = st.selectbox(
        "Classifier",
        names,
        key="classifier",
        help=f"Default: the recommended defense's classifier, {RECOMMENDED.classifier} ({RECOMMENDED.description}).",
    )
    threat = st.selectbox("Threat model", list(THREAT_MODELS), key="threat")
    variants = current_variants()
    target_label = st.selectbox(
        "Purifier the attacker differentiates through",
        list(variants),
        key="target",
        disabled=threat not in ADAPTIVE,
        help="Only the adaptive threat models (bpda, bpda-eot, white) see a purifier; they cost many denoiser calls.",
    )
    eot = THREAT_MODELS[threat].draws_per_step(EOT_DRAWS)
    target = variants[target_label] if threat in ADAPTIVE else variants["Blurred"]  # grey, transfer: never seen
    drawn = eot if PURIFIERS.get(target[0]).stochastic else 1  # a deterministic purifier is drawn once, whatever EOT says
    st.caption(THREAT_MODELS[threat].describe(drawn))  # under the boxes: a narrow sidebar cut it off inside

model = classifier(classifier_name)
size = model.image_size
if note := reads_through_note(classifier_name, model.card):
    st.info(note)
image, true_class = chosen_image(upload, sources.get(choice), size, stop=stop_keeping_settings)
origin = "your upload (kept in memory only)" if upload is not None else choice

key = image_key(image)
steps = 1 if INTERACTIVE_ATTACKS[attack_label] == "fgsm" else 10
attack = (("name", INTERACTIVE_ATTACKS[attack_label]), ("eps", eps), ("steps", steps))
if threat in ADAPTIVE:
    seen = f"differentiated through **{panel_title(target_label)}** ({setting_text(target)})"
elif THREAT_MODELS[threat].needs_substitute:
    seen = f"crafted the image on **{SUBSTITUTE}** and never saw this classifier or the purifier"
else:
    seen = "saw no purifier"
attack_text = f"{attack_label}, {steps} step(s), L∞ ε {eps:.3f}" + (f", EOT {drawn} draws per step" if drawn > 1 else "") + f", seed {AttackConfig().seed}"
clean_reading = read(model, image)[0]
# Before any caption says an attack ran: 'white' needs exact gradients (a fact of the purifier's class),
# and a transfer attack needs a model other than the one it is crafted on.
refusal = None
try:
    THREAT_MODELS[threat].check_purifier(PURIFIERS.get(target[0]))
except PurifyLabError as error:
    refusal = f"{panel_title(target_label)}: {error}."
if THREAT_MODELS[threat].needs_substitute and classifier_name == SUBSTITUTE:
    refusal = f"Transfer attacks are crafted on {SUBSTITUTE}: against {SUBSTITUTE} itself that is the grey-box attack; choose grey."
if refusal:
    st.warning(refusal)
    show_image(image, "Original")
    st.markdown(reading_badge(clean_reading))
    stop_keeping_settings()
st.caption(
    f"Image: {origin} · {true_label_note(true_class)} · model input {size}×{size} · attack: {attack_text} · "
    f"threat model **{threat}**: {THREAT_MODELS[threat].describe(drawn)} · the attacker {seen}"
)

calls = attack_calls(threat, denoiser_calls(*target), steps, drawn)
if calls <= LIGHT_CALLS:
    with st.spinner("Attacking …"):
        adversarial = cached_attack(key, image, classifier_name, attack, threat, *target, eot)
else:
    job = ("attack", key, classifier_name, attack, threat, target, eot)
    attack_kind = f"{threat} attack through {target[0]}"
    asked = st.session_state.setdefault("asked_attacks", set())
    if job not in asked and job not in st.session_state.get("heavy_results", {}):
        prompt = st.empty()
        with prompt.container():
            st.info(
                f"The **{threat}** attacker differentiates through {panel_title(target_label)}: {estimate_text(call_cost('attack'), attack_kind, calls)}. "
                "It runs when you ask, so the page stays usable meanwhile."
            )
            run = st.button(f"Run the {threat} attack", key="run_attack", type="primary")
        if not run:
            show_image(image, "Original")
            st.markdown(reading_badge(clean_reading))
            stop_keeping_settings()
        prompt.empty()  # the attack is running: the question is answered
        asked.add(job)
    adversarial = session_result(
        job,
        lambda: heavy_job(
            f"{threat} attack through {target_label}",
            call_cost("attack"),
            attack_kind,
            calls,
            purifier(*target),
            lambda: attack_image(model, image, AttackConfig(**dict(attack)), threat=threat, purifier=purifier(*target), eot=eot),
        ),
    )

adversarial_key = image_key(adversarial.image)  # purifications are of this image, not of the clean one
adversarial_reading = read(model, adversarial.image)[0]
norms = perturbation_norms(adversarial.clean, adversarial.image)  # from the grey levels the attack started on: rounding is no perturbation
found_nothing = norms["linf"] == 0 and ATTACK_SPECS.get(INTERACTIVE_ATTACKS[attack_label]).keeps_only_successes


def provenance() -> dict[str, str]:
    """What made the attacked image, as the report states it. Every PNG download carries it too, so two
    files never look alike whatever made them; the image is not named: an upload's name can identify a patient."""
    return {
        "generated (UTC)": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "classifier": f"{classifier_name} (weights SHA-256 {model.card['sha256'][:12]})",
        "attack": attack_text + (": found nothing within ε, the original image was purified" if found_nothing else ""),
        "threat model": f"{threat}: {THREAT_MODELS[threat].describe(drawn)}; the attacker {seen.replace('**', '')}",
    }


def purifier_fact(label: str, variant: tuple[str, tuple]) -> str:
    """A panel's purifier at its settings, as the report and that panel's PNG state it."""
    return f"{panel_title(label)}: {variant[0]} at {setting_text(variant)}"


top = st.columns(3)
with top[0]:
    show_image(image, "Original")
    st.markdown(reading_badge(clean_reading))
with top[1]:
    show_image(adversarial.image, "Adversarial")
    st.markdown(reading_badge(adversarial_reading))
    st.download_button(
        "Attacked image (PNG)",
        encode_png(adversarial.image, provenance()),
        file_name="attacked.png",
        mime="image/png",
        key="download_attacked",
        on_click="ignore",
    )
with top[2]:
    show_image(amplified_perturbation(adversarial.clean, adversarial.image), "|perturbation| (amplified)")
    st.markdown(f"L∞ {norms['linf']:.3f} · L2 {norms['l2']:.2f} · attack {adversarial.seconds:.2f} s")
if found_nothing:
    st.info(
        f"{attack_label} found no perturbation within ε = {eps:.3f} that changes this reading; where it fails it returns "
        "the original image, so the panels below purify the original. PGD shows its last attempt instead."
    )


def purified(label: str, name: str, params: tuple):
    """One panel's purification: light ones at once (cached for everyone), heavy ones in the shared line."""
    cost = denoiser_calls(name, params)
    if cost <= LIGHT_CALLS:
        return cached_purify(adversarial_key, adversarial.image, name, params)
    return session_result(
        ("purify", adversarial_key, name, params),
        lambda: heavy_job(label, call_cost(), name, cost, purifier(name, params), lambda: purify_image(purifier(name, params), adversarial.image)),
    )


def attacker_note(label: str, variant: tuple[str, tuple]) -> str:
    if threat not in ADAPTIVE:
        return f"{threat}: the attacker saw no purifier"
    if label != target_label:
        return f"{threat}: the attacker differentiated through {panel_title(target_label)}"
    if variant != target:
        return (
            f"the attacker differentiated through this purifier at {setting_text(target)}; this panel runs at "
            f"{setting_text(variant)}, which the attacker never saw"
        )
    return f"{threat}: the attacker differentiated through this purifier"


@st.fragment
def purification_panel() -> None:
    st.subheader("Purified (the adversarial image after the defence)")
    keep_across_pages(*PANEL_SETTINGS)  # a fragment's rerun changes these without the page's run
    variants, chosen = purification_controls()
    if threat in ADAPTIVE and target_label not in chosen:  # the purifier the attacker saw is always shown
        chosen = [*chosen, target_label]
    readings = {"Original": clean_reading, "Adversarial": adversarial_reading}
    verdicts = {}
    columns = st.columns(max(len(chosen), 1))
    for column, label in zip(columns, chosen, strict=False):
        with column:
            try:
                output = purified(label, *variants[label])
            except PurifyLabError as error:  # e.g. that purifier's weights are not shipped
                st.warning(f"{label}: {error}")
                continue
            readings[panel_title(label)] = reading = read(model, output.image)[0]
            name, params = variants[label]
            # the purifier's reading of the clean image, where it costs no more than the panel's own
            light = denoiser_calls(name, params) <= LIGHT_CALLS and PURIFIERS.get(name).changes_image
            alone = read(model, cached_purify(key, image, name, params).image)[0] if light else None
            outcome = verdict(clean_reading, adversarial_reading, reading, true_class, through_purifier=PURIFIERS.get(name).changes_image, purified_clean=alone)
            verdicts[panel_title(label)] = outcome
            show_image(output.image, panel_title(label))
            st.markdown(f"{reading_badge(reading)} · {output.seconds:.2f} s")
            st.markdown(verdict_line(outcome))
            st.caption(attacker_note(label, (name, params)))
            if threat in ADAPTIVE and label == target_label and (name, params) != target:
                if st.button("Attack this setting", key="reattack", help="Craft the attack again through the purifier as this panel runs it."):
                    st.rerun()
            st.download_button(
                "PNG",
                encode_png(output.image, {**provenance(), "purifier": purifier_fact(label, variants[label])}),
                file_name=f"purified_{variants[label][0]}.png",
                mime="image/png",
                key=f"download_{variants[label][0]}",
                on_click="ignore",
            )
    st.markdown(probability_table(readings))
    made = provenance()
    facts = {
        "generated (UTC)": made.pop("generated (UTC)"),
        "image": "an upload (not named here)" if upload is not None else origin,
        "true label": true_class or "unknown",
        **made,
        "purifiers": "; ".join(purifier_fact(label, variants[label]) for label in chosen),
    }
    st.download_button(
        "Report of these readings (Markdown)",
        session_report(facts, readings, verdicts),
        file_name="purifylab_report.md",
        mime="text/markdown",
        key="download_report",
        on_click="ignore",
    )


purification_panel()
if threat not in ADAPTIVE:
    st.info(
        f"The attacker above (**{threat}**) {seen}. An attacker who differentiates through this classifier and "
        "the purifier (bpda-eot, white: choose one in the sidebar) is much stronger — see the robustness tables."
    )
PAGE_RENDERED.set()
