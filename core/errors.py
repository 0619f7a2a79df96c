"""The one exception type users see: its message is a single line that says what to fix."""


class PurifyLabError(ValueError):
    """Bad input or a bad parameter; the message names the value and what is allowed."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def check_range(name: str, value: float, low: float, high: float, *, low_open: bool = False, note: str = "") -> None:
    """One-line error for a parameter outside [low, high] (or (low, high] with low_open); NaN fails too."""
    ok = (value > low if low_open else value >= low) and value <= high
    if not ok or value != value:
        bracket = "(" if low_open else "["
        suffix = f" ({note})" if note else ""
        raise PurifyLabError(f"{name}={value} is outside the allowed range {bracket}{low}, {high}]{suffix}")
