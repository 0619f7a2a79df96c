"""Name -> constructor registries, in the spirit of timm's `create_model`.

The CLI, the evaluator and the app name classifiers, purifiers and attacks by string; each concept
keeps one `Registry` and exposes `create_x(name, **kwargs)` on top of it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from core.errors import PurifyLabError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}
        self._descriptions: dict[str, str] = {}

    def register(self, name: str, description: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise RuntimeError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = factory
            doc = (factory.__doc__ or "").strip().splitlines()
            self._descriptions[name] = description or (doc[0] if doc else "")
            return factory

        return decorator

    def check(self, name: str) -> str:
        """`name` if registered, else the one-line error listing the choices: a caller refuses a bad name
        with it before it imports what the entry builds."""
        if name not in self._entries:
            raise PurifyLabError(f"unknown {self.kind} '{name}'; choose one of: {', '.join(self.names())}")
        return name

    def get(self, name: str) -> Callable[..., T]:
        return self._entries[self.check(name)]

    def create(self, name: str, **kwargs) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        return {name: self._descriptions[name] for name in self.names()}

    def __contains__(self, name: str) -> bool:
        return name in self._entries
