"""The teacher registry: name -> builder(checkpoint=None, arch=None, **options) -> Teacher and its
description for `teachers list`. Written out here from each teacher module."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featcache.errors import TeacherError
from featcache.registry import lookup
from featcache.teachers import clip, litemedsam, sam, timm_backbone
from featcache.teachers.base import Teacher, TeacherInfo

TeacherBuilder = Callable[..., Teacher]


@dataclass(frozen=True)
class TeacherEntry:
    build: TeacherBuilder
    describe: Callable[[], TeacherInfo]  # reads no weights


TEACHERS: dict[str, TeacherEntry] = {
    "clip": TeacherEntry(clip.build_clip, clip.describe),
    "litemedsam": TeacherEntry(litemedsam.build_litemedsam, litemedsam.describe),
    "medsam": TeacherEntry(sam.build_medsam, sam.describe_medsam),
    "sam": TeacherEntry(sam.build_sam, sam.describe_sam),
    "timm": TeacherEntry(timm_backbone.build_timm, timm_backbone.describe),
}


def build_teacher(name: str, checkpoint: str | Path | None = None, arch: str | None = None,
                  **options: Any) -> Teacher:
    build = lookup(TEACHERS, "teacher", name, TeacherError).build
    return build(checkpoint=Path(checkpoint) if checkpoint else None, arch=arch, **options)


def describe_teachers() -> list[TeacherInfo]:
    """One TeacherInfo per built-in teacher, in name order; no weights are read."""
    return [TEACHERS[name].describe() for name in sorted(TEACHERS)]
