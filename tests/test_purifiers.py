"""DDPM-family purifiers (noise, ddpm, ddim, diffdefense) on real X-rays with a tiny seeded UNet."""

from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch

import core.micro_batch as micro_batch
import core.purifiers.base as base
import core.purifiers.diffusion as diffusion
from core.cli import main
from core.errors import PurifyLabError
from core.io import load_image, to_model_input
from core.purifiers import create_purifier, list_purifiers, planned_calls, purifier_config
from core.purifiers.blur_degradation import BlurSchedule
from core.purifiers.cold import ColdConfig, ColdDirectPurifier
from core.purifiers.ddim import DDIMConfig, DDIMPurifier
from core.purifiers.ddpm import DDPMConfig, DDPMPurifier
from core.purifiers.diffdefense import DiffDefenseConfig, DiffDefensePaperConfig, DiffDefensePaperPurifier, DiffDefensePurifier
from core.purifiers.diffusion import DEFAULT_SCHEDULE
from core.purifiers.noise import NoiseConfig, NoisePurifier
from core.purifiers.one_shot import OneShotPurifier
from core.purifiers.unet import build_unet, call_unet
from core.weights import save_weights

SIZE = 16  # tiny UNet: 2 levels, any even side works


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny UNets are dominated by per-op overhead; a second thread only adds sync cost on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_unet():
    torch.manual_seed(0)
    return build_unet("tiny", sample_size=SIZE)


@pytest.fixture(scope="module")
def xrays(xray_paths) -> torch.Tensor:
    """Two real X-rays (one per class) at the tiny model's resolution."""
    files = [xray_paths["NORMAL"][0], xray_paths["PNEUMONIA"][0]]
    return torch.cat([to_model_input(load_image(path), SIZE) for path in files])


def build(name: str, unet, **params):
    classes = {
        "noise": NoisePurifier,
        "ddpm": DDPMPurifier,
        "ddim": DDIMPurifier,
        "diffdefense": DiffDefensePurifier,
        "diffdefense_paper": DiffDefensePaperPurifier,
        "one_shot": OneShotPurifier,
    }
    cls = classes[name]
    config = cls.config_type(**params)
    if name == "noise":
        return cls(config, schedule=DEFAULT_SCHEDULE)
    return cls(config, unet=unet, schedule=DEFAULT_SCHEDULE)


NAMES = ["noise", "ddpm", "ddim", "diffdefense", "diffdefense_paper", "one_shot"]


def test_registered_with_descriptions():
    names = list_purifiers()
    for name in NAMES:
        assert name in names and names[name]


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_for_a_seed_and_keeps_shape_and_range(name, tiny_unet, xrays):
    purifier = build(name, tiny_unet)
    first, again, other = purifier.purify(xrays, seed=3), purifier.purify(xrays, seed=3), purifier.purify(xrays, seed=4)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)  # all are stochastic: the seed matters
    assert first.shape == xrays.shape and first.dtype == torch.float32
    assert first.min() >= 0 and first.max() <= 1
    assert not torch.equal(first, xrays)


@pytest.mark.parametrize("name", NAMES)
def test_differentiable_mode_matches_fast_mode_and_gives_input_gradients(name, tiny_unet, xrays):
    purifier = build(name, tiny_unet)
    x = xrays.clone().requires_grad_(True)
    out = purifier(x, generator=torch.Generator().manual_seed(5))
    out.square().sum().backward()
    assert torch.allclose(out.detach().clamp(0, 1), purifier.purify(xrays, seed=5), atol=1e-5)
    assert x.grad is not None and x.grad.abs().sum() > 0 and torch.isfinite(x.grad).all()


def denoiser_calls_forward_and_backward(purifier, unet, xrays) -> tuple[int, int]:
    """UNet calls during a differentiable forward, and in all after its backward."""
    calls = []
    handle = unet.conv_in.register_forward_pre_hook(lambda *_: calls.append(1))  # first layer: recomputation stops early
    try:
        out = purifier(xrays.clone().requires_grad_(True), generator=torch.Generator().manual_seed(0))
        forward_calls = len(calls)
        out.sum().backward()
    finally:
        handle.remove()
    return forward_calls, len(calls)


@pytest.mark.parametrize("name", ["ddpm", "ddim"])
def test_a_large_graph_recomputes_each_denoiser_call_in_backward(name, tiny_unet, xrays, monkeypatch):
    """Gradient checkpointing: past the size limit each UNet call runs once forward and once more in backward."""
    monkeypatch.setattr(base, "CHECKPOINT_ABOVE_ELEMENT_CALLS", 0)
    purifier = build(name, tiny_unet)
    assert denoiser_calls_forward_and_backward(purifier, tiny_unet, xrays) == (purifier.nfe(), 2 * purifier.nfe())


@pytest.mark.parametrize(("name", "limit"), [("ddpm", base.CHECKPOINT_ABOVE_ELEMENT_CALLS), ("one_shot", 0)])
def test_a_small_graph_or_a_single_call_is_not_recomputed(name, limit, tiny_unet, xrays, monkeypatch):
    """Below the limit (two 16-px X-rays), or with one call at any size, checkpointing would only add a forward."""
    monkeypatch.setattr(base, "CHECKPOINT_ABOVE_ELEMENT_CALLS", limit)
    purifier = build(name, tiny_unet)
    assert not base.recomputed_in_backward(purifier.graph_calls(), xrays.numel())
    assert denoiser_calls_forward_and_backward(purifier, tiny_unet, xrays) == (purifier.nfe(), purifier.nfe())


def test_cpu_unet_calls_run_in_micro_batches_with_the_same_output_and_gradient(tiny_unet, xrays, monkeypatch):
    """Past `micro_batch.PIXELS` a CPU call is cut into chunks (the caches' size); the UNet
    normalises per image, so outputs, per-row timesteps and input gradients are those of one call."""
    rows = xrays.repeat(3, 1, 1, 1)  # 6 rows, 3 chunks of 2 below
    purifier = build("one_shot", tiny_unet, t_star=0.2)

    def run() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = rows.clone().requires_grad_(True)
        purified = purifier(x, generator=torch.Generator().manual_seed(0))
        purified.sum().backward()
        return purified.detach(), x.grad, call_unet(tiny_unet, rows, torch.arange(6) * 100).detach()

    whole = run()
    monkeypatch.setitem(micro_batch.PIXELS, "unet", 2 * SIZE * SIZE)
    sizes: list[int] = []
    handle = tiny_unet.register_forward_hook(lambda module, args, output: sizes.append(args[0].shape[0]))
    try:
        chunked = run()
    finally:
        handle.remove()
    assert sizes == [2, 2, 2, 2, 2, 2]  # the purifier's call, then call_unet's
    for one_call, in_chunks in zip(whole, chunked, strict=True):
        torch.testing.assert_close(in_chunks, one_call, atol=1e-6, rtol=1e-5)


def test_nfe_at_each_setting(tiny_unet):
    assert build("noise", tiny_unet).nfe() == 0
    assert build("one_shot", tiny_unet).nfe() == 1
    assert build("ddpm", tiny_unet).nfe() == 10  # default: t* = 0.04, 10 strided steps
    full = build("ddpm", tiny_unet, steps=None)
    assert full.nfe() == 40 and full.timesteps == list(range(39, -1, -1))  # the paper's 40 steps
    assert build("ddpm", tiny_unet, steps=1).timesteps == [39]
    assert build("ddim", tiny_unet).timesteps == list(range(99, -1, -10))  # T* = 0.1, skip 10: 10 calls
    assert build("ddim", tiny_unet, t_star=0.14, skip=10).nfe() == 14  # the paper's CIFAR-10 setting
    assert build("diffdefense", tiny_unet).nfe() == 5 * 1 * 2  # L * R * DDIM steps
    assert build("diffdefense", tiny_unet, L=3, R=2, steps=4).nfe() == 3 * 2 * 4
    assert build("diffdefense", tiny_unet, L=3, R=2, steps=4).graph_calls() == 4  # one reconstruction per backward


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("none", {}),
        ("noise", {"t_star": 0.1}),
        ("one_shot", {"t_star": 0.16}),
        ("ddpm", {"t_star": 0.08}),
        ("ddpm", {"t_star": 0.04, "steps": None}),
        ("ddim", {"t_star": 0.14, "skip": 10}),
        ("diffdefense", {"L": 3, "R": 2, "steps": 4}),
        ("diffdefense_paper", {"steps": 7}),
        ("cold_blur", {"depth": 10}),
        ("cold_direct", {}),
        ("cold_recon", {"depth": 12, "steps": 5}),
    ],
)
def test_planned_calls_match_the_built_purifier(name, params):
    """The app prices a job from the name and params alone; the built (shipped) purifier must agree."""
    assert planned_calls(name, **params) == create_purifier(name, **params).nfe()


def test_one_shot_is_tweedies_estimate_and_matches_pixel_noise_to_its_timestep(tiny_unet, xrays):
    purifier = build("one_shot", tiny_unet, t_star=0.1)
    alpha_bar = float(purifier.alphas_cumprod[purifier.start])
    noise = torch.randn(xrays.shape, generator=torch.Generator().manual_seed(1))
    sample = alpha_bar**0.5 * (2 * xrays - 1) + (1 - alpha_bar) ** 0.5 * noise
    # E[x0 | xt] inverts the forward process exactly where the predicted noise is the true one
    expected = (sample - (1 - alpha_bar) ** 0.5 * tiny_unet(sample, purifier.start).sample) / alpha_bar**0.5
    assert torch.allclose(purifier.tweedie(sample, purifier.start), expected, atol=1e-6)
    for sigma in (0.12, 0.25, 0.5):
        t = purifier.timestep_for_sigma(sigma)
        ratio = (1 - purifier.alphas_cumprod) / purifier.alphas_cumprod
        assert abs(float(ratio[t]) - 4 * sigma**2) <= float((ratio[1:] - ratio[:-1]).abs().max())
    assert purifier.timestep_for_sigma(0.12) < purifier.timestep_for_sigma(0.25) < purifier.timestep_for_sigma(0.5)
    denoised = purifier.denoise_pixel_noise(xrays + 0.25 * noise, 0.25)
    assert denoised.shape == xrays.shape and 0 <= float(denoised.min()) and float(denoised.max()) <= 1


def test_ddim_eta_controls_the_per_step_noise(tiny_unet, xrays):
    """Same seed, same start noise: only sigma_t (eta) differs between the two walks."""
    deterministic_walk = build("ddim", tiny_unet, eta=0.0)
    noisy_walk = build("ddim", tiny_unet, eta=1.0)
    assert not torch.equal(deterministic_walk.purify(xrays, seed=1), noisy_walk.purify(xrays, seed=1))


def test_noise_level_grows_with_t_star(xrays):
    weak = NoisePurifier(NoiseConfig(t_star=0.02), schedule=DEFAULT_SCHEDULE).purify(xrays, seed=0)
    strong = NoisePurifier(NoiseConfig(t_star=0.3), schedule=DEFAULT_SCHEDULE).purify(xrays, seed=0)
    assert (weak - xrays).abs().mean() < (strong - xrays).abs().mean()


def test_gaussian_noise_is_smoothing_noise_of_the_stated_std_with_an_exact_gradient():
    grey = torch.full((4, 1, 64, 64), 0.5, requires_grad=True)
    purifier = create_purifier("gaussian", sigma=0.1)
    noisy = purifier.purify(grey.detach(), seed=0)
    assert torch.equal(noisy, purifier.purify(grey.detach(), seed=0)) and not torch.equal(noisy, purifier.purify(grey.detach(), seed=1))
    assert (noisy - 0.5).std().item() == pytest.approx(0.1, rel=0.05) and noisy.min() >= 0 and noisy.max() <= 1
    purifier(grey).sum().backward()  # clamping never bites at 0.5 +- 5 sigma: the gradient is the identity
    assert torch.equal(grey.grad, torch.ones_like(grey))
    with pytest.raises(PurifyLabError, match="sigma=0.0"):
        create_purifier("gaussian", sigma=0.0)


def test_diffdefense_lowers_its_reconstruction_loss(tiny_unet, xrays):
    purifier = build("diffdefense", tiny_unet, L=6, lr=0.1)
    result = purifier.reconstruct(xrays, torch.Generator().manual_seed(0))
    assert len(result.loss_history) == 6
    assert result.loss_history[-1] < 0.8 * result.loss_history[0]
    assert torch.allclose(result.mse, (result.images - xrays).square().flatten(1).mean(1), atol=1e-3)
    images, scores = purifier.purify_with_score(xrays, seed=0)
    assert torch.equal(scores, purifier.purify_with_score(xrays, seed=0)[1]) and scores.shape == (2,)
    assert torch.equal(images, purifier.purify(xrays, seed=0))


@pytest.mark.parametrize("name", ["diffdefense", "diffdefense_paper"])
def test_diffdefense_refuses_to_return_the_input_when_every_restart_diverges(tiny_unet, xrays, name):
    """A non-finite reconstruction never beats the starting 'best' (the input itself): without the check
    the unpurified image came back, and the undefended figures were reported as the defense's."""
    diverging = copy.deepcopy(tiny_unet)
    with torch.no_grad():
        next(diverging.parameters()).fill_(float("nan"))  # a denoiser whose every output is not finite
    purifier = build(name, diverging, R=2)
    with pytest.raises(PurifyLabError, match="diverged .* on 2 of 2 images"):
        purifier.purify(xrays, seed=0)


def test_diffdefense_keeps_the_best_restart(tiny_unet, xrays):
    one = build("diffdefense", tiny_unet, R=1).purify_with_score(xrays, seed=0)[1]
    three = build("diffdefense", tiny_unet, R=3).purify_with_score(xrays, seed=0)[1]
    assert (three <= one + 1e-7).all()  # restart 1 is the same draw; more restarts can only help


def test_diffdefense_as_published_matches_a_hand_computed_two_step_case(tiny_unet, xrays):
    """Algorithm 1 written out by hand for T* = 2 steps (t = 1, 0), L = 2, R = 1: z ~ N(0, I), Eq. 2
    with sigma_t = sqrt(beta_t) and fresh noise at t > 0, one gradient step at eta^0 Delta^(1/ceil(0.8 L)),
    and the second (last) reconstruction returned, whether or not it is the better one."""
    config = DiffDefensePaperConfig(t_start=0.002, L=2, R=1, lr=50.0)
    purifier = DiffDefensePaperPurifier(config, unet=tiny_unet, schedule=DEFAULT_SCHEDULE)
    assert purifier.timesteps == [1, 0] and purifier.nfe() == 4
    result = purifier.reconstruct(xrays, torch.Generator().manual_seed(0))

    betas = torch.linspace(DEFAULT_SCHEDULE["beta_start"], DEFAULT_SCHEDULE["beta_end"], DEFAULT_SCHEDULE["num_train_timesteps"])
    alphas = 1 - betas
    alpha_bars = torch.cumprod(alphas, 0)
    generator = torch.Generator().manual_seed(0)

    def chain(z: torch.Tensor) -> torch.Tensor:
        for t in (1, 0):
            eps = tiny_unet(z, torch.tensor(t)).sample
            z = (z - betas[t] / (1 - alpha_bars[t]).sqrt() * eps) / alphas[t].sqrt()
            if t > 0:
                z = z + betas[t].sqrt() * torch.randn(z.shape, generator=generator)
        return (z + 1) / 2

    z = torch.randn(xrays.shape, generator=generator).requires_grad_(True)
    first = (chain(z) - xrays).pow(2).flatten(1).mean(1)
    first.sum().backward()
    z = z.detach() - 50.0 * 0.1 ** (1 / math.ceil(0.8 * 2)) * z.grad
    with torch.no_grad():
        second = chain(z)
    second_mse = (second - xrays).pow(2).flatten(1).mean(1)
    assert result.loss_history == pytest.approx([float(first.detach().mean()), float(second_mse.mean())], rel=1e-4)
    assert torch.allclose(result.images, second.clamp(0, 1), atol=1e-4)
    assert torch.allclose(result.mse, second_mse, rtol=1e-4)


def test_a_strided_published_chain_adds_the_stride_posterior_noise_not_sqrt_beta(tiny_unet, xrays):
    """T* = 4 in 2 steps (t = 4, 0): the stride's DDPM posterior, x0 unclipped, noise of variance
    (1 - abar_0) / (1 - abar_4) * beta_stride; then t = 0 without noise. sqrt(beta_stride) would leave
    noise of its size in the output."""
    purifier = DiffDefensePaperPurifier(DiffDefensePaperConfig(t_start=0.005, steps=2), unet=tiny_unet, schedule=DEFAULT_SCHEDULE)
    assert purifier.timesteps == [4, 0]
    z = torch.randn(xrays.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = purifier.generate(z, torch.Generator().manual_seed(0))
        betas = torch.linspace(DEFAULT_SCHEDULE["beta_start"], DEFAULT_SCHEDULE["beta_end"], DEFAULT_SCHEDULE["num_train_timesteps"])
        abar = torch.cumprod(1 - betas, 0)
        generator = torch.Generator().manual_seed(0)
        sample = z
        for t, prev_abar in ((4, abar[0]), (0, torch.tensor(1.0))):
            beta = 1 - abar[t] / prev_abar
            x0 = (sample - (1 - abar[t]).sqrt() * tiny_unet(sample, torch.tensor(t)).sample) / abar[t].sqrt()
            sample = prev_abar.sqrt() * beta / (1 - abar[t]) * x0 + (1 - beta).sqrt() * (1 - prev_abar) / (1 - abar[t]) * sample
            if t > 0:
                sample = sample + ((1 - prev_abar) / (1 - abar[t]) * beta).sqrt() * torch.randn(z.shape, generator=generator)
    assert torch.allclose(ours, sample, atol=1e-5)


@pytest.mark.parametrize(
    ("config_type", "params", "message"),
    [
        (DDPMConfig, {"steps": 0}, "steps=0 must be >= 1"),
        (DDIMConfig, {"eta": 1.2}, "eta=1.2"),
        (NoiseConfig, {"t_star": -0.1}, "t_star=-0.1"),
        (DiffDefenseConfig, {"R": 0}, "R=0 must be >= 1"),
        (DiffDefenseConfig, {"lr": 0.0}, "lr=0.0"),
        (DiffDefenseConfig, {"optimizer": "rmsprop"}, "optimizer='rmsprop'"),
        (DiffDefensePaperConfig, {"steps": 0}, "steps=0 must be >= 1"),
        (DiffDefensePaperConfig, {"lr": -1.0}, "lr=-1.0"),
    ],
)
def test_bad_parameters_give_one_line_errors(config_type, params, message):
    with pytest.raises(PurifyLabError, match="^[^\n]*$") as error:
        config_type(**params).validate()
    assert message in str(error.value)


def test_unreachable_ddim_stride_and_bad_input_shapes_are_refused(tiny_unet):
    with pytest.raises(PurifyLabError, match="skip=300 is not a DDIM stride"):
        build("ddim", tiny_unet, skip=300)
    purifier = build("ddpm", tiny_unet)
    assert purifier.input_channels == (1,)
    with pytest.raises(PurifyLabError, match=r"has 3 channels; expected \(N, 1, H, W\)"):
        purifier.purify(torch.rand(1, 3, SIZE, SIZE))
    with pytest.raises(PurifyLabError, match="divisible by 2"):
        purifier.purify(torch.rand(1, 1, 15, 15))


def test_channels_last_input_is_refused_by_every_purifier(tiny_unet):
    """NHWC (N, H, W, 1) was read as H channels and crashed inside the blur; now one line names the layout."""
    channels_last = torch.rand(2, SIZE, SIZE, 1)
    for purifier in (create_purifier("none"), create_purifier("blur", sigma=1.0), create_purifier("noise"), build("ddpm", tiny_unet)):
        with pytest.raises(PurifyLabError, match=rf"shape \(2, {SIZE}, {SIZE}, 1\) has {SIZE} channels; expected \(N, "):
            purifier.purify(channels_last)
    assert create_purifier("blur", sigma=1.0).purify(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 3, SIZE, SIZE)  # RGB stays accepted


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("cold_direct", {"depth": 2.5}, "depth must be an integer; got 2.5"),
        ("blur", {"sigma": True}, "sigma must be a number; got True"),
        ("one_shot", {"t_star": None}, "t_star must be a number; got None"),
        ("one_shot", {"t_star": [0.1]}, r"t_star must be a number; got \[0.1\]"),
        ("cold_recon", {"steps": 1.5}, "steps must be an integer or None; got 1.5"),
    ],
)
def test_parameters_of_the_wrong_type_are_refused_from_python(name, params, message):
    with pytest.raises(PurifyLabError, match=message):
        purifier_config(name, **params)
    assert purifier_config("cold_direct", depth=3).depth == 3  # ints stay ints


def test_string_parameters_are_parsed_and_checked():
    purifier = create_purifier("noise", t_star="0.1")
    assert purifier.config.t_star == 0.1
    with pytest.raises(PurifyLabError, match="not a valid"):
        create_purifier("noise", t_star="deep")
    with pytest.raises(PurifyLabError, match="unknown parameter 'depth'"):
        create_purifier("noise", depth="3")


# ------------------------------------------------------------------------------------ CLI


@pytest.fixture()
def tiny_weights_dir(tmp_path, monkeypatch, tiny_unet):
    """A weights folder holding a tiny ddpm_unet, made the shipped one for this test."""
    card = {"kind": "ddpm-denoiser", "prediction_type": "epsilon", "unet_size": "tiny", "unet_overrides": {"sample_size": SIZE}, "scheduler": DEFAULT_SCHEDULE}
    save_weights(tiny_unet, tmp_path / "ddpm_unet.safetensors", card)
    monkeypatch.setattr(diffusion, "WEIGHTS_DIR", tmp_path)
    return tmp_path


@pytest.mark.parametrize("name", ["ddpm", "ddim", "diffdefense"])
def test_a_named_denoiser_is_loaded_and_runs_on_colour_images(tmp_path, monkeypatch, name):
    """`denoiser=` picks another shipped UNet (the MNIST / CIFAR-10 re-runs), here a 3-channel one."""
    torch.manual_seed(0)
    rgb = build_unet("tiny", sample_size=SIZE, in_channels=3, out_channels=3)
    card = {
        "kind": "ddpm-denoiser",
        "prediction_type": "epsilon",
        "unet_size": "tiny",
        "unet_overrides": {"sample_size": SIZE, "in_channels": 3, "out_channels": 3},
        "scheduler": DEFAULT_SCHEDULE,
    }
    save_weights(rgb, tmp_path / "ddpm_unet_rgb.safetensors", card)
    monkeypatch.setattr(diffusion, "WEIGHTS_DIR", tmp_path)
    purifier = create_purifier(name, denoiser="ddpm_unet_rgb")
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    first, again = purifier.purify(x, seed=3), purifier.purify(x, seed=3)
    assert first.shape == x.shape and torch.equal(first, again)
    assert 0 <= float(first.min()) and float(first.max()) <= 1
    with pytest.raises(PurifyLabError, match=r"has 1 channels; expected \(N, 3, H, W\)"):
        purifier.purify(torch.rand(2, 1, SIZE, SIZE))


def test_denoiser_names_are_checked_before_loading():
    with pytest.raises(PurifyLabError, match="file stem in weights/"):
        create_purifier("ddpm", denoiser="../vit")
    with pytest.raises(PurifyLabError, match="missing"):
        create_purifier("ddim", denoiser="ddpm_unet_nowhere")


def run_cli(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return exit_info.value.code


def test_cli_purify_none_keeps_native_size_and_writes_config(tmp_path, xray_paths, capsys):
    out = tmp_path / "none.png"
    assert run_cli(["purify", str(xray_paths["NORMAL"][0]), "--purifier", "none", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(out.with_suffix(".json").read_text())
    assert printed == written and written["purifier"] == "none" and written["resized_to"] is None
    loaded = load_image(out)
    original = load_image(xray_paths["NORMAL"][0])
    assert loaded.original_size == original.original_size
    assert (loaded.pixels - original.pixels).abs().max() <= 1 / 255 + 1e-6


def test_cli_purify_ddpm_resizes_to_the_model_and_records_params(tmp_path, xray_paths, tiny_weights_dir, capsys):
    out = tmp_path / "ddpm.png"
    argv = ["purify", str(xray_paths["PNEUMONIA"][0]), "--purifier", "ddpm", "--param", "t_star=0.1", "--param", "steps=3", "--seed", "7", "--out", str(out)]
    assert run_cli(argv) == 0
    config = json.loads(out.with_suffix(".json").read_text())
    assert config["t_star"] == 0.1 and config["nfe"] == 3 and config["seed"] == 7
    assert config["resized_to"] == [SIZE, SIZE] and config["input_size"] == [224, 224]
    assert load_image(out).original_size == (SIZE, SIZE)


@pytest.mark.parametrize(
    ("argv_tail", "expected"),
    [
        (["--purifier", "ddpm", "--param", "t_star=2"], "t_star=2.0 is outside"),
        (["--purifier", "nope"], "unknown purifier 'nope'"),
        (["--purifier", "ddpm", "--param", "t_star"], "not of the form key=value"),
    ],
)
def test_cli_bad_parameters_exit_2_with_one_line(tmp_path, xray_paths, tiny_weights_dir, capsys, argv_tail, expected):
    argv = ["purify", str(xray_paths["NORMAL"][0]), "--out", str(tmp_path / "o.png"), *argv_tail]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1


def test_cli_lists_purifiers_with_nfe(tiny_weights_dir, capsys):
    assert run_cli(["purifiers"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "NFE 10" in lines["ddpm"] and "NFE 0" in lines["noise"] and "NFE 10" in lines["diffdefense"]


def test_shipped_model_removes_the_noise_it_adds(xray_paths):
    """The shipped denoiser's `ddpm` output is closer to the clean X-ray than the noised input it starts from."""
    from core.train.diffusion import psnr

    if not (diffusion.WEIGHTS_DIR / "ddpm_unet.safetensors").is_file():
        pytest.skip("weights/ddpm_unet.safetensors is not trained yet")
    purifier = create_purifier("ddpm")
    assert purifier.schedule == diffusion.shipped_schedule()
    x = torch.cat([to_model_input(load_image(xray_paths[c][1]), purifier.image_size) for c in ("NORMAL", "PNEUMONIA")])
    noised = NoisePurifier(NoiseConfig(t_star=purifier.config.t_star), schedule=purifier.schedule).purify(x, seed=0)
    purified = purifier.purify(x, seed=0)
    assert (psnr(x, purified) > psnr(x, noised) + 3).all()


def test_the_detection_score_checks_its_input_like_purify(tiny_unet):
    """A 0-255 image scored 20 000 (a 'blatant attack'); uint8 and float64 crashed inside torch."""
    purifier = DiffDefensePurifier(DiffDefenseConfig(L=1, steps=1), unet=tiny_unet, schedule=DEFAULT_SCHEDULE)
    x = torch.rand(1, 1, SIZE, SIZE)
    for bad, message in ((x * 255, r"image values span"), (x * float("nan"), "NaN"), ((x * 255).to(torch.uint8), "dtype is torch.uint8")):
        with pytest.raises(PurifyLabError, match=message):
            purifier.purify_with_score(bad)


@pytest.mark.parametrize("stem", ["resnet", "cold_unet"])
def test_a_denoiser_that_is_not_a_noise_predictor_is_refused(stem):
    """A classifier crashed with KeyError; the cold (clean-image) UNet ran silently as a noise predictor."""
    if not (diffusion.WEIGHTS_DIR / f"{stem}.json").is_file():
        pytest.skip(f"weights/{stem} is not shipped")
    with pytest.raises(PurifyLabError, match=rf"^denoiser='{stem}' is not a DDPM noise-prediction network; shipped ones: .*ddpm_unet"):
        create_purifier("ddpm", denoiser=stem)


def test_a_shipped_denoiser_runs_only_at_its_training_size():
    if not (diffusion.WEIGHTS_DIR / "ddpm_unet_mnist.safetensors").is_file():
        pytest.skip("weights/ddpm_unet_mnist is not shipped")
    purifier = create_purifier("one_shot", denoiser="ddpm_unet_mnist")
    with pytest.raises(PurifyLabError, match=r"^denoiser 'ddpm_unet_mnist' was trained on 28 px images, got \(128, 128\)"):
        purifier.purify(torch.rand(1, 1, 128, 128))
    assert purifier.purify(torch.rand(1, 1, 28, 28)).shape == (1, 1, 28, 28)


def test_a_depth_beyond_the_denoisers_training_range_is_warned():
    """Refusal would break the presets' t* sweeps (ddpm-defense, blau) that go past it on purpose."""
    if not (diffusion.WEIGHTS_DIR / "ddpm_unet_cifar10.safetensors").is_file():
        pytest.skip("weights/ddpm_unet_cifar10 is not shipped")
    with pytest.warns(UserWarning, match=r"t_star=0.35 is deeper than denoiser 'ddpm_unet_cifar10' was trained for \(t <= 0.3 T"):
        create_purifier("one_shot", denoiser="ddpm_unet_cifar10", t_star=0.35)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_purifier("one_shot", denoiser="ddpm_unet_cifar10", t_star=0.3)


def test_blur_and_the_cold_unet_refuse_too_small_images_naming_the_minimum(tiny_unet):
    with pytest.raises(PurifyLabError, match=r"^blur sigma=10 needs images of at least 31 px a side; got \(28, 28\)$"):
        create_purifier("blur", sigma=10).purify(torch.rand(2, 1, 28, 28))
    assert create_purifier("blur", sigma=10).purify(torch.rand(1, 1, 31, 31)).shape == (1, 1, 31, 31)
    direct = ColdDirectPurifier(ColdConfig(depth=2), unet=tiny_unet, schedule=BlurSchedule(levels=4, sigma_step=0.1))
    with pytest.raises(PurifyLabError, match=r"^the cold-diffusion UNet needs images of at least 2 px a side; got \(1, 1\)$"):
        direct.purify(torch.rand(1, 1, 1, 1))


def test_cold_depth_is_checked_against_the_shipped_schedule_when_priced():
    """The app priced cold_recon at depth 25 that construction then refused ([1, 20])."""
    from core.purifiers.cold import shipped_blur_schedule

    levels = shipped_blur_schedule().levels
    for name in ("cold_blur", "cold_direct", "cold_recon"):
        with pytest.raises(PurifyLabError, match=rf"^depth={levels + 1} is outside the allowed range \[1, {levels}\]$"):
            purifier_config(name, depth=levels + 1)
    with pytest.raises(PurifyLabError, match=rf"\[1, {levels}\]"):
        planned_calls("cold_recon", depth=levels + 5)


def test_the_purifiers_listing_fits_the_longest_name(capsys):
    assert run_cli(["purifiers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    columns = {line.index(" NFE ") for line in lines}
    assert len(columns) == 1 and columns.pop() > max(len(line.split()[0]) for line in lines)  # one column, past every name


def test_purifier_names_load_without_torch_and_each_is_its_class_name():
    """Names and descriptions are declared beside where each class lives, so naming or listing one imports
    no torch; each declared name must be the name its class reports (results and configs record that one)."""
    import subprocess
    import sys

    code = "import json, sys\nfrom core.purifiers import PURIFIERS, list_purifiers\nprint(json.dumps([list_purifiers(), 'torch' in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    described, imported_torch = json.loads(done.stdout)
    assert not imported_torch
    from core.purifiers import PURIFIERS

    for name, description in described.items():
        cls = PURIFIERS.get(name)
        assert cls.name == name and issubclass(cls, base.Purifier) and description
    with pytest.raises(PurifyLabError, match="unknown purifier 'nosuch'; choose one of: blur, "):
        PURIFIERS.get("nosuch")
