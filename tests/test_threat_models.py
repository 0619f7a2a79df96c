"""Threat models, the defended model and the gradient-masking checks, on a tiny CNN trained on real
PneumoniaMNIST X-rays (28 px) with a fixed seed."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from tiny_models import QuantisePurifier, pneumoniamnist, tiny_cnn
from torch import nn

from core.attacks import (
    THREAT_MODELS,
    AttackConfig,
    check_accuracy_collapse,
    check_white_vs_bpda,
    check_white_vs_transfer,
    craft,
    evaluate_defended,
    undefended_accuracy_by_eps,
)
from core.defended import DefendedClassifier, bpda_purify, clamp_to_unit
from core.errors import PurifyLabError
from core.purifiers import create_purifier
from core.purifiers.base import Purifier


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One thread: on a shared 2-core machine, two OpenMP threads per process run several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class Setup:
    classifier: nn.Module
    substitute: nn.Module
    images: torch.Tensor
    labels: torch.Tensor


@pytest.fixture(scope="module")
def setup(shared_data, single_thread) -> Setup:
    train_images, train_labels = pneumoniamnist(shared_data, "train", 1024)
    images, labels = pneumoniamnist(shared_data, "val", 48)
    return Setup(
        classifier=tiny_cnn(train_images, train_labels, seed=0),
        substitute=tiny_cnn(train_images, train_labels, seed=1, width=6, steps=80),
        images=images,
        labels=labels,
    )


def _accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (classifier(images).argmax(1) == labels).float().mean().item()


def _gaussian_noise() -> Purifier:
    """The shipped stochastic purifier (randomized smoothing's noise), as the tables and `evaluate` build it."""
    return create_purifier("gaussian", sigma=0.1)


PURIFIERS = {"blur": lambda: create_purifier("blur", sigma=1.0), "noise": _gaussian_noise}


@pytest.mark.parametrize("purifier_name", sorted(PURIFIERS))
@pytest.mark.parametrize("threat", sorted(THREAT_MODELS))
def test_every_threat_model_crafts_examples_in_the_budget(setup: Setup, threat: str, purifier_name: str) -> None:
    purifier = PURIFIERS[purifier_name]()
    images, labels = setup.images[:12], setup.labels[:12]
    config = AttackConfig(name="pgd", eps=0.05, steps=3)
    eot = 2 if threat in ("bpda-eot", "white") else 1
    adversarial = craft(threat, setup.classifier, purifier, images, labels, config, substitute=setup.substitute, eot=eot)
    assert adversarial.shape == images.shape and adversarial.dtype == torch.float32
    assert 0.0 <= adversarial.min() and adversarial.max() <= 1.0
    assert (adversarial - images).abs().max() <= 0.05 + 1e-6
    assert (adversarial - images).abs().max() > 0.01, "the attack moved no pixel"
    assert not setup.classifier.training and not any(p.grad is not None for p in setup.classifier.parameters())


def test_threat_model_arguments_are_checked(setup: Setup) -> None:
    purifier = create_purifier("blur")
    args = (setup.classifier, purifier, setup.images[:2], setup.labels[:2], AttackConfig(steps=1))
    with pytest.raises(PurifyLabError, match="substitute"):
        craft("transfer", *args)
    with pytest.raises(PurifyLabError, match="eot >= 2"):
        craft("bpda-eot", *args, eot=1)
    with pytest.raises(PurifyLabError, match="does not apply to threat 'grey'"):
        craft("grey", *args, eot=4)
    with pytest.raises(PurifyLabError, match="unknown threat model 'black'"):
        craft("black", *args)
    with pytest.raises(PurifyLabError, match="give a purifier"):
        craft("white", setup.classifier, None, *args[2:])
    with pytest.raises(PurifyLabError, match="do not fit 2 images"):
        craft("grey", setup.classifier, purifier, setup.images[:2], setup.labels[:3], args[-1])
    with pytest.raises(PurifyLabError, match=r"expected \[0, 1\]"):
        craft("grey", setup.classifier, purifier, setup.images[:2] * 255, setup.labels[:2], args[-1])


def test_bpda_forward_is_the_purifier_and_backward_is_the_identity(setup: Setup) -> None:
    purifier = create_purifier("blur", sigma=1.0)
    x = setup.images[:4].clone().requires_grad_(True)
    weights = torch.randn_like(x)
    purified = bpda_purify(purifier, x)
    assert torch.allclose(purified, purifier.purify(x.detach()))
    (purified * weights).sum().backward()
    assert torch.equal(x.grad, weights)

    exact = x.detach().clone().requires_grad_(True)
    (purifier(exact) * weights).sum().backward()
    assert not torch.allclose(exact.grad, weights, atol=1e-3), "white-box gradients must go through the blur"


def test_white_box_gradient_reaches_saturated_pixels(setup: Setup) -> None:
    """Through the identity the attacker's gradient is the classifier's own, at 0 and 1 included
    (torch.clamp would zero it there); values outside [0, 1] are clamped and get none."""
    x = setup.images[:4].clone()
    x[:, :, :6] = 0.0
    x[:, :, -6:] = 1.0
    defended = DefendedClassifier(create_purifier("none"), setup.classifier)
    through, alone = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    defended(through).logsumexp(dim=1).sum().backward()
    setup.classifier(alone).logsumexp(dim=1).sum().backward()
    assert torch.equal(through.grad, alone.grad)
    assert through.grad[:, :, :6].abs().sum() > 0 and through.grad[:, :, -6:].abs().sum() > 0

    outside = torch.tensor([-0.5, 0.0, 0.25, 1.0, 1.5], requires_grad=True)
    clamped = clamp_to_unit(outside)
    clamped.sum().backward()
    assert clamped.tolist() == [0.0, 0.0, 0.25, 1.0, 1.0]
    assert outside.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_eot_draws_run_in_one_batched_forward_and_average_probabilities(setup: Setup) -> None:
    purifier, x, eot = _gaussian_noise(), setup.images[:5], 4
    calls: list[int] = []
    hook = setup.classifier.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    try:
        defended = DefendedClassifier(purifier, setup.classifier, eot=eot, seed=3)
        with torch.no_grad():
            log_mean_probabilities = defended(x)
    finally:
        hook.remove()
    assert calls == [5 * eot] and log_mean_probabilities.shape == (5, 2)

    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        draws = setup.classifier(purifier(x.repeat(eot, 1, 1, 1), generator).clamp(0, 1)).softmax(1).view(eot, 5, 2)
    assert torch.allclose(log_mean_probabilities.exp(), draws.mean(0), atol=1e-6)


def test_defended_model_draws_fresh_but_reproducible_randomness(setup: Setup) -> None:
    x = setup.images[:6]
    first, second = (DefendedClassifier(_gaussian_noise(), setup.classifier, seed=7) for _ in range(2))
    with torch.no_grad():
        a1, a2 = first(x), first(x)
        b1, b2 = second(x), second(x)
        assert not torch.equal(a1, a2), "successive forwards must draw new purifier noise"
        assert torch.equal(a1, b1) and torch.equal(a2, b2)
        first.reset()
        assert torch.equal(first(x), a1)
    deterministic = DefendedClassifier(create_purifier("blur"), setup.classifier, eot=8)
    assert deterministic.draws == 1


def test_same_seeds_give_identical_adversarial_examples(setup: Setup) -> None:
    images, labels = setup.images[:8], setup.labels[:8]
    config = AttackConfig(name="pgd", eps=0.05, steps=3, seed=5)
    runs = [craft("white", setup.classifier, _gaussian_noise(), images, labels, config, eot=2, seed=1) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])
    other = craft("white", setup.classifier, _gaussian_noise(), images, labels, config, eot=2, seed=2)
    assert not torch.equal(runs[0], other)


def test_stochastic_defense_is_scored_one_shot_and_worst_case(setup: Setup) -> None:
    images, labels = setup.images, setup.labels
    adversarial = craft("grey", setup.classifier, None, images, labels, AttackConfig(eps=0.03, steps=5))
    noisy = evaluate_defended(setup.classifier, _gaussian_noise(), adversarial, labels, redraws=5, seed=0)
    assert noisy.redraws == 5 and noisy.predictions.shape == (5, len(labels)) and noisy.probabilities.shape == (len(labels), 2)
    assert noisy.worst_case_accuracy <= noisy.one_shot_accuracy
    first_draw_alone = evaluate_defended(setup.classifier, _gaussian_noise(), adversarial, labels, redraws=1, seed=0)
    assert first_draw_alone.one_shot_accuracy == noisy.one_shot_accuracy
    assert first_draw_alone.worst_case_accuracy == first_draw_alone.one_shot_accuracy

    blurred = evaluate_defended(setup.classifier, create_purifier("blur"), adversarial, labels, redraws=5)
    assert blurred.redraws == 1 and blurred.worst_case_accuracy == blurred.one_shot_accuracy


def _robust_accuracy(setup: Setup, threat: str, purifier: Purifier, eps: float) -> float:
    config = AttackConfig(name="pgd", eps=eps, steps=10)
    adversarial = craft(threat, setup.classifier, purifier, setup.images, setup.labels, config, substitute=setup.substitute)
    return evaluate_defended(setup.classifier, purifier, adversarial, setup.labels).one_shot_accuracy


def test_masking_checks_flag_a_quantiser_and_pass_a_blur(setup: Setup) -> None:
    masked = QuantisePurifier()
    white, bpda, transfer = (_robust_accuracy(setup, threat, masked, 0.15) for threat in ("white", "bpda", "transfer"))
    assert check_white_vs_bpda(white, bpda).flag is not None, (white, bpda)
    assert check_white_vs_transfer(white, transfer).flag is not None, (white, transfer)

    blur = create_purifier("blur", sigma=1.0)
    white, bpda, transfer = (_robust_accuracy(setup, threat, blur, 0.15) for threat in ("white", "bpda", "transfer"))
    assert check_white_vs_bpda(white, bpda).passed, (white, bpda)
    assert check_white_vs_transfer(white, transfer).passed, (white, transfer)


def test_collapse_check_passes_a_healthy_model_and_flags_masked_gradients(setup: Setup) -> None:
    healthy = undefended_accuracy_by_eps(setup.classifier, setup.images, setup.labels, eps_values=(0.03, 0.3), steps=10)
    assert healthy[0.3] <= 0.05 < _accuracy(setup.classifier, setup.images, setup.labels)
    assert check_accuracy_collapse(healthy).passed

    masked_model = DefendedClassifier(QuantisePurifier(), setup.classifier)
    masked = undefended_accuracy_by_eps(masked_model, setup.images, setup.labels, eps_values=(0.3,), steps=10)
    check = check_accuracy_collapse(masked)
    assert check.flag is not None and "eps=0.3" in check.flag


def test_an_unknown_threat_is_refused_in_one_line_naming_the_choices() -> None:
    from core.attacks import threat_model
    from core.evaluate import EvaluationConfig

    refusals = [
        lambda: threat_model("psychic"),
        lambda: EvaluationConfig(data=".", attack=AttackConfig(), threat="psychic"),
        lambda: craft("psychic", nn.Identity(), None, torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long), AttackConfig()),
    ]
    for refuse in refusals:
        with pytest.raises(PurifyLabError) as error:
            refuse()
        message = str(error.value)
        assert "\n" not in message and "psychic" in message and all(name in message for name in THREAT_MODELS)


def test_every_place_reads_the_threat_flags_from_the_registry(setup: Setup) -> None:
    """EOT budgets, eot refusals, table captions and the benchmark's chain threats agree with the flags."""
    from benchmarks.settings import BenchSettings
    from core.attacks import attacked_model
    from core.attacks.robust import attack_budget
    from core.tables import AttackRow, PurifierColumn, TableSpec, preset_from_dict
    from core.tables.render import table_caption

    purifier = create_purifier("blur", sigma=1.0)
    table = {"name": "t", "caption": "c", "classifiers": ["vit"], "rows": [{"label": "Clean"}], "columns": [{"label": "x"}]}
    preset = preset_from_dict({"tables": [table], "eot": 3}, "p")
    for name, threat in THREAT_MODELS.items():
        assert attack_budget(AttackConfig(), name, eot=3, purifier=create_purifier("noise", t_star=0.02))["threat_eot"] == (3 if threat.uses_eot else 1)
        assert attack_budget(AttackConfig(), name, eot=3, purifier=purifier)["threat_eot"] == 1  # a blur is drawn once per step
        if not threat.uses_eot:
            with pytest.raises(PurifyLabError, match="does not apply"):
                attacked_model(name, setup.classifier, purifier, eot=2)
        elif threat.goes_through_purifier:
            assert attacked_model(name, setup.classifier, purifier, eot=2) is not setup.classifier
        # the caption counts the draws its cells ran (their budgets): a stochastic purifier, EOT 3
        noise = create_purifier("noise", t_star=0.02)
        table = TableSpec("t", "c", (), (AttackRow("PGD", AttackConfig()),), (PurifierColumn("x", "noise", {"t_star": 0.02}),), threats=(name,))
        record = {
            "row": "PGD",
            "config": {"attack": AttackConfig().resolved(), "threat": name, "purifier": {"name": "noise"}},
            "metrics": {"n": 4, "budget": attack_budget(AttackConfig(), name, eot=3, purifier=noise)},
        }
        caption = table_caption(preset, table, [record])
        assert ("EOT 3" in caption) == threat.uses_eot
        assert threat.describe(preset.eot if threat.uses_eot else 1) in caption
        chain = BenchSettings(chain_threats=(name,), chain_eot=2)
        if threat.goes_through_purifier:
            chain.validate()
        else:
            with pytest.raises(PurifyLabError, match="not one of"):
                chain.validate()


def test_descriptions_state_the_eot_count_they_were_run_with():
    assert THREAT_MODELS["white"].describe(8).endswith("EOT over 8 draws")
    assert "several" in THREAT_MODELS["bpda-eot"].describe()
    assert "{" not in THREAT_MODELS["grey"].describe(8)


def test_white_on_a_purifier_without_exact_gradients_is_refused_wherever_it_is_crafted(setup):
    """DiffDefense's forward is already BPDA: a 'white' number would be a BPDA one under the wrong name."""
    from core.attacks import attacked_model
    from core.lab import attack_image
    from core.purifiers.diffdefense import DiffDefenseConfig, DiffDefensePurifier
    from core.purifiers.diffusion import DEFAULT_SCHEDULE
    from core.purifiers.unet import build_unet

    purifier = DiffDefensePurifier(DiffDefenseConfig(L=1, steps=1), unet=build_unet("tiny", sample_size=28), schedule=DEFAULT_SCHEDULE)
    message = "^purifier 'diffdefense' has no exact gradients; attack it with threat 'bpda' or 'bpda-eot'$"
    with pytest.raises(PurifyLabError, match=message):
        attacked_model("white", setup.classifier, purifier)
    with pytest.raises(PurifyLabError, match=message):
        craft("white", setup.classifier, purifier, setup.images[:2], setup.labels[:2], AttackConfig(name="fgsm"))
    with pytest.raises(PurifyLabError, match=message):
        attack_image(setup.classifier, setup.images[:1], AttackConfig(name="fgsm"), threat="white", purifier=purifier)
    assert isinstance(attacked_model("bpda", setup.classifier, purifier), DefendedClassifier)


def test_a_fractional_eot_is_refused(setup):
    """int(2.5) = 2 draws would run while the budget counted 2.5."""
    with pytest.raises(PurifyLabError, match="^eot must be an integer; got 2.5$"):
        DefendedClassifier(create_purifier("gaussian"), setup.classifier, eot=2.5)
    with pytest.raises(PurifyLabError, match="eot must be an integer"):
        craft("white", setup.classifier, create_purifier("gaussian"), setup.images[:2], setup.labels[:2], AttackConfig(name="fgsm"), eot=2.5)


def test_one_eot_draw_is_spelled_in_the_singular():
    assert THREAT_MODELS["white"].describe(1).endswith("EOT over 1 draw")
    assert THREAT_MODELS["bpda-eot"].describe(4).endswith("over 4 purifier draws per step")


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(batch_size=0), "^batch_size=0 must be >= 1$"),
        (dict(batch_size=-3), "^batch_size=-3 must be >= 1$"),
        (dict(redraws=1500), r"^redraws=1500 is outside the allowed range \[1, 1000\]$"),
    ],
)
def test_evaluate_defended_refuses_a_bad_batch_size_or_too_many_redraws(setup, options, message):
    with pytest.raises(PurifyLabError, match=message):
        evaluate_defended(setup.classifier, create_purifier("gaussian"), setup.images[:2], setup.labels[:2], **options)


def test_bpda_eot_with_one_draw_is_refused_before_any_data_is_read(tmp_path, setup):
    """--eot defaults to 1: `evaluate --threat bpda-eot` ran the whole clean pass (2.5 min with DDPM at
    --limit 32) before crafting refused it. The data folder here does not exist: nothing was read."""
    from core.attacks import threat_model
    from core.attacks.robust import robust_run
    from core.evaluate import EvaluationConfig, evaluate

    missing = str(tmp_path / "no-such-folder")
    message = r"^threat 'bpda-eot' needs eot >= 2 purifier draws \(got 1\); use 'bpda' for one$"
    with pytest.raises(PurifyLabError, match=message):
        EvaluationConfig(data=missing, attack=AttackConfig(), threat="bpda-eot")
    with pytest.raises(PurifyLabError, match=message):
        threat_model("bpda-eot").check_eot(1)
    with pytest.raises(PurifyLabError, match="^eot=4 does not apply to threat 'grey'"):
        EvaluationConfig(data=missing, attack=AttackConfig(), threat="grey", eot=4)
    with pytest.raises(PurifyLabError, match=message):
        robust_run(setup.classifier, _gaussian_noise(), setup.images[:2], setup.labels[:2], AttackConfig(steps=1), "bpda-eot")
    threat_model("bpda-eot").check_eot(2)
    with pytest.raises(PurifyLabError, match="^threat='bpda-eot' sets the attacked run"):  # no attack: a threat would be recorded unused
        EvaluationConfig(data=missing, threat="bpda-eot")
    with pytest.raises(PurifyLabError, match="not found|does not exist|no such"):  # a valid config reaches the data
        evaluate(EvaluationConfig(data=missing, attack=AttackConfig(), threat="bpda-eot", eot=2), model=setup.classifier)


def test_an_eot_out_of_range_is_refused_by_every_threat_model_before_any_data_is_read(tmp_path, setup):
    """EvaluationConfig took eot=5000 and DefendedClassifier refused it only after the whole clean pass
    (minutes through a diffusion purifier); under grey, eot=0 was told it "does not apply to threat 'grey'"."""
    from core.attacks import MAX_EOT, threat_model
    from core.evaluate import EvaluationConfig

    with pytest.raises(PurifyLabError, match=rf"^eot=5000 is outside the allowed range \[1, {MAX_EOT}\]$"):
        EvaluationConfig(data=str(tmp_path / "no-such-folder"), attack=AttackConfig(), threat="white", eot=5000)
    for threat in THREAT_MODELS:
        for eot in (0, -3, MAX_EOT + 1):
            with pytest.raises(PurifyLabError, match=rf"^eot={eot} is outside the allowed range \[1, {MAX_EOT}\]$"):
                threat_model(threat).check_eot(eot)
    threat_model("white").check_eot(MAX_EOT)
    with pytest.raises(PurifyLabError, match=rf"^eot={MAX_EOT + 1} is outside the allowed range"):  # the same bound, from the same place
        DefendedClassifier(_gaussian_noise(), setup.classifier, eot=MAX_EOT + 1)
