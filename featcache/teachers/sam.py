"""SAM and MedSAM image encoders (segment-anything's ImageEncoderViT) as teachers.

Both read a square input of side S = 1024 and expose, from the ViT trunk, the blocks ending 1/4, 1/2,
3/4 of the depth and the last block ("block{i}", 0-based, (B, D, S/16, S/16)) and the encoder's
output "neck" ((B, 256, S/16, S/16); default), the embedding SAM's mask decoder reads, and
"global" ((B, 256, 1, 1), opt-in): the neck averaged over all S/16 x S/16 positions, the image-level
vector for classification heads (see teachers/base.py for why it is not a default level).

Preprocessing follows each model's own code:
- SAM (`Sam.preprocess` + `ResizeLongestSide`): longest side to 1024, zero pad bottom/right, pixel
  values on the 0-255 scale normalised by SAM's mean/std.
- MedSAM (MedSAM_Inference.py): the image is stretched to 1024x1024 and min-max scaled to [0, 1],
  with no mean/std. (featcache images already lie in [0, 1].)

Weights come only from a local checkpoint (the official full-model files, whose encoder keys start
with "image_encoder.", or an encoder-only state dict). `random_init=True` builds a seeded random
encoder; tiny configurations for tests come from the options embed_dim, depth, num_heads, img_size,
window_size and global_attn_indexes.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from featcache.errors import TeacherError
from featcache.teachers.base import (
    GLOBAL,
    LevelSpec,
    Preprocess,
    Teacher,
    TeacherInfo,
    global_level,
    sha256_file,
    sha256_state_dict,
)
from featcache.teachers.weights import (
    freeze,
    load_strict,
    match_keys,
    read_checkpoint,
    require_one_source,
    select_prefix,
    unwrap_state_dict,
    vit_block_indices,
)

PATCH = 16
NECK_CHANNELS = 256
# segment_anything/build_sam.py: embed_dim, depth, num_heads, global attention blocks.
SAM_ARCHS: dict[str, dict[str, Any]] = {
    "vit_b": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": (2, 5, 8, 11)},
    "vit_l": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "global_attn_indexes": (5, 11, 17, 23)},
    "vit_h": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "global_attn_indexes": (7, 15, 23, 31)},
}
SAM_PREPROCESS = Preprocess(resize="longest_side_pad", size=1024, mean=(123.675, 116.28, 103.53),
                            std=(58.395, 57.12, 57.375), pixel_scale=255.0)
MEDSAM_PREPROCESS = Preprocess(resize="resize", size=1024)
CONFIG_KEYS = ("embed_dim", "depth", "num_heads", "img_size", "window_size", "global_attn_indexes")


def encoder_config(arch: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The ImageEncoderViT keyword arguments for `arch`, with test-size overrides applied."""
    if arch not in SAM_ARCHS:
        raise TeacherError(f"unknown SAM architecture {arch!r}; use arch {' | '.join(SAM_ARCHS)}",
                           fields=("arch",))
    unknown = sorted(set(overrides) - set(CONFIG_KEYS))
    if unknown:
        raise TeacherError(f"unknown option(s) {', '.join(unknown)}; SAM options: random_init, seed, "
                           f"{', '.join(CONFIG_KEYS)}")
    cfg = {"img_size": 1024, "window_size": 14, **SAM_ARCHS[arch], **overrides}
    cfg["global_attn_indexes"] = tuple(int(i) for i in cfg["global_attn_indexes"])
    if cfg["img_size"] % PATCH:
        raise TeacherError(f"img_size must be a multiple of {PATCH}; got {cfg['img_size']}")
    return cfg


def encoder_levels(cfg: dict[str, Any]) -> dict[str, LevelSpec]:
    grid = (cfg["img_size"] // PATCH,) * 2
    levels = {f"block{i}": LevelSpec(f"block{i}", cfg["embed_dim"], PATCH, grid)
              for i in vit_block_indices(cfg["depth"])}
    levels["neck"] = LevelSpec("neck", NECK_CHANNELS, PATCH, grid)
    levels[GLOBAL] = global_level(NECK_CHANNELS, cfg["img_size"])
    return levels


def build_encoder(cfg: dict[str, Any]) -> torch.nn.Module:
    from segment_anything.modeling import ImageEncoderViT

    return ImageEncoderViT(
        depth=cfg["depth"], embed_dim=cfg["embed_dim"], img_size=cfg["img_size"], mlp_ratio=4,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=cfg["num_heads"],
        patch_size=PATCH, qkv_bias=True, use_rel_pos=True,
        global_attn_indexes=tuple(cfg["global_attn_indexes"]), window_size=cfg["window_size"],
        out_chans=NECK_CHANNELS,
    )


class SamTeacher(Teacher):
    def __init__(self, name: str, arch: str, cfg: dict[str, Any], encoder: torch.nn.Module,
                 preprocess: Preprocess, weights_sha256: str, weights_source: str) -> None:
        self.name = name
        self.arch = arch if cfg == encoder_config(arch, {}) else f"{arch}-custom{_short(cfg)}"
        self.model = freeze(encoder)
        self.preprocess = replace(preprocess, size=cfg["img_size"])
        self.available_levels = encoder_levels(cfg)
        self.default_levels = ("neck",)
        self.weights_sha256 = weights_sha256
        self.weights_source = weights_source

    def _forward_levels(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """x: (B, 3, S, S) -> {level: (B, C, S/16, S/16), global: (B, 256, 1, 1)}; mirrors
        ImageEncoderViT.forward."""
        enc = self.model
        out: dict[str, torch.Tensor] = {}
        h = enc.patch_embed(x)  # B S/16 S/16 D (channels last)
        if enc.pos_embed is not None:
            h = h + enc.pos_embed
        wanted = [int(n[5:]) for n in names if n.startswith("block")]
        neck = "neck" in names or GLOBAL in names
        last = len(enc.blocks) - 1 if neck else max(wanted)
        for i, blk in enumerate(enc.blocks[:last + 1]):  # stop early when only early blocks are asked
            h = blk(h)
            if i in wanted:
                out[f"block{i}"] = h.permute(0, 3, 1, 2)  # B H W D -> B D H W
        if neck:
            out["neck"] = enc.neck(h.permute(0, 3, 1, 2))
            out[GLOBAL] = out["neck"].mean(dim=(2, 3), keepdim=True)  # B 256 H W -> B 256 1 1
        return out


def _short(cfg: dict[str, Any]) -> str:
    return (f"(d{cfg['embed_dim']}x{cfg['depth']},h{cfg['num_heads']},s{cfg['img_size']},"
            f"w{cfg['window_size']},g{','.join(map(str, cfg['global_attn_indexes']))})")


def _build(name: str, arch: str, preprocess: Preprocess, checkpoint: Path | None, random_init: bool,
           seed: int, overrides: dict[str, Any]) -> SamTeacher:
    cfg = encoder_config(arch, overrides)
    require_one_source(name, checkpoint, random_init, f"FILE (the official {arch} .pth)")
    # Read the file first: a bad file fails before a large model is built.
    state = None if random_init else unwrap_state_dict(read_checkpoint(checkpoint))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = build_encoder(cfg)
    if state is None:
        return SamTeacher(name, arch, cfg, encoder, preprocess,
                          sha256_state_dict(encoder.state_dict()), f"random-init(seed={seed})")
    state = select_prefix(state, "image_encoder.")
    load_strict(encoder, match_keys(state, encoder.state_dict().keys()), checkpoint)
    return SamTeacher(name, arch, cfg, encoder, preprocess, sha256_file(checkpoint), str(checkpoint))


def build_sam(checkpoint: Path | None = None, arch: str | None = None, *, random_init: bool = False,
              seed: int = 0, **overrides: Any) -> SamTeacher:
    return _build("sam", arch or "vit_b", SAM_PREPROCESS, checkpoint, random_init, seed, overrides)


def build_medsam(checkpoint: Path | None = None, arch: str | None = None, *, random_init: bool = False,
                 seed: int = 0, **overrides: Any) -> SamTeacher:
    if arch not in (None, "vit_b"):
        raise TeacherError(f"MedSAM is a ViT-B model; drop arch {arch}", fields=("arch",))
    return _build("medsam", "vit_b", MEDSAM_PREPROCESS, checkpoint, random_init, seed, overrides)


def _describe(name: str) -> TeacherInfo:
    levels = encoder_levels(encoder_config("vit_b", {}))
    archs = " | ".join(SAM_ARCHS) if name == "sam" else "vit_b"
    preprocess = SAM_PREPROCESS if name == "sam" else MEDSAM_PREPROCESS
    note = "shapes for vit_b; vit_l/vit_h: 1024/1280 ch blocks" if name == "sam" else ""
    return TeacherInfo(name, archs, (levels["neck"],), tuple(n for n in levels if n != "neck"), preprocess,
                       "checkpoint FILE (official .pth), or random_init", note)


def describe_sam() -> TeacherInfo:
    return _describe("sam")


def describe_medsam() -> TeacherInfo:
    return _describe("medsam")
