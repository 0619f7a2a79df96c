"""Verdicts on a paper's figures: does the re-run's 95 % interval confirm, refute or leave open the claim?

A figure inside the interval confirms it only when the interval is narrow enough to have ruled
out a materially different figure; otherwise the cell cannot decide (too few images). A figure
outside the interval is refuted at that confidence, whichever side it lies on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.errors import PurifyLabError

# The widest 95 % interval (accuracy points, on the [0, 1] scale) that still confirms a figure inside it.
DECISIVE_WIDTH = 0.10


@dataclass(frozen=True)
class Verdict:
    paper: float  # the paper's figure, [0, 1]
    ours: float
    low: float
    high: float

    def __post_init__(self) -> None:
        """A NaN fails every comparison below, so it would read as 'confirms'."""
        if not all(math.isfinite(value) for value in (self.paper, self.ours, self.low, self.high)):
            raise PurifyLabError(f"a verdict needs finite figures; got paper {self.paper}, ours {self.ours} [{self.low}, {self.high}]")

    @property
    def word(self) -> str:
        if self.paper < self.low:
            return "refutes (ours higher)"
        if self.paper > self.high:
            return "refutes (ours lower)"
        if self.high - self.low <= DECISIVE_WIDTH:
            return "confirms"
        return f"cannot decide (interval wider than {100 * DECISIVE_WIDTH:.0f} points)"
