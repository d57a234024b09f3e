"""The training item as the loader computed it before issue 35, one sample at a time, frozen here
as the oracle the batched path (featcache/distill/batches.py) is checked against: its bilinear
warp was torch's grid_sample on an affine grid, its area averaging one sample's matrices, its
photometric augmentation drawn and applied image by image. Test code only: featcache itself has
one implementation of each step."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from featcache.data.photometric import Photometric, noise_field
from featcache.data.views import ViewParams, apply_view
from featcache.distill.data import DistillItems
from featcache.distill.resample import _area_weights, normalise
from featcache.student import student_input


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(2.5 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[0]
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def augment(x: torch.Tensor, spec: Photometric, rng: np.random.Generator) -> torch.Tensor:
    def chosen(bound: float) -> bool:
        return bound > 0 and rng.random() < spec.p

    y = x
    if chosen(spec.blur):
        y = _blur(y, float(rng.uniform(0.3, max(0.3, spec.blur))))
    if chosen(spec.contrast):
        mean = y.mean()
        y = (y - mean) * float(rng.uniform(1 - spec.contrast, 1 + spec.contrast)) + mean
    if chosen(spec.brightness):
        y = y + float(rng.uniform(-spec.brightness, spec.brightness))
    y = y.clamp(0, 1)
    if chosen(spec.gamma):
        y = y ** float(math.exp(rng.uniform(-spec.gamma, spec.gamma)))
    if chosen(spec.noise):
        noise = noise_field(int(rng.integers(2**63)), tuple(y.shape), y.device)
        y = (y + float(rng.uniform(0, spec.noise)) * noise).clamp(0, 1)
    return y.contiguous()


def _warp(feature: torch.Tensor, box: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    if tuple(float(v) for v in box) == (0.0, 0.0, 1.0, 1.0):
        return feature, torch.ones(1, *feature.shape[1:])
    y0, x0, y1, x1 = (float(v) for v in box)
    theta = torch.tensor([[[x1 - x0, 0.0, x0 + x1 - 1.0], [0.0, y1 - y0, y0 + y1 - 1.0]]])
    grid = F.affine_grid(theta, [1, 1, *feature.shape[1:]], align_corners=False)
    warped = F.grid_sample(feature[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
    valid = F.grid_sample(torch.ones(1, 1, *feature.shape[1:]), grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)[0]
    return warped, (valid > 0.5).float()


def teacher_target(feature: np.ndarray, norm, box: np.ndarray, grid) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(feature)
    h, w = x.shape[-2:]
    if h == w == 1:
        return normalise(x, norm), torch.ones(1, 1, 1)
    if grid is None or grid[0] * grid[1] >= h * w:
        return _warp(normalise(x, norm), box)
    y0, x0, y1, x1 = (float(v) for v in box)
    wy, cover_y = _area_weights(y0, y1, grid[0], h)
    wx, cover_x = _area_weights(x0, x1, grid[1], w)
    target = (wy @ x) @ wx.T
    valid = (cover_y[:, None] * cover_x[None, :])[None]
    return normalise(target, norm) * (valid > 0), valid


def item(items: DistillItems, k: int) -> dict:
    """Item k (epoch-carrying index) of `items` as the per-sample loader made it."""
    epoch, k, (src_i, index, view) = items.locate(k)
    source = items.sources[src_i]
    sample = source.dataset.load(index)
    first = next(iter(source.entries.values()))
    params = ViewParams.from_array(first.view_params(first.index_of(sample.id))[view])
    image, mask = apply_view(sample.image, sample.mask, params)
    x = student_input(image, items.image_size, items.channels)
    if items.augment is not None:
        x = augment(x, items.augment, np.random.default_rng([items.seed, epoch, k]))
    m = F.interpolate(torch.from_numpy(mask.astype(np.float32))[None, None], size=(items.image_size,) * 2,
                      mode="nearest")[0]
    out = {"image": x, "mask": m}
    for (teacher, level), taps in items.taps.items():
        reader = source.entries[teacher]
        i = reader.index_of(sample.id)
        feature, box = reader.read(i, level, view), reader.frames(i)[view]
        for t in taps:
            target, valid = teacher_target(feature, items.norm[(src_i, teacher, level)], box, t.loss_grid)
            out[f"t:{t.key}"], out[f"v:{t.key}"] = target.half(), valid
    return out
