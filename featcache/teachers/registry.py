"""The teacher registry: name -> builder(checkpoint=None, arch=None, **options) -> Teacher and its
description for `teachers list`. Written out here from each teacher module.

The paper's (MultiMedDistill's) teachers, and which of them load here (weights always local files):
- MedSAM: yes, `medsam --checkpoint medsam_vit_b.pth` (the official full-model file).
- RETFound-MAE: yes, through timm's ViT-L: `timm --arch vit_large_patch16_224.mae --checkpoint
  RETFound_cfp_weights.pth` (keys under "model", MAE naming; the MAE decoder is dropped; see
  timm_backbone.py, tested on a checkpoint of that layout, not on the released file itself).
- USFM: no. Its encoder is a BEiT-style ViT-B/16 (relative position bias, layer scale) from its
  own code, which timm's `beit_base_patch16_224` resembles, but its checkpoint (USFM_latest.pth,
  distributed outside any registry) was not at hand to check its key names or a conversion, so
  featcache does not claim it. Trying `timm --arch beit_base_patch16_224 --checkpoint FILE` is
  safe: strict loading names the missing and unexpected keys instead of loading wrong weights.
- BiomedParse: no. It is a text-prompted SEEM/X-Decoder model (v2: BoltzFormer) built by its own
  detectron2-based code; its image encoder exists only inside that code, under that code's names,
  and no featcache teacher builds it.
"""

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
