"""The shared line for heavy jobs, their cost estimate and the denoiser-call count behind the progress bar."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from core.jobs import CallCost, JobQueue, attack_calls, count_calls, timed_calls
from core.purifiers.base import recomputed_in_backward
from core.purifiers.ddpm import DDPMConfig, DDPMPurifier
from core.purifiers.diffusion import DEFAULT_SCHEDULE
from core.purifiers.unet import build_unet

SIZE = 16


@pytest.fixture(scope="module")
def ddpm() -> DDPMPurifier:
    torch.manual_seed(0)
    return DDPMPurifier(DDPMConfig(t_star=0.04), unet=build_unet("tiny", sample_size=SIZE), schedule=DEFAULT_SCHEDULE)


def test_one_slot_runs_jobs_one_at_a_time_in_arrival_order_and_tells_each_its_place():
    line, started, seen_ahead, release = JobQueue(slots=1), [], {}, threading.Event()

    def job(name: str) -> None:
        with line.turn(on_wait=lambda ahead: seen_ahead.setdefault(name, ahead), poll_s=0.01):
            started.append(name)
            release.wait(5)

    first = threading.Thread(target=job, args=("first",))
    first.start()
    while not started:
        time.sleep(0.01)
    others = []
    for name in ("second", "third"):
        others.append(threading.Thread(target=job, args=(name,)))
        others[-1].start()
        while name not in seen_ahead:
            time.sleep(0.01)
    assert started == ["first"] and line.busy() == 3
    assert seen_ahead == {"second": 1, "third": 2}  # the running job, then the one queued in front
    release.set()
    for thread in (first, *others):
        thread.join(5)
    assert started == ["first", "second", "third"] and line.busy() == 0


class PageRerun(BaseException):
    """What Streamlit raises in a visitor's thread when the page reruns: a BaseException, not an Exception."""


def test_a_waiter_that_gives_up_leaves_the_line():
    line, release = JobQueue(slots=1), threading.Event()

    def hold() -> None:
        with line.turn():
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    while line.busy() == 0:
        time.sleep(0.01)

    def leave(ahead: int) -> None:
        raise PageRerun

    with pytest.raises(PageRerun), line.turn(on_wait=leave):
        pass
    assert line.busy() == 1
    release.set()
    holder.join(5)


def test_cost_uses_this_kinds_measurements_then_any_then_the_first_guess():
    cost = CallCost(first_guess_s=0.2)
    assert cost.estimate("ddpm", 10) == pytest.approx(2.0) and not cost.measured()  # the app says "a first guess"
    cost.record("one_shot", seconds=0.5, calls=1)
    assert cost.estimate("ddpm", 10) == pytest.approx(5.0) and cost.measured()
    for seconds in (1.0, 1.2, 30.0):  # one call slowed by a busy machine does not swing the median
        cost.record("ddpm", seconds=seconds, calls=10)
    assert cost.per_call("ddpm") == pytest.approx(0.12)


def test_attack_cost_counts_denoiser_forwards_under_each_threat():
    assert attack_calls("grey", 10, steps=10, eot=1) == attack_calls("transfer", 10, 10, 1) == 0
    assert attack_calls("bpda-eot", 1, steps=10, eot=4) == 40
    assert attack_calls("white", 10, steps=10, eot=4) == 400


@pytest.mark.parametrize("side", [SIZE, 8 * SIZE])  # a graph kept whole, and one large enough to be checkpointed
def test_attack_cost_is_what_the_app_counts_during_a_white_box_gradient(ddpm, side):
    """The progress bar counts forwards against this prediction; a checkpoint's recomputation is not one."""
    images = torch.rand(1, 1, side, side)
    assert recomputed_in_backward(ddpm.graph_calls(), images.numel()) == (side > SIZE)
    counted = []
    with count_calls(ddpm, counted.append):
        ddpm(images.clone().requires_grad_(True), generator=torch.Generator().manual_seed(0)).sum().backward()
    assert len(counted) == attack_calls("white", ddpm.nfe(), steps=1, eot=1)


def test_calls_are_counted_per_thread_and_timed(ddpm):
    counted, cost = [], CallCost(first_guess_s=1.0)
    images = torch.rand(1, 1, SIZE, SIZE)
    other = threading.Thread(target=lambda: [ddpm.purify(images) for _ in range(3)])
    with timed_calls(ddpm, cost, "ddpm", counted.append):
        other.start()  # another visitor's purification on the same shared model is not counted
        ddpm.purify(images)
        other.join()
    assert counted == list(range(1, ddpm.nfe() + 1))
    assert cost.per_call("ddpm") < 1.0
    assert not ddpm.unet._forward_hooks
    with count_calls(torch.nn.Identity(), counted.append):  # no denoiser, nothing to count
        pass


@pytest.fixture(scope="module")
def tiny_xray_attack(shared_data):
    """A tiny CNN trained on real 28-px X-rays, one validation X-ray and its label (as the lab attacks one image)."""
    from tiny_models import pneumoniamnist, tiny_cnn

    train_images, train_labels = pneumoniamnist(shared_data, "train", 1024)
    images, labels = pneumoniamnist(shared_data, "val", 1)
    return tiny_cnn(train_images, train_labels, seed=0), images, labels


def _tiny_purifier(name: str, side: int):
    from core.purifiers.blur_degradation import BlurSchedule
    from core.purifiers.cold import ColdReconConfig, ColdReconPurifier
    from core.purifiers.one_shot import OneShotConfig, OneShotPurifier

    torch.manual_seed(0)
    unet = build_unet("tiny", sample_size=side)
    if name == "one_shot":
        return OneShotPurifier(OneShotConfig(t_star=0.04), unet=unet, schedule=DEFAULT_SCHEDULE)
    if name == "ddpm":
        return DDPMPurifier(DDPMConfig(t_star=0.04, steps=2), unet=unet, schedule=DEFAULT_SCHEDULE)
    return ColdReconPurifier(ColdReconConfig(depth=4, steps=2), unet=unet, schedule=BlurSchedule(levels=20, sigma_step=0.06))


@pytest.mark.parametrize("threat", ["grey", "bpda", "bpda-eot", "white"])
@pytest.mark.parametrize("name", ["one_shot", "ddpm", "cold_recon"])  # two stochastic purifiers, one deterministic
def test_an_attack_counts_the_denoiser_calls_it_was_priced_at_and_records_their_real_time(tiny_xray_attack, name, threat):
    """EOT draws run as one batched denoiser forward: counting forwards stopped the lab's progress bar
    at 1/eot of its plan and recorded eot times the real seconds per call for the next estimate."""
    from core.attacks import THREAT_MODELS, AttackConfig, craft

    classifier, image, label = tiny_xray_attack
    purifier = _tiny_purifier(name, image.shape[-1])
    eot = THREAT_MODELS[threat].draws_per_step(4)  # as the lab does
    drawn = eot if purifier.stochastic else 1
    planned = attack_calls(threat, purifier.nfe(), steps=2, eot=drawn)
    counted, cost = [], CallCost(first_guess_s=100.0)
    started = time.perf_counter()
    with timed_calls(purifier, cost, "attack", counted.append):
        craft(threat, classifier, purifier, image, label, AttackConfig(name="pgd", eps=0.03, steps=2), eot=eot)
    elapsed = time.perf_counter() - started
    assert (counted[-1] if counted else 0) == planned
    if planned:  # the estimate for the same attack again is the time it took
        assert cost.estimate("attack", planned) == pytest.approx(elapsed, rel=0.2)
