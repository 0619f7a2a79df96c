"""The one exception type users see: its message is a single line that says what to fix."""

from __future__ import annotations

import dataclasses
import numbers
import types
import typing
from typing import Any


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


def typed(name: str, value: Any, hint: Any) -> Any:
    """`value` if it is of the annotated type `hint`, else a one-line error naming `name`.

    Driven by the dataclass annotations, so a preset, a purifier's and an attack's fields are checked
    by one rule: an int field refuses 2.5 and True, a float field takes an int but not a bool or a
    string, X | None takes None. A tuple[T, ...] field takes a list (YAML's sequence) or a single
    string for tuple[str, ...], and is returned as a tuple; float items become floats (as sweep values
    always were). Values are otherwise returned unchanged, so the cell keys hashed from them stay the same.
    """
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (types.UnionType, typing.Union):
        for option in arguments:
            try:
                return typed(name, value, option)
            except PurifyLabError:
                continue
        raise PurifyLabError(f"{name} must be {_spell(hint)}; got {value!r}")
    if origin is tuple:
        if isinstance(value, str) and arguments[0] is str:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise PurifyLabError(f"{name} must be a list; got {value!r}")
        items = [typed(f"{name}[{i}]", item, arguments[0]) for i, item in enumerate(value)]
        return tuple(float(item) for item in items) if arguments[0] is float else tuple(items)
    if hint is type(None):
        ok = value is None
    elif hint is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    else:
        ok = isinstance(value, origin or hint)
    if not ok:
        raise PurifyLabError(f"{name} must be {_spell(hint)}; got {value!r}")
    return value


def _spell(hint: Any) -> str:
    """A type in the words of the error messages: 'an integer', 'a number or None', 'a mapping'."""
    words = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping", type(None): "None"}
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_spell(option) for option in typing.get_args(hint))
    if typing.get_origin(hint) is tuple:
        return "a list"
    return words.get(hint, f"a {getattr(hint, '__name__', hint)}")


def check_types(record: Any) -> None:
    """Refuse a dataclass instance any of whose fields is not of its annotated type (see `typed`)."""
    hints = typing.get_type_hints(type(record))
    for field in dataclasses.fields(record):
        typed(field.name, getattr(record, field.name), hints[field.name])
