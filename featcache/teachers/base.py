"""What every teacher exposes: preprocessing as data, named feature levels, a fingerprint.

A teacher turns a dataset image (float32 (H, W, C) in [0, 1]) into a fixed-size input tensor with
`prepare` (CPU, in loader workers), then `extract` runs the model on a batch and returns the
requested levels as NCHW tensors. `prepare` also returns where the image lies on the teacher's
feature grid (`box`), so distillation can resample teacher features onto the student's frame
whatever the teacher's resize policy was (pad, crop or stretch).

Every teacher also offers the level `global`: its image-level vector (SAM, MedSAM, LiteMedSAM: the
neck embedding averaged over every position of the input, padding included, as the encoder saw
it; CLIP: open_clip's projected image embedding; timm: pre-logits), stored like any other level
as (C, 1, 1): one cell spanning the whole teacher input, so its stride is the input size. It is
for classification heads and for gating teachers per image. It is opt-in (`--levels
global,...`), never a default level: the defaults, and so the entry keys of existing stores
(the demo's included), stay what they were, and segmentation-only users store nothing extra.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from featcache.errors import TeacherError
from featcache.teachers.compute import compute_context
from featcache.teachers.weights import describe_source
from featcache.version import FEATURE_FORMAT_VERSION

ResizePolicy = Literal["longest_side_pad", "resize", "resize_center_crop"]


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the teacher's input: resize policy, size, and normalisation.

    The image in [0, 1] is multiplied by `pixel_scale`, then (x - mean) / std per channel.
    Grey images are replicated to `channels` channels.
    """

    resize: ResizePolicy
    size: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pixel_scale: float = 1.0
    channels: int = 3

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LevelSpec:
    """One named feature level: channels, stride w.r.t. the teacher input, and grid size (H, W)."""

    name: str
    channels: int
    stride: int
    grid: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "channels": self.channels, "stride": self.stride,
                "grid": list(self.grid)}


GLOBAL = "global"


def global_level(channels: int, size: int) -> LevelSpec:
    """The teacher's image-level vector as a level: (C, 1, 1) for a teacher input of side `size`."""
    return LevelSpec(GLOBAL, channels, size, (1, 1))


@dataclass(frozen=True)
class TeacherInfo:
    """What a built-in teacher offers, described without loading any weights (`teachers list`).

    Level shapes come from the architectures' configurations; teachers whose architecture is chosen
    with `arch` are described for a representative default (named in `note`). Settings are named
    as the library calls them (`checkpoint`, `random_init`); `teachers list` prints them as flags.
    """

    name: str
    architectures: str
    default_levels: tuple[LevelSpec, ...]
    other_levels: tuple[str, ...]
    preprocess: Preprocess | None
    weights: str
    note: str = ""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_state_dict(state: dict[str, torch.Tensor]) -> str:
    """Content hash of weights that exist only in memory (random-init teachers)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.numpy().tobytes() if tensor.dtype != torch.bfloat16
                      else tensor.float().numpy().tobytes())
    return digest.hexdigest()


Box = tuple[float, float, float, float]


def prepare_image(image: np.ndarray, spec: Preprocess) -> tuple[torch.Tensor, Box]:
    """float32 (H, W, C) in [0, 1] -> (C', S, S) float32 tensor, and the image's box on the input.

    The box (y0, x0, y1, x1) gives the image's extent as fractions of the teacher input (and so of
    its feature grid): (0, 0, 1, 1) for a stretch, (0, 0, h/S, w/S) for longest-side + pad, values
    beyond [0, 1] for a centre crop (parts of the image the teacher never saw).
    """
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
    return prepare_tensor(x, spec)


def prepare_tensor(x: torch.Tensor, spec: Preprocess) -> tuple[torch.Tensor, Box]:
    """prepare_image of a float32 (C, H, W) tensor in [0, 1] on any device (the extraction loader
    resizes on the teacher's GPU: pipeline.py), computed there."""
    if x.shape[0] == 1 and spec.channels == 3:
        x = x.expand(3, -1, -1)
    elif x.shape[0] != spec.channels:
        raise TeacherError(f"image has {x.shape[0]} channels; this teacher takes 1 or {spec.channels}")
    h, w = x.shape[1:]
    s = spec.size
    if spec.resize == "resize":
        x = _resize(x, s, s)
        box = (0.0, 0.0, 1.0, 1.0)
    elif spec.resize == "longest_side_pad":
        scale = s / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        x = F.pad(_resize(x, nh, nw), (0, s - nw, 0, s - nh))
        box = (0.0, 0.0, nh / s, nw / s)
    elif spec.resize == "resize_center_crop":
        scale = s / min(h, w)
        nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        top, left = (nh - s) // 2, (nw - s) // 2
        x = _resize(x, nh, nw)[:, top:top + s, left:left + s]
        box = (-top / s, -left / s, (nh - top) / s, (nw - left) / s)
    else:
        raise TeacherError(f"unknown resize policy {spec.resize!r}")
    x = x * spec.pixel_scale
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=x.device)[:, None, None]
    std = torch.tensor(spec.std, dtype=torch.float32, device=x.device)[:, None, None]
    return ((x - mean) / std).contiguous(), box


def _resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if tuple(x.shape[1:]) == (h, w):
        return x
    return F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False,
                         antialias=True)[0]


class Teacher(ABC):
    """A frozen foundation model with named multi-scale levels.

    Subclasses set `name`, `arch`, `preprocess`, `available_levels`, `default_levels`,
    `weights_sha256`, `weights_source`, build `self.model`, and implement `_forward_levels`.
    """

    name: str
    arch: str
    preprocess: Preprocess
    available_levels: dict[str, LevelSpec]
    default_levels: tuple[str, ...]
    weights_sha256: str
    weights_source: str
    model: torch.nn.Module

    def select_levels(self, names: list[str] | None) -> list[LevelSpec]:
        names = list(names) if names else list(self.default_levels)
        unknown = [n for n in names if n not in self.available_levels]
        if unknown:
            raise TeacherError(f"teacher {self.name} has no level(s) {', '.join(unknown)}; "
                               f"available: {', '.join(self.available_levels)}")
        return [self.available_levels[n] for n in names]

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, Box]:
        return prepare_image(image, self.preprocess)

    @abstractmethod
    def _forward_levels(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """x: (B, C, S, S) on the model's device -> {level: (B, C_l, H_l, W_l)}."""

    def to(self, device: str | torch.device) -> Teacher:
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def extract(self, x: torch.Tensor, names: list[str], compute_dtype: str = "float32", *,
                host: bool = True) -> dict[str, torch.Tensor]:
        """Run the teacher on a prepared batch in `compute_dtype` (teachers/compute.py); returns
        float32 tensors per level, on the CPU, or where the model is when `host` is False."""
        self.model.eval()
        device = self.device
        with torch.inference_mode(), compute_context(compute_dtype, device):
            out = self._forward_levels(x.to(device, non_blocking=True), names)
        return {n: out[n].float() if not host else out[n].float().cpu() for n in names}

    def fingerprint(self, level_names: list[str] | None = None) -> str:
        """Same weights + architecture + preprocessing + levels + format -> same hash anywhere."""
        payload = {
            "teacher": self.name,
            "arch": self.arch,
            "weights_sha256": self.weights_sha256,
            "preprocess": self.preprocess.to_dict(),
            "levels": [lv.to_dict() for lv in self.select_levels(level_names)],
            "feature_format": FEATURE_FORMAT_VERSION,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def provenance(self, level_names: list[str] | None = None) -> dict[str, Any]:
        return {
            "name": self.name,
            "arch": self.arch,
            "weights_sha256": self.weights_sha256,
            "weights_source": describe_source(self.weights_source),
            "preprocess": self.preprocess.to_dict(),
            "levels": [lv.to_dict() for lv in self.select_levels(level_names)],
            "fingerprint": self.fingerprint(level_names),
            "params": sum(p.numel() for p in self.model.parameters()),
        }
