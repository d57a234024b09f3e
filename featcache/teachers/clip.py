"""An open_clip image tower as a teacher (ViT towers; the text tower is built but never run).

`--arch` is an open_clip model name (e.g. ViT-B-16); `--checkpoint` is a local weights file (a full
CLIP state dict, whose image keys start with "visual.", or an image-tower-only one) or a local
open_clip model directory (open_clip_config.json + weights file, as saved by open_clip / the hub).
open_clip never loads or downloads anything itself here (`load_weights=False`): we read the file
with weights_only=True and load the image tower strictly.

Levels: the residual blocks ending 1/4, 1/2, 3/4 of the depth and the last block, "block{i}"
(0-based), each (B, width, S/p, S/p) without the class token; default: the last block. "global"
(B, embed_dim, 1, 1), opt-in: open_clip's image embedding, the pooled token after ln_post and the
projection (what `encode_image` returns, not L2-normalised): the vector CLIP was trained to align
with text, for classification heads (why it is opt-in: teachers/base.py).
Preprocessing: the model's own mean/std and input size, shortest side resized then centre crop, as
CLIP was trained (option `resize` picks another policy).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
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

DIR_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin", "model.safetensors",
               "pytorch_model.bin")
RESIZE_POLICIES = ("resize_center_crop", "resize", "longest_side_pad")


@contextmanager
def _quiet_open_clip() -> Iterator[None]:
    """open_clip warns on the root logger that no weights were loaded: we load them ourselves."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def create_clip_visual(arch: str, model_kwargs: dict[str, Any]) -> torch.nn.Module:
    """open_clip.create_model(arch, load_weights=False).visual: a random tower, nothing downloaded."""
    import open_clip

    if arch.startswith("hf-hub:"):
        raise TeacherError(f"{arch} would download from the hub; pass a local open_clip model "
                           "directory as checkpoint DIR instead", fields=("checkpoint",))
    if not arch.startswith("local-dir:") and arch not in open_clip.list_models():
        raise TeacherError(f"open_clip has no model {arch!r}; see open_clip.list_models()")
    try:
        with _quiet_open_clip():
            model = open_clip.create_model(arch, pretrained=None, load_weights=False, **model_kwargs)
    except (TypeError, KeyError, ValueError, RuntimeError) as exc:
        raise TeacherError(f"open_clip cannot build {arch}: {exc}") from None
    visual = model.visual
    if not hasattr(visual, "transformer") or not hasattr(visual, "forward_intermediates"):
        raise TeacherError(f"open_clip {arch} has a {type(visual).__name__} image tower; only ViT "
                           f"towers are supported as teachers")
    return visual


def clip_levels(visual: torch.nn.Module) -> dict[str, LevelSpec]:
    size, patch = visual.image_size, visual.patch_size
    grid = (size[0] // patch[0], size[1] // patch[1])
    width = visual.transformer.width
    levels = {f"block{i}": LevelSpec(f"block{i}", width, patch[0], grid)
              for i in vit_block_indices(len(visual.transformer.resblocks))}
    # the pooled token is projected to output_dim, unless the tower has no projection
    pooled = int(visual.output_dim) if getattr(visual, "proj", None) is not None else width
    levels[GLOBAL] = global_level(pooled, size[0])
    return levels


class ClipTeacher(Teacher):
    name = "clip"

    def __init__(self, arch: str, visual: torch.nn.Module, resize: str, weights_sha256: str,
                 weights_source: str) -> None:
        self.arch = arch
        self.model = freeze(visual)
        cfg = getattr(visual, "preprocess_cfg", {})
        self.preprocess = Preprocess(
            resize=resize, size=int(visual.image_size[0]),
            mean=tuple(float(v) for v in cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
            std=tuple(float(v) for v in cfg.get("std", (0.26862954, 0.26130258, 0.27577711))))
        self.available_levels = clip_levels(visual)
        blocks = [n for n in self.available_levels if n != GLOBAL]
        self.default_levels = (blocks[-1],)  # the last block, as before `global` existed
        self.weights_sha256 = weights_sha256
        self.weights_source = weights_source

    def _forward_levels(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """x: (B, 3, S, S) -> {block{i}: (B, width, S/p, S/p)} (class token dropped), and
        {global: (B, embed_dim, 1, 1)}."""
        wanted = sorted({int(n[5:]) for n in names if n != GLOBAL})
        pooled = GLOBAL in names
        # the embedding needs every block; without it, stop after the last block asked for
        out = self.model.forward_intermediates(
            x, indices=wanted or [len(self.model.transformer.resblocks) - 1], stop_early=not pooled,
            output_fmt="NCHW", intermediates_only=not pooled)
        levels = {f"block{i}": m for i, m in zip(wanted, out["image_intermediates"], strict=False)}
        if pooled:
            levels[GLOBAL] = out["image_features"][:, :, None, None]  # B D -> B D 1 1
        return levels


def _resolve(checkpoint: Path, arch: str | None) -> tuple[str, Path]:
    """(open_clip model name, weights file) for a weights file or a local model directory."""
    if not checkpoint.is_dir():
        if not arch:
            raise TeacherError("clip teacher needs arch NAME (an open_clip model, e.g. ViT-B-16) "
                               "with a weights file, or checkpoint DIR with an open_clip model directory",
                               fields=("arch", "checkpoint"))
        return arch, checkpoint
    config = checkpoint / "open_clip_config.json"
    if not config.is_file():
        raise TeacherError(f"{checkpoint} is not an open_clip model directory (no open_clip_config.json)")
    try:
        json.loads(config.read_text())
    except ValueError as exc:
        raise TeacherError(f"{config} is not valid JSON ({exc})") from None
    weights = next((checkpoint / f for f in DIR_WEIGHTS if (checkpoint / f).is_file()), None)
    if weights is None:
        raise TeacherError(f"{checkpoint} holds no weights file (expected one of {', '.join(DIR_WEIGHTS)})")
    return f"local-dir:{checkpoint}", weights


def build_clip(checkpoint: Path | None = None, arch: str | None = None, *, random_init: bool = False,
               seed: int = 0, model_kwargs: dict[str, Any] | None = None,
               resize: str = "resize_center_crop") -> ClipTeacher:
    if resize not in RESIZE_POLICIES:
        raise TeacherError(f"resize must be one of {', '.join(RESIZE_POLICIES)}; got {resize!r}")
    require_one_source("clip teacher", checkpoint, random_init, "FILE|DIR")
    if random_init and not arch:
        raise TeacherError("clip teacher needs arch NAME (an open_clip model, e.g. ViT-B-16)",
                           fields=("arch",))
    name, weights = (arch, None) if checkpoint is None else _resolve(Path(checkpoint), arch)
    # Read the file first: a bad file fails before a large model is built.
    state = None if weights is None else unwrap_state_dict(read_checkpoint(weights))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        visual = create_clip_visual(name, dict(model_kwargs or {}))
    label = arch or f"local-dir:{Path(checkpoint).name}"
    if state is None:
        return ClipTeacher(label, visual, resize, sha256_state_dict(visual.state_dict()),
                           f"random-init(seed={seed})")
    state = select_prefix(state, "visual.")
    load_strict(visual, match_keys(state, visual.state_dict().keys()), weights)
    return ClipTeacher(label, visual, resize, sha256_file(weights), str(checkpoint))


def describe() -> TeacherInfo:
    """ViT-B-16's shapes, read from open_clip's configuration (no model is built)."""
    import open_clip

    vision = open_clip.get_model_config("ViT-B-16")["vision_cfg"]
    grid = vision["image_size"] // vision["patch_size"]
    blocks = [f"block{i}" for i in vit_block_indices(vision["layers"])]
    last = LevelSpec(blocks[-1], vision["width"], vision["patch_size"], (grid, grid))
    preprocess = Preprocess("resize_center_crop", vision["image_size"], open_clip.OPENAI_DATASET_MEAN,
                            open_clip.OPENAI_DATASET_STD)
    return TeacherInfo("clip", "open_clip ViT models (arch, e.g. ViT-B-16)", (last,), (*blocks[:-1], GLOBAL),
                       preprocess, "checkpoint FILE or open_clip model DIR, or random_init",
                       "shapes for ViT-B-16")
