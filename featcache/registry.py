"""A generic name -> builder registry, used for datasets and teachers.

The CLI and manifests refer to things by short names (`busi`, `litemedsam`); an unknown name lists
the known ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from featcache.errors import FeatcacheError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    builder: T
    summary: str


class Registry(Generic[T]):
    def __init__(self, kind: str, error: type[FeatcacheError] = FeatcacheError) -> None:
        self.kind = kind
        self._error = error
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, summary: str = "") -> Callable[[T], T]:
        def decorate(builder: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, builder, summary)
            return builder

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._entries[name].builder
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise self._error(f"unknown {self.kind} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __contains__(self, name: object) -> bool:
        return name in self._entries
