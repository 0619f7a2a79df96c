"""Attacks by name (torchattacks underneath), their configuration and determinism, on a tiny CNN
trained with a fixed seed on real PneumoniaMNIST X-rays (28 px)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_models import pneumoniamnist, tiny_cnn
from torch import nn

from core.attacks import ATTACKS, AttackConfig, create_attack, list_attacks
from core.attacks.library import DLRReferenceLogits
from core.errors import PurifyLabError

SLOW_ATTACKS = {"autoattack", "autoattack-rand"}  # Square's 5000 queries: minutes on a shared CPU
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """One thread: on a shared 2-core machine, two OpenMP threads per process run several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def xrays(shared_data) -> dict[str, torch.Tensor]:
    (train_x, train_y), (val_x, val_y) = pneumoniamnist(shared_data, "train", 1024), pneumoniamnist(shared_data, "val", 48)
    return {"train_x": train_x, "train_y": train_y, "x": val_x, "y": val_y}


@pytest.fixture(scope="module")
def model(xrays, single_thread) -> nn.Module:
    return tiny_cnn(xrays["train_x"], xrays["train_y"], seed=0)


def _accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


def _one_step_config(name: str) -> AttackConfig:
    spec = ATTACKS.get(name)
    norm = spec.norms[0]
    budget = {"eps": 0.03 if norm == "linf" else 0.5} if spec.bounded else {}  # an eps given to cw is refused
    return AttackConfig(name=name, norm=norm, steps=1, **budget)


def _check_budget(adversarial: torch.Tensor, images: torch.Tensor, config: AttackConfig) -> None:
    assert adversarial.shape == images.shape and adversarial.dtype == torch.float32
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0
    delta = (adversarial - images).flatten(1)
    if config.bounded and config.norm == "linf":
        assert delta.abs().max() <= config.eps + 1e-6
    if config.bounded and config.norm == "l2":
        assert delta.norm(dim=1).max() <= config.eps + 1e-4


@pytest.mark.parametrize("name", sorted(set(ATTACKS.names()) - SLOW_ATTACKS))
def test_every_attack_constructs_and_runs_within_its_budget(model, xrays, name: str) -> None:
    images, labels = xrays["x"][:6], xrays["y"][:6]
    config = _one_step_config(name)
    adversarial = create_attack(model, config)(images, labels)
    _check_budget(adversarial, images, config)
    assert not model.training


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SLOW_ATTACKS))
def test_autoattack_runs_on_a_two_class_model(model, xrays, name: str) -> None:
    images, labels = xrays["x"][:4], xrays["y"][:4]
    config = _one_step_config(name)
    adversarial = create_attack(model, config)(images, labels)
    _check_budget(adversarial, images, config)
    assert _accuracy(model, adversarial, labels) <= _accuracy(model, images, labels)


def test_every_registered_attack_is_described() -> None:
    described = list_attacks()
    expected = {"fgsm", "pgd", "pgdl2", "apgd", "apgdt", "autoattack", "autoattack-rand"}
    assert expected | {"deepfool", "square", "cw", "ead", "eotpgd"} <= set(described)
    assert all(described.values())


@pytest.mark.parametrize(
    ("name", "norm", "eps", "least_drop"),
    [
        ("fgsm", "linf", 0.03, 0.2),
        ("pgd", "linf", 0.03, 0.2),
        ("apgd", "linf", 0.03, 0.2),
        # L2 PGD drops this model from 0.958 to 0.771; from its random start alone it stays at 0.958
        ("pgdl2", "l2", 0.5, 0.1),
        ("pgd", "l2", 0.5, 0.1),
    ],
)
def test_attacks_really_lower_an_undefended_models_accuracy(model, xrays, name: str, norm: str, eps: float, least_drop: float) -> None:
    images, labels = xrays["x"], xrays["y"]
    clean = _accuracy(model, images, labels)
    robust = _accuracy(model, create_attack(model, AttackConfig(name=name, norm=norm, eps=eps, steps=10))(images, labels), labels)
    assert clean >= 0.85
    assert robust <= clean - least_drop, (clean, robust)


def test_same_seed_same_examples_and_the_global_rng_is_untouched(model, xrays) -> None:
    images, labels = xrays["x"][:8], xrays["y"][:8]
    rng_before = torch.get_rng_state()
    runs = [create_attack(model, AttackConfig(name="pgd", eps=0.05, steps=2, seed=11))(images, labels) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert torch.equal(runs[0], runs[1])
    other_seed = create_attack(model, AttackConfig(name="pgd", eps=0.05, steps=2, seed=12))(images, labels)
    assert not torch.equal(runs[0], other_seed)


def test_concurrent_attacks_get_the_examples_of_their_own_seeds(model, xrays) -> None:
    """App visitors attack in threads of one process, and random starts come from torch's one global
    RNG: each attack must still get exactly what it gets alone (a lab session once showed another's)."""
    import threading

    images, labels = xrays["x"][:4], xrays["y"][:4]
    attack = lambda seed: create_attack(model, AttackConfig(name="pgd", eps=0.05, steps=3, seed=seed))(images, labels)  # noqa: E731
    alone = {seed: attack(seed) for seed in range(6)}
    together, start = {}, threading.Barrier(6)

    def run(seed: int) -> None:
        start.wait()
        together[seed] = attack(seed)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(torch.equal(together[seed], alone[seed]) for seed in range(6))


def test_attacks_leave_a_shared_model_as_they_found_it(model, xrays) -> None:
    modes_seen: list[bool] = []
    hook = model.register_forward_hook(lambda module, inputs, output: modes_seen.append(module.training))
    model.train()
    try:
        create_attack(model, AttackConfig(name="cw", norm="l2", steps=2))(xrays["x"][:4], xrays["y"][:4])
    finally:
        hook.remove()
        training_after = model.training
        model.eval()
    assert modes_seen and not any(modes_seen), "the attack must run the model in eval mode"
    assert training_after, "the caller's train mode must be restored"
    assert all(p.requires_grad and p.grad is None for p in model.parameters()), "no gradients may leak into the model"


def test_restarts_and_step_size_resolve_from_the_config(model, xrays) -> None:
    config = AttackConfig(name="pgd", eps=0.03, steps=10)
    assert config.step_size == pytest.approx(0.0075)
    assert config.resolved()["alpha"] == pytest.approx(0.0075)
    assert config.budget()["gradient_evaluations"] == 10
    restarted = AttackConfig(name="pgd", eps=0.03, steps=3, restarts=2)
    assert restarted.budget()["gradient_evaluations"] == 6
    adversarial = create_attack(model, restarted)(xrays["x"][:8], xrays["y"][:8])
    _check_budget(adversarial, xrays["x"][:8], restarted)
    assert AttackConfig(name="deepfool", norm="l2").budget()["eps"] is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"eps": -0.01}, r"eps=-0.01 is outside"),
        ({"name": "fgsm", "norm": "l2"}, r"'fgsm' supports norm linf only, not l2"),
        ({"norm": "l1"}, r"norm 'l1' is not supported; choose one of: linf, l2"),
        ({"name": "pgd-l3"}, r"unknown attack 'pgd-l3'; choose one of: apgd"),
        ({"name": "fgsm", "restarts": 3}, r"restarts=3 does not apply to 'fgsm'"),
        ({"name": "pgd", "eot_iter": 4}, r"eot_iter=4 does not apply to 'pgd'"),
        ({"alpha": 0.0}, r"alpha=0.0 is outside"),
        ({"steps": 2.5}, r"steps must be an integer; got 2.5"),
        ({"eps": "0.03"}, r"eps must be a number; got '0.03'"),
        ({"restarts": True}, r"restarts must be an integer; got True"),
    ],
)
def test_bad_configurations_give_one_line_errors(fields: dict, message: str) -> None:
    with pytest.raises(PurifyLabError, match=message) as error:
        AttackConfig(**fields)
    assert "\n" not in str(error.value)


def test_l2_budgets_beyond_one_are_allowed() -> None:
    assert AttackConfig(name="pgdl2", norm="l2", eps=2.0).eps == 2.0  # Blau et al.'s L2 eps = 2


def test_dlr_reference_logits_keep_the_prediction(model, xrays) -> None:
    padded = DLRReferenceLogits(model)
    with torch.no_grad():
        logits, padded_logits = model(xrays["x"]), padded(xrays["x"])
    assert padded_logits.shape == (len(xrays["x"]), 4)
    assert torch.equal(padded_logits[:, :2], logits)
    assert torch.equal(padded_logits.argmax(1), logits.argmax(1))


class _Unfoolable(nn.Module):
    """A classifier no image in [0, 1] can fool (class 0 by a margin of at least 4) whose gradient is
    not zero, so an attack that keeps its iterates does move the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        brightness = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([2.0 + brightness, -2.0 - brightness], 1)


@pytest.mark.parametrize(
    "name, settings",
    [
        ("pgd", {}),
        ("pgd", {"restarts": 2}),
        ("eotpgd", {"restarts": 2}),
        ("apgd", {}),
        ("cw", {}),
        ("ead", {"steps": 10}),
        ("deepfool", {}),
    ],
)
def test_where_an_attack_fails_it_returns_the_input_exactly_when_its_spec_says_so(xrays, name, settings) -> None:
    """The lab tells "found nothing within eps" from "perturbed, still read right" by this flag."""
    images, labels = xrays["x"][:4], torch.zeros(4, dtype=torch.long)
    config = AttackConfig(**{"name": name, "norm": ATTACKS.get(name).norms[0], "eps": 0.03, "steps": 3} | settings)
    adversarial = create_attack(_Unfoolable().eval(), config, num_classes=2)(images, labels)
    assert torch.equal(adversarial, images) == ATTACKS.get(name).keeps_only_successes


def test_restarts_keep_what_restart_one_found_and_the_latest_iterate_elsewhere(model, xrays) -> None:
    """Restart 1 is the plain torchattacks run; later restarts retry only the images it did not fool,
    and those keep the last iterate, never the input: a purifier downstream may still be fooled by it."""
    import torchattacks

    images, labels = xrays["x"], xrays["y"]
    once_config = AttackConfig(name="pgd", eps=0.02, steps=2)
    once = create_attack(model, once_config)(images, labels)
    with torch.random.fork_rng():
        torch.manual_seed(once_config.seed)
        assert torch.equal(once, torchattacks.PGD(model, eps=0.02, alpha=once_config.step_size, steps=2)(images, labels))
    twice = create_attack(model, dataclasses.replace(once_config, restarts=2))(images, labels)
    with torch.no_grad():
        fooled = model(once).argmax(1) != labels
    assert fooled.any() and not fooled.all()
    assert torch.equal(twice[fooled], once[fooled])
    assert (twice[~fooled] != images[~fooled]).flatten(1).any(1).all()
    assert _accuracy(model, twice, labels) <= _accuracy(model, once, labels)


def test_tpgd_leaves_an_image_the_model_already_misreads_as_it_is(model, xrays) -> None:
    """TPGD pushes away from the clean prediction, on a misread image towards the true class; the
    attacker knows the labels and keeps the misreading (else the image would count as robust)."""
    import torchattacks

    images, labels = xrays["x"], xrays["y"]
    with torch.no_grad():
        misread = model(images).argmax(1) != labels
    assert misread.any()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        undone = torchattacks.TPGD(model, eps=0.1, alpha=0.025, steps=10)(images, labels)
    assert _accuracy(model, undone[misread], labels[misread]) > 0, "torchattacks' TPGD reads one right again"
    adversarial = create_attack(model, AttackConfig(name="tpgd", eps=0.1, steps=10))(images, labels)
    assert torch.equal(adversarial[misread], images[misread])
    assert _accuracy(model, adversarial[~misread], labels[~misread]) < 1.0


def test_fgsm_is_one_step_whatever_steps_says():
    """The CLI's default of 10 steps must not be reported as FGSM's budget."""
    config = AttackConfig(name="fgsm", eps=0.03, steps=10)
    assert config.steps == 1 and config.budget()["gradient_evaluations"] == 1


def _saturated_linear_problem() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A seeded 3-class linear model on binary 8x8 images (every pixel at 0 or 1, as most of an MNIST
    digit), each image labelled with the model's own reading."""
    generator = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(3, 64, generator=generator))
        model[1].bias.zero_()
    images = (torch.rand(32, 1, 8, 8, generator=generator) > 0.5).float()
    with torch.no_grad():
        labels = model(images).argmax(1)
    return model.eval(), images, labels


def test_deepfool_crosses_the_boundary_where_clipping_stalls_torchattacks() -> None:
    """torchattacks' DeepFool loses the clipped share of each step at saturated pixels and only
    approaches the boundary; ours moves the free pixels and crosses it, staying inside [0, 1]."""
    import torchattacks

    model, images, labels = _saturated_linear_problem()
    stalled = torchattacks.DeepFool(model, steps=50)(images, labels)
    assert _accuracy(model, stalled, labels) > 0.5
    adversarial = create_attack(model, AttackConfig(name="deepfool", norm="l2", steps=50))(images, labels)
    assert _accuracy(model, adversarial, labels) == 0.0
    assert adversarial.min() >= 0.0 and adversarial.max() <= 1.0


def test_deepfool_step_on_a_linear_model_is_the_distance_to_the_boundary() -> None:
    """Hand check, two classes, no pixel at a bound: one step of length (1.02)(|f1 - f0| + 1e-4) / ||w1 - w0||."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[0.5, -0.5, 0.25, 0.0], [-0.5, 0.5, 0.0, 0.25]]))
        model[1].bias.copy_(torch.tensor([0.1, 0.0]))
    image = torch.full((1, 1, 2, 2), 0.5)  # logits 0.225 and 0.125: class 0 by 0.1
    adversarial = create_attack(model, AttackConfig(name="deepfool", norm="l2", steps=1))(image, torch.tensor([0]))
    w = torch.tensor([-1.0, 1.0, -0.25, 0.25])  # w1 - w0
    expected = 1.02 * (0.1 + 1e-4) / w.norm() ** 2 * w
    assert torch.allclose((adversarial - image).flatten(), expected, atol=1e-6)
    assert model(adversarial).argmax(1).item() == 1


def test_a_revised_attack_gets_new_cell_keys_and_the_others_keep_theirs() -> None:
    assert AttackConfig(name="deepfool", norm="l2").resolved()["revision"] == 1
    assert AttackConfig(name="tpgd", eps=0.03).resolved()["revision"] == 1
    assert "revision" not in AttackConfig(name="pgd", eps=0.03).resolved()


@pytest.mark.parametrize("name, words", [("autoattack", "Square 5000 queries"), ("autoattack-rand", "EOT 20")])
def test_autoattack_reports_its_own_schedule_and_keeps_its_cell_key(name, words) -> None:
    """Its `steps` and `eot_iter` reach none of its sub-attacks: the budget names what runs instead."""
    config = AttackConfig(name=name, eps=0.3, steps=10)
    budget = config.budget()
    assert words in budget["schedule"] and budget["steps"] is None and budget["gradient_evaluations"] is None
    assert budget["eot_iter"] is None and budget["alpha"] is None
    # stored results are keyed on resolved(): it must not move
    assert config.resolved() == {**dataclasses.asdict(config), "alpha": 0.075, "bounded": True}


@pytest.mark.parametrize(
    "name, norm, uses_alpha",
    [("pgd", "linf", True), ("tpgd", "linf", True), ("fgsm", "linf", False), ("apgd", "linf", False), ("square", "l2", False), ("cw", "l2", False)],
)
def test_alpha_is_reported_only_where_the_attack_steps_by_it(name, norm, uses_alpha) -> None:
    budget = {"eps": 0.3} if ATTACKS.get(name).bounded else {}  # an eps given to cw is refused
    config = AttackConfig(name=name, norm=norm, steps=10, **budget)
    assert config.budget()["alpha"] == (config.step_size if uses_alpha else None)
    assert "alpha" in config.resolved()  # the cell key keeps it either way


def _torchattacks_own(attacked: nn.Module, config: AttackConfig) -> nn.Module:
    """The attack as torchattacks builds it, seeded as create_attack seeds it: the shipped path."""
    from core.attacks.library import SeededAttack

    return SeededAttack(ATTACKS.get(config.name)(attacked, config, 2), attacked, config.seed)


def _untouched(adversarial: torch.Tensor, images: torch.Tensor) -> int:
    return int(((adversarial - images).flatten(1).abs().amax(1) == 0).sum())


@pytest.mark.parametrize("name", ["apgd", "apgdt", "autoattack-rand"])
def test_the_apgd_family_against_noise_returns_iterates_where_torchattacks_returns_the_input(model, xrays, name) -> None:
    """Against a stochastic defense torchattacks' "not fooled" is one draw's verdict, and it handed those
    X-rays back untouched: the defense was scored on images never attacked (the smoothing defense's
    APGD-EOT worst of 5 read 20.00, 15.00 keeping the iterates)."""
    from core.attacks.threats import attacked_model
    from core.purifiers import create_purifier

    images, labels = xrays["x"][:16], xrays["y"][:16]
    config = AttackConfig(name=name, eps=0.02, steps=5)
    defended = attacked_model("white", model, create_purifier("gaussian", sigma=0.3), seed=1)
    shipped = _torchattacks_own(defended, config)(images, labels)
    defended.reset()
    fixed = create_attack(defended, config)(images, labels)
    assert _untouched(shipped, images) > 0 and _untouched(fixed, images) == 0
    _check_budget(fixed, images, config)


@pytest.mark.parametrize("threat, purifier", [("grey", "gaussian"), ("white", "blur"), ("bpda", "none")])
def test_the_apgd_family_on_a_deterministic_attacked_model_is_torchattacks_bit_for_bit(model, xrays, threat, purifier) -> None:
    """Grey-box (the papers' protocol) and deterministic defenses keep torchattacks' success-only return."""
    from core.attacks.threats import attacked_model
    from core.purifiers import create_purifier

    images, labels = xrays["x"][:16], xrays["y"][:16]
    for name in ("apgd", "apgdt"):
        config = AttackConfig(name=name, eps=0.02, steps=5)
        attacked = attacked_model(threat, model, create_purifier(purifier), seed=1)
        assert torch.equal(create_attack(attacked, config)(images, labels), _torchattacks_own(attacked, config)(images, labels))


# Two stored cells (results/results.sqlite) whose computation did not change, and the smoothing defense's
# APGD-EOT cell of the adaptive-convergence table, which did.
_STORED_APGD = {"name": "apgd", "norm": "linf", "eps": 0.03137, "steps": 20, "alpha": 0.00392125, "restarts": 1, "eot_iter": 8, "seed": 0, "bounded": True}
_STORED_WHITE_NONE = {
    "attack": _STORED_APGD,
    "batch_size": 16,
    "bootstrap": 1000,
    "classifier": {
        "calibration": {"temperature": 0.376803, "threshold": 0.07212524310354824},
        "name": "resnet_at",
        "sha256": "396f87422e38b8bede0112697cc30581a443473774b50513c3d9d7a1f458aa04",
        "weights": None,
    },
    "data": {"hash": "181a91ac1371c7a43dfec2a02042f2cd2a8711679091ad0921ac80965d51a177", "image_size": 128, "limit": 16, "split": "all"},
    "eot": 1,
    "kind": "robust",
    "purifier": {"name": "none", "params": {}, "weights_sha256": None},
    "redraws": 5,
    "seed": 0,
    "substitute": None,
    "threat": "white",
}
_STORED_WHITE_SMOOTHING = {
    **_STORED_WHITE_NONE,
    "classifier": {
        "calibration": {"temperature": 0.690467, "threshold": 0.0950297958198896},
        "name": "resnet_smooth",
        "sha256": "96ac3b195a750b54f20060d6b7b077a6a62673c466c37987f99df4a74c49d6fc",
        "weights": None,
    },
    "purifier": {"name": "gaussian", "params": {"sigma": 0.5}, "weights_sha256": None},
}
_STORED_GREY_DDPM = {
    "attack": {"name": "apgd", "norm": "linf", "eps": 0.03, "steps": 10, "alpha": 0.0075, "restarts": 1, "eot_iter": 1, "seed": 0, "bounded": True},
    "batch_size": 32,
    "bootstrap": 1000,
    "classifier": {"name": "vit", "sha256": "6a881bea7ac19826f0c76377eb86137d70ee8db7a4963cf41db3079fe357d72c", "weights": None},
    "data": {"hash": "329763f6056f6cfab7f4cbc7882c2985490418dbfa41d630c76840f61e1de25d", "image_size": 128, "limit": None, "split": "val"},
    "eot": 1,
    "kind": "robust",
    "purifier": {"name": "ddpm", "params": {"steps": 10, "t_star": 0.16}, "weights_sha256": "6b9ed0421d7adae141dcc25db84deae2b488c6da6399aa6504733e4f4220ce7f"},
    "redraws": 1,
    "seed": 0,
    "substitute": None,
    "threat": "grey",
}


def test_only_apgd_cells_against_noise_get_a_new_cell_key() -> None:
    from core.results import cell_key, keyed_config

    assert cell_key(_STORED_WHITE_NONE) == "41cf0a2d5ee9e77180f5c3777729b7bfb59c871772d938d1916c81935267f500"
    assert cell_key(_STORED_GREY_DDPM) == "7934e32b7997702ea93fc679211f9221aa4acfb5496757dca0ccd033b107dd79"
    assert cell_key(_STORED_WHITE_SMOOTHING) != "f12196fba1bbefd9200741eeff5cb2ef1a090c027670e0afee33c14b428fd979"
    assert keyed_config(_STORED_WHITE_SMOOTHING) == {**_STORED_WHITE_SMOOTHING, "unfooled_images": "best-loss iterate"}
    for name in ("apgdt", "autoattack", "autoattack-rand"):
        cell = {**_STORED_WHITE_SMOOTHING, "attack": AttackConfig(name=name, eps=0.03137).resolved()}
        assert "unfooled_images" in keyed_config(cell)
    for other in ({"name": "eotpgd", "eot_iter": 8}, {"name": "pgd"}, {"name": "square"}):  # not the APGD family
        cell = {**_STORED_WHITE_SMOOTHING, "attack": AttackConfig(**other, eps=0.03137).resolved()}
        assert keyed_config(cell) == cell


@pytest.mark.parametrize("purifier", ["gaussian", "blur"])
def test_a_cell_gets_the_new_key_exactly_where_its_attacker_meets_noise(model, purifier) -> None:
    """The key field and the attack's path follow one rule: the attacked model draws noise."""
    from core.attacks.library import draws_noise
    from core.attacks.robust import key_fields
    from core.attacks.threats import THREAT_MODELS, attacked_model
    from core.purifiers import create_purifier

    for threat, spec in THREAT_MODELS.items():
        eot = 2 if spec.uses_eot else 1
        attacked = attacked_model(threat, model, create_purifier(purifier), substitute=model, eot=eot)
        cell = {"kind": "robust", "attack": AttackConfig(name="apgd").resolved(), "threat": threat, "purifier": {"name": purifier}}
        assert bool(key_fields(cell)) == draws_noise(attacked) == (purifier == "gaussian" and spec.goes_through_purifier)


def _accuracies(correct: int, n: int) -> tuple[float, float]:
    """One count over n as a table cell stores it (float64) and as `evaluate_defended` returns it (float32 mean)."""
    hits = torch.arange(n) < correct
    return correct / n, hits.float().mean().item()


@pytest.mark.parametrize("n", [50, 100])
def test_a_masking_gap_of_exactly_the_tolerance_passes_and_one_image_more_is_flagged(n: int) -> None:
    """At n = 50 and tolerance 0.02, 4/50 against 3/50 came out one float ulp over the tolerance and was
    FLAGged as gradient masking at some accuracy levels and not at others."""
    from core.attacks import check_not_weaker
    from core.attacks.sanity import DEFAULT_TOLERANCE

    allowed = round(DEFAULT_TOLERANCE * n)  # images: 1 at n = 50, 2 at n = 100
    for weak in range(n - allowed):
        for stored in (0, 1):
            weak_accuracy = _accuracies(weak, n)[stored]
            at_tolerance = check_not_weaker("white", _accuracies(weak + allowed, n)[stored], "bpda", weak_accuracy)
            assert at_tolerance.passed, (weak, n, at_tolerance.values)
            over = check_not_weaker("white", _accuracies(weak + allowed + 1, n)[stored], "bpda", weak_accuracy)
            assert "sign of gradient masking" in over.flag, (weak, n, over.values)


def _tiny_mnist_cnn(shared_data) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A 10-class plain network (no `num_classes` attribute) trained with a fixed seed on real MNIST digits, and 32 test digits."""
    from core.data.loading import load_split

    train = load_split(shared_data / "mnist", "train", 28, limit=1024)
    test = load_split(shared_data / "mnist", "test", 28, limit=32)
    return tiny_cnn(train.floats(), train.labels, seed=0, steps=150, classes=10), test.floats(), test.labels


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_apgdt_on_a_ten_class_model_targets_every_other_class_without_being_told(shared_data) -> None:
    """create_attack assumed 2 classes: on a 10-class model APGD-T tried 1 target class of 9 and reported a
    weaker attack as APGD-T (the shipped MNIST CNN kept 6.25 % at eps 0.1, 0 % with 9 targets)."""
    from core.attacks.library import SeededAttack

    model, images, labels = _tiny_mnist_cnn(shared_data)
    config = AttackConfig(name="apgdt", eps=0.1, steps=5)
    counted = create_attack(model, config)(images, labels)
    assert torch.equal(counted, create_attack(model, config, num_classes=10)(images, labels))
    one_target = SeededAttack(ATTACKS.get("apgdt")(model, config, 2), model, config.seed)(images, labels)
    assert _accuracy(model, counted, labels) < _accuracy(model, one_target, labels)
    with pytest.raises(PurifyLabError, match="^num_classes=2, but the model answers 10 classes"):
        create_attack(model, config, num_classes=2)(images, labels)


def test_a_class_count_that_disagrees_with_a_registered_classifier_is_refused() -> None:
    from core.models import create_classifier

    torch.manual_seed(0)
    classifier = create_classifier("student_cnn", pretrained=False, image_size=28, widths=(4, 4, 4, 4), num_classes=10).eval()
    images, labels = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
    with pytest.raises(PurifyLabError, match="^num_classes=2, but the model answers 10 classes"):
        create_attack(classifier, AttackConfig(name="fgsm"), num_classes=2)(images, labels)
    assert create_attack(classifier, AttackConfig(name="fgsm"), num_classes=10)(images, labels).shape == images.shape


def test_a_name_or_a_dict_where_a_built_object_belongs_is_refused_in_one_line(model, xrays) -> None:
    """Names are natural here (the README names everything by string); they failed as AttributeErrors,
    one of which named the DefendedClassifier for a purifier given as 'blur'."""
    from core.attacks import craft, evaluate_defended

    images, labels = xrays["x"][:2], xrays["y"][:2]
    fgsm = AttackConfig(name="fgsm")
    attack_expected = r"^attack must be an AttackConfig \(build one with AttackConfig\(name='pgd', \.\.\.\)\), got "
    model_expected = r"^model must be a built network \(create_classifier\(name\) returns one\), got str 'resnet'$"
    refusals = [
        (lambda: create_attack(model, "pgd"), attack_expected + "str 'pgd'$"),
        (lambda: craft("grey", model, None, images, labels, {"name": "pgd"}), attack_expected + r"dict \{'name': 'pgd'\}$"),
        (lambda: create_attack("resnet", fgsm), model_expected),
        (lambda: craft("grey", "resnet", None, images, labels, fgsm), model_expected),
        (lambda: evaluate_defended("resnet", None, images, labels), model_expected),
        (
            lambda: craft("white", model, "blur", images, labels, fgsm),
            r"^purifier must be a built purifier \(create_purifier\(name, \.\.\.\) returns one\), got str 'blur'$",
        ),
    ]
    for call, message in refusals:
        with pytest.raises(PurifyLabError, match=message):
            call()


def test_a_setting_the_attack_ignores_is_refused_and_its_default_is_not_a_setting() -> None:
    """config.py promises a meaningless setting is refused: FGSM ran 50 steps as 1 and CW stored an eps
    of 0.5 it never used, both written into the result as if they had run."""
    for fields, message in (
        ({"name": "fgsm", "steps": 50}, r"^steps=50 does not apply to 'fgsm', which takes one step; drop steps$"),
        ({"name": "cw", "norm": "l2", "eps": 0.5}, r"^eps=0.5 does not apply to 'cw', a minimal-perturbation attack"),
        ({"name": "deepfool", "norm": "l2", "eps": 2.0}, r"^eps=2.0 does not apply to 'deepfool'"),
        ({"name": "ead", "norm": "l2", "eps": 0.0}, r"^eps=0.0 does not apply to 'ead'"),
    ):
        with pytest.raises(PurifyLabError, match=message):
            AttackConfig(**fields)
    assert AttackConfig(name="fgsm").steps == AttackConfig(name="fgsm", steps=1).steps == 1  # the default 10 runs as its one step
    assert AttackConfig(name="cw", norm="l2", steps=3).resolved()["eps"] == AttackConfig().eps  # stored keys unchanged


def test_bad_attack_values_are_refused_without_importing_torch() -> None:
    """AttackConfig read the attack names through core.attacks.library: torch and torchattacks (2-7 s)
    loaded before eps=-1 was refused."""
    code = (
        "import sys\nfrom core.attacks import AttackConfig\nfrom core.errors import PurifyLabError\n"
        "for fields in ({'eps': -1.0}, {'steps': 0}, {'norm': 'l1'}, {'name': 'apgd', 'eot_iter': 0}, {'name': 'fgsm', 'steps': 5}):\n"
        "    try:\n        AttackConfig(**fields)\n    except PurifyLabError as error:\n        print(error)\n"
        "print(sorted(m for m in ('torch', 'torchattacks') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and len(lines) == 6, done.stderr
    assert lines[-1] == "[]"


def test_an_l2_budget_wider_than_the_models_input_is_refused_before_any_compute(tmp_path, xray_test_dir, xray_paths, capsys) -> None:
    """No two 1 x 32 x 32 images in [0, 1] are more than L2 32 apart: eps=40 would attack with every image
    inside the ball. The ceiling was a fixed 224 whatever the model's input."""
    from core.cli import main
    from core.evaluate import EvaluationConfig, evaluate
    from core.models import create_classifier
    from core.weights import save_weights

    torch.manual_seed(0)
    classifier = create_classifier("student_cnn", pretrained=False, image_size=32, widths=(4, 4, 4, 4)).eval()
    config = EvaluationConfig(data=str(xray_test_dir), classifier="student_cnn", limit=2, bootstrap=10)
    wide = AttackConfig(name="pgdl2", norm="l2", eps=40.0, steps=1)
    message = r"^eps=40.0 is wider than student_cnn's input \(1x32x32\), whose images are at most L2 32 apart .*; choose eps <= 32$"
    with pytest.raises(PurifyLabError, match=message):
        evaluate(dataclasses.replace(config, attack=wide), model=classifier)
    widest = evaluate(dataclasses.replace(config, attack=dataclasses.replace(wide, eps=32.0)), model=classifier)
    assert widest["n"] == 2 and widest["attack"]["eps"] == 32.0
    AttackConfig(name="pgd", norm="l2", eps=55.4256).check_fits_input(3, 32, "cifar10_cnn")  # the bound it names is allowed

    weights = tmp_path / "student_cnn.safetensors"
    save_weights(classifier, weights, {"architecture": classifier.architecture}, fp16=False)
    out = tmp_path / "a.png"
    args = ["attack", str(xray_paths["NORMAL"][0]), "--out", str(out), "--classifier", "student_cnn", "--weights", str(weights)]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--attack", "pgdl2", "--norm", "l2", "--eps", "40", "--steps", "1", "--threads", "1"])
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("error: eps=40.0 is wider than student_cnn's input (1x32x32)")
    assert not out.exists()
