"""Certified robustness by diffusion denoised smoothing (Cohen et al. 2019; Carlini et al. 2023).

The smoothed classifier answers the class that f(denoise(x + sigma * eps)) returns most often under
Gaussian noise eps (or f(clamp(x + sigma * eps)) without a denoiser, for a noise-trained f).
CERTIFY estimates that class on n0 draws, then lower-bounds its probability p_A
on n fresh draws with a one-sided Clopper-Pearson bound at level alpha; when p_A > 1/2 no L2
perturbation of norm below sigma * Phi^-1(p_A) can change the smoothed answer, whatever the
attacker knows. Radii are L2 norms in [0, 1] pixels at the classifier's input resolution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.stats import beta, norm

from core.certified import certified_accuracy, certified_balanced_accuracy, certified_confidence_95
from core.certified import certified_curve as certified_curve  # re-exported: `from core.certify import certified_curve` keeps working
from core.defended import check_built, frozen_eval
from core.devices import device_name
from core.errors import PurifyLabError, check_range, check_types
from core.models import XrayClassifier
from core.purifiers.diffusion import is_noise_predictor
from core.purifiers.one_shot import OneShotPurifier
from core.purifiers.unet import UNET_SPECS
from core.weights import shipped_cards

ABSTAIN = -1
REPORTED_RADII = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class CertifyConfig:
    sigma: float = 0.25  # noise std in [0, 1] pixels
    n0: int = 100  # draws that pick the class
    n: int = 1000  # draws that bound its probability
    alpha: float = 0.001  # the certificate is wrong with probability at most alpha
    batch_size: int = 250
    seed: int = 0

    def __post_init__(self) -> None:
        check_types(self)  # n0=2.5 gets one line here, not a TypeError deep inside a draw
        self.validate()

    def validate(self) -> None:
        check_range("sigma", self.sigma, 0.0, 1.0, low_open=True)
        check_range("alpha", self.alpha, 0.0, 0.5, low_open=True)
        for name in ("n0", "n", "batch_size"):
            if getattr(self, name) < 1:
                raise PurifyLabError(f"{name} must be >= 1, got {getattr(self, name)}")


def shipped_denoiser_inputs() -> dict[str, tuple[int, int]]:
    """(channels, side length) of each shipped noise-prediction UNet, read from its card: the UNet
    `load_shipped_unet` would build, known without importing diffusers or loading any weights."""
    inputs = {}
    for stem, card in shipped_cards().items():
        if is_noise_predictor(card):
            spec = asdict(UNET_SPECS[card["unet_size"]]) | card.get("unet_overrides", {})
            inputs[stem] = (int(spec["in_channels"]), int(spec["sample_size"]))
    return inputs


def check_denoiser_fits(denoiser: str, classifier: XrayClassifier) -> None:
    """Refuse a denoiser that is not a shipped noise predictor of the classifier's input before any image
    loads: the first noise draw would refuse it only after the whole split was decoded."""
    inputs = shipped_denoiser_inputs()
    wanted = (classifier.in_channels, classifier.image_size)
    if inputs.get(denoiser) == wanted:
        return
    fitting = sorted(stem for stem, shape in inputs.items() if shape == wanted)
    found = (
        f"takes {inputs[denoiser][0]}-channel {inputs[denoiser][1]} px images"
        if denoiser in inputs
        else f"is not a shipped noise-prediction network (shipped: {', '.join(sorted(inputs)) or 'none'})"
    )
    advice = f"name one that does: {', '.join(fitting)}" if fitting else "none is shipped; train one with 'purifylab train diffusion'"
    raise PurifyLabError(f"denoiser '{denoiser}' {found}; the classifier reads {wanted[0]}-channel {wanted[1]} px images; {advice}")


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion."""
    return 0.0 if successes == 0 else float(beta.ppf(alpha, successes, trials - successes + 1))


def certified_radius(p_lower: float, sigma: float) -> float | None:
    """sigma * Phi^-1(p_lower), or None (abstain) when p_lower <= 1/2."""
    return float(sigma * norm.ppf(p_lower)) if p_lower > 0.5 else None


@torch.inference_mode()
def smoothed_counts(
    classifier: XrayClassifier,
    denoiser: OneShotPurifier | None,
    image: torch.Tensor,
    draws: int,
    config: CertifyConfig,
    generator: torch.Generator,
) -> np.ndarray:
    """How often each class wins over `draws` noisy, denoised copies of one image (1, C, H, W).

    Without a denoiser the noisy copies, clamped to [0, 1], go straight to a classifier trained
    under that noise (Cohen et al.'s original smoothing); the clamp is part of the base classifier,
    so the certificate still holds."""
    counts = np.zeros(classifier.num_classes, dtype=np.int64)
    remaining = draws
    while remaining > 0:
        size = min(config.batch_size, remaining)
        batch = image.expand(size, -1, -1, -1)
        noisy = batch + config.sigma * torch.randn(batch.shape, generator=generator, device=batch.device)
        inputs = noisy.clamp(0.0, 1.0) if denoiser is None else denoiser.denoise_pixel_noise(noisy, config.sigma)
        predictions = classifier(inputs).argmax(1)
        counts += np.bincount(predictions.cpu().numpy(), minlength=classifier.num_classes)
        remaining -= size
    return counts


def certify_image(
    classifier: XrayClassifier, denoiser: OneShotPurifier | None, image: torch.Tensor, config: CertifyConfig, seed: int
) -> tuple[int, float | None]:
    """Cohen et al.'s CERTIFY for one image: (class, radius), or (ABSTAIN, None)."""
    generator = torch.Generator(device=image.device).manual_seed(seed)
    chosen = int(smoothed_counts(classifier, denoiser, image, config.n0, config, generator).argmax())
    counts = smoothed_counts(classifier, denoiser, image, config.n, config, generator)
    radius = certified_radius(lower_confidence_bound(int(counts[chosen]), config.n, config.alpha), config.sigma)
    return (chosen, radius) if radius is not None else (ABSTAIN, None)


def certify_images(
    classifier: XrayClassifier,
    denoiser: OneShotPurifier | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: CertifyConfig,
    progress: bool = False,
) -> dict:
    """CERTIFY over a set of images (float [0, 1] or uint8, NCHW): per-image answers and the curves.

    Images and labels pass `craft`'s boundary check before any draw: a 0-255 or NaN image would
    otherwise be certified, and a missing label found only after all the compute. The classifier runs
    in eval mode and is handed back in the mode it came in."""
    from tqdm.auto import tqdm

    from core.attacks.threats import checked_inputs

    if denoiser is not None:  # Carlini et al.'s one-shot denoising is what maps sigma to a timestep
        check_built("denoiser", denoiser, OneShotPurifier, "the one_shot purifier or None (create_purifier('one_shot', ...) builds it)")
    images = images.float().div(255.0) if images.dtype == torch.uint8 else images
    images, labels = checked_inputs(classifier, images, labels)
    if denoiser is not None:  # a large sigma maps to a timestep the denoiser may never have seen
        timestep = denoiser.timestep_for_sigma(config.sigma)  # 0-based; the purifiers' t* of timestep k is (k + 1) / T
        denoiser.warn_beyond_training((timestep + 1) / denoiser.num_train_timesteps, f"sigma={config.sigma:g} (t={timestep})")
    predictions, radii = [], []
    with frozen_eval(classifier):
        for index in tqdm(range(images.shape[0]), desc="certify", unit="image", disable=not progress):
            image = images[index : index + 1]
            prediction, radius = certify_image(classifier, denoiser, image, config, seed=config.seed + index)
            predictions.append(prediction)
            radii.append(-1.0 if radius is None else radius)
    predictions_array, radii_array, labels_array = np.array(predictions), np.array(radii), labels.cpu().numpy()
    intervals = {r: certified_confidence_95(predictions_array, radii_array, labels_array, r) for r in REPORTED_RADII}
    return {
        "config": asdict(config),
        "sigma": config.sigma,
        "n": config.n,
        "images": int(len(predictions)),
        "image_size": int(images.shape[-1]),
        "device": device_name(images),  # the noise generator's: certify_image draws on the image's device
        "radius_units": f"L2 norm in [0, 1] pixels at the classifier's {images.shape[-1]} px input",
        "per_image": [
            {"label": int(label), "prediction": int(p), "radius": None if r < 0 else round(float(r), 6)}
            for label, p, r in zip(labels_array, predictions_array, radii_array, strict=True)
        ],
        "abstained": int((predictions_array == ABSTAIN).sum()),
        "certified_accuracy": {str(r): certified_accuracy(predictions_array, radii_array, labels_array, r) for r in REPORTED_RADII},
        "certified_balanced_accuracy": {str(r): certified_balanced_accuracy(predictions_array, radii_array, labels_array, r) for r in REPORTED_RADII},
        "confidence_95": {figure: {str(r): intervals[r][figure] for r in REPORTED_RADII} for figure in ("certified_accuracy", "certified_balanced_accuracy")},
    }
