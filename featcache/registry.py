"""Short names (`busi`, `litemedsam`) -> builders, for datasets and teachers.

Each registry is a plain dict written out in one place (data/registry.py, teachers/registry.py),
like segment-anything's `sam_model_registry`, from each module's build function and description:
nothing registers itself on import. An unknown name lists the known ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from featcache.errors import FeatcacheError

B = TypeVar("B")
E = TypeVar("E")


@dataclass(frozen=True)
class Entry(Generic[B]):
    build: B
    summary: str  # one line for listings


def lookup(registry: Mapping[str, E], kind: str, name: str, error: type[FeatcacheError]) -> E:
    """registry[name], or `error` naming the known names."""
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(sorted(registry)) or "none"
        raise error(f"unknown {kind} {name!r}; known: {known}") from None
