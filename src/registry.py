"""Small named registries: one per swappable axis (loss, sampler, engine, reward).

YAML names a component by a short string; nothing outside a registry branches on it.
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a short name to a component; errors list the valid names.

    Entries may be registered lazily as ``"module:attr"`` strings so heavy
    backends (vLLM) are imported only when chosen.
    """

    def __init__(self, axis: str) -> None:
        self.axis = axis
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, obj: T | None = None) -> Callable[[T], T] | T:
        """Register ``obj`` under ``name``; usable as ``@registry.register("name")``."""

        def add(o: T) -> T:
            if name in self._entries:
                raise KeyError(f"{self.axis} '{name}' is already registered")
            self._entries[name] = o
            return o

        return add(obj) if obj is not None else add

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"package.module:attr"``, imported on first ``get``."""
        if name in self._entries:
            raise KeyError(f"{self.axis} '{name}' is already registered")
        self._entries[name] = target

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise KeyError(
                f"unknown {self.axis} '{name}'; valid names: {', '.join(self.names())}"
            )
        entry = self._entries[name]
        if isinstance(entry, str):
            import importlib

            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]
