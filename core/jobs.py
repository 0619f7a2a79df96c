"""Heavy work on a shared CPU: a fair line for it, its cost up front, and its progress as it runs.

A server with a few cores serves many visitors. A diffusion chain or an adaptive attack takes the
whole CPU for seconds to minutes, so those jobs wait their turn in one process-wide line
(`JobQueue`) while light work goes ahead. Their cost is counted in denoiser calls (a purifier's
`nfe()`), priced at the per-call time last measured on this machine for that kind of job
(`CallCost`), so a visitor sees the estimate before starting it; `count_calls` reports each call as
it happens.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from torch import Tensor, nn

# Denoiser calls per attack step and purifier draw, as `count_calls` counts them: BPDA and the
# white-box gradient run each call forward once. A checkpointed backward runs it again, but that
# recomputation stops before the UNet's last layer (nothing there is saved), so it is never counted:
# its time, like the backward's, is in the per-call cost measured for that kind of job. That holds
# for a call run as one CPU micro-batch (`core.micro_batch`), as the app's attacks are; of a call
# split into several, every chunk but the last is recomputed whole, and counted.
_CALLS_PER_DRAW = {"grey": 0, "transfer": 0, "bpda": 1, "bpda-eot": 1, "white": 1}


class JobQueue:
    """At most `slots` heavy jobs run at once, in arrival order; the others wait and learn their place."""

    def __init__(self, slots: int = 1) -> None:
        self.slots = slots
        self._running = 0
        self._waiting: deque[object] = deque()
        self._changed = threading.Condition()

    def _ahead(self, ticket: object) -> int:
        """Jobs that start before `ticket`: the running ones and those queued in front of it."""
        return self._running + self._waiting.index(ticket)

    @contextmanager
    def turn(self, on_wait: Callable[[int], None] = lambda ahead: None, poll_s: float = 0.5) -> Iterator[None]:
        """Hold a slot for the `with` body; while waiting, `on_wait(jobs ahead)` is called every `poll_s`
        (outside the lock, so it may raise, e.g. when the visitor reruns the page, and leave the line)."""
        ticket = object()
        with self._changed:
            self._waiting.append(ticket)
        try:
            while True:
                with self._changed:
                    if self._waiting[0] is ticket and self._running < self.slots:
                        self._waiting.popleft()
                        self._running += 1
                        break
                    ahead = self._ahead(ticket)
                on_wait(ahead)
                with self._changed:
                    self._changed.wait(poll_s)
        except BaseException:
            with self._changed:
                self._waiting.remove(ticket)
                self._changed.notify_all()
            raise
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    def busy(self) -> int:
        """Jobs running or waiting now."""
        with self._changed:
            return self._running + len(self._waiting)


class CallCost:
    """Seconds per denoiser call on this machine, per kind of job (a DiffDefense call also runs a
    backward pass; an attack adds the classifier): the recent measurements, or the best guess before any."""

    def __init__(self, first_guess_s: float, window: int = 8) -> None:
        self.first_guess_s = first_guess_s
        self.window = window
        self._recent: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def record(self, kind: str, seconds: float, calls: int) -> None:
        if calls > 0:
            with self._lock:
                self._recent.setdefault(kind, deque(maxlen=self.window)).append(seconds / calls)

    def per_call(self, kind: str) -> float:
        """The median of this kind's recent measurements (one slow call under load does not swing it);
        for a kind never measured, the median over every kind measured, else the first guess."""
        with self._lock:
            values = list(self._recent.get(kind) or [v for recent in self._recent.values() for v in recent])
        return sorted(values)[len(values) // 2] if values else self.first_guess_s

    def estimate(self, kind: str, calls: int) -> float:
        return calls * self.per_call(kind)

    def measured(self) -> bool:
        """Whether an estimate rests on a call timed here, not on the first guess."""
        with self._lock:
            return any(self._recent.values())


def attack_calls(threat: str, purifier_calls: int, steps: int, eot: int) -> int:
    """Denoiser calls an attack on one image makes under `threat` (0 when it never sees the purifier):
    one per draw, however many draws run in one batched forward."""
    return _CALLS_PER_DRAW[threat] * purifier_calls * steps * eot


@contextmanager
def count_calls(module: nn.Module, on_call: Callable[[int], None]) -> Iterator[None]:
    """Call `on_call(calls so far)` after each forward of `module.unet` made by this thread.

    A call is one row of the forward's batch, the unit of `nfe()` and `attack_calls`: EOT draws and
    micro-batches put a varying number of rows in one forward, so counting forwards would not match
    the plan. The models are shared by every visitor's thread, so calls from other threads are not
    counted. A module without a `unet` (blur, no purifier) makes no denoiser calls."""
    unet = getattr(module, "unet", None)
    if unet is None:
        yield
        return
    owner, calls = threading.get_ident(), [0]

    def hook(_module: nn.Module, args: tuple[Tensor, ...], _output: object) -> None:
        if threading.get_ident() == owner:
            calls[0] += args[0].shape[0]
            on_call(calls[0])

    handle = unet.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def timed_calls(module: nn.Module, cost: CallCost, kind: str, on_call: Callable[[int], None] = lambda calls: None) -> Iterator[None]:
    """`count_calls`, and the measured seconds per call recorded in `cost` under `kind` when the work ends."""
    calls, start = [0], time.perf_counter()

    def counted(done: int) -> None:
        calls[0] = done
        on_call(done)

    with count_calls(module, counted):
        yield
    cost.record(kind, time.perf_counter() - start, calls[0])
