"""The teacher registry: name -> builder(checkpoint=None, arch=None, **options) -> Teacher."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from featcache.errors import TeacherError
from featcache.registry import Registry
from featcache.teachers.base import Teacher

TeacherBuilder = Callable[..., Teacher]
TEACHERS: Registry[TeacherBuilder] = Registry("teacher", TeacherError)


def build_teacher(name: str, checkpoint: str | Path | None = None, arch: str | None = None,
                  **options: Any) -> Teacher:
    import featcache.teachers.zoo  # noqa: F401  (registers the built-in teachers)

    return TEACHERS.get(name)(checkpoint=Path(checkpoint) if checkpoint else None, arch=arch, **options)
