"""Deterministic augmentation views with recorded parameters.

ViT features are not flip-equivariant, so a cache must store the views it trains on rather than
transform cached maps. Extraction stores K views per image (view 0 is the identity) together with
each view's parameters; distillation replays exactly the same geometric transform on the image and
its mask, so student, mask and teacher features always describe the same picture.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import astuple, dataclass

import numpy as np
import torch
import torch.nn.functional as F

PARAM_NAMES = ("flip_h", "flip_v", "angle_deg", "scale", "shift_y", "shift_x", "gamma")


@dataclass(frozen=True)
class ViewParams:
    flip_h: float = 0.0  # 1 = mirrored left-right
    flip_v: float = 0.0  # 1 = mirrored top-bottom
    angle_deg: float = 0.0  # rotation, counter-clockwise
    scale: float = 1.0  # >1 zooms in (a scale-crop)
    shift_y: float = 0.0  # translation as a fraction of the image height
    shift_x: float = 0.0
    gamma: float = 1.0  # intensity: image ** gamma (image only, never the mask)

    def to_array(self) -> np.ndarray:
        return np.array(astuple(self), dtype=np.float32)

    @classmethod
    def from_array(cls, values: np.ndarray) -> ViewParams:
        return cls(*(float(v) for v in np.asarray(values).reshape(-1)[: len(PARAM_NAMES)]))

    @property
    def is_identity(self) -> bool:
        return self == ViewParams()


def sample_view(sample_id: str, view: int, seed: int = 0) -> ViewParams:
    """The policy: flips, scale-crop 1-1.2x, rotation within ±10°, shift within ±5%, gamma 0.8-1.25.

    Seeded by (seed, sample id, view) so any subset of a dataset gets the same views.
    """
    if view == 0:
        return ViewParams()
    digest = hashlib.sha256(f"{seed}:{sample_id}:{view}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return ViewParams(
        flip_h=float(rng.random() < 0.5), flip_v=float(rng.random() < 0.2),
        angle_deg=float(rng.uniform(-10, 10)), scale=float(rng.uniform(1.0, 1.2)),
        shift_y=float(rng.uniform(-0.05, 0.05)), shift_x=float(rng.uniform(-0.05, 0.05)),
        gamma=float(math.exp(rng.uniform(math.log(0.8), math.log(1.25)))),
    )


def _theta(p: ViewParams) -> torch.Tensor:
    """Affine map from output to input normalised coordinates (what affine_grid expects)."""
    a = math.radians(p.angle_deg)
    cos, sin = math.cos(a) / p.scale, math.sin(a) / p.scale
    fx = -1.0 if p.flip_h else 1.0
    fy = -1.0 if p.flip_v else 1.0
    return torch.tensor([[fx * cos, -fx * sin, 2 * p.shift_x],
                         [fy * sin, fy * cos, 2 * p.shift_y]], dtype=torch.float32)[None]


def apply_view(image: np.ndarray, mask: np.ndarray | None, params: ViewParams
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """image float32 (H, W, C) in [0, 1], mask uint8 (H, W) -> the same view of both.

    Bilinear for the image, nearest for the mask, zeros outside. The identity view returns the
    inputs unchanged (bitwise).
    """
    if params.is_identity:
        return image, mask
    h, w = image.shape[:2]
    grid = F.affine_grid(_theta(params), [1, 1, h, w], align_corners=False)
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    out_image = out[0].permute(1, 2, 0).clamp(0, 1).numpy() ** params.gamma
    out_mask = None
    if mask is not None:
        m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None]
        out_mask = F.grid_sample(m, grid, mode="nearest", padding_mode="zeros",
                                 align_corners=False)[0, 0].numpy().astype(np.uint8)
    return out_image.astype(np.float32), out_mask
