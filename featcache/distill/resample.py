"""Teacher features onto the student's frame: normalised with the statistics stored at extraction,
then resampled from the teacher's frame (where the image lies at `box`, padded or cropped) onto
the student's (the whole image stretched to a square), with a validity map where the teacher
never saw the image.

Batched: a batch of stored maps (B, C, h, w) with a box per sample, on whatever device they are
(the training process runs this on the GPU when there is one, see batches.py). The box only
scales and shifts each axis, so both resamplings are separable: a (rows x h) matrix on one side
and a (w x columns) one on the other, the same for every sample with the same box (every image of
one shape: usually the whole batch), so a batch is two matrix products per distinct box:
- bilinear onto the teacher's own grid, validity 0 or 1: the weights of `grid_sample` (bilinear,
  zero padding, align_corners=False) on an affine grid, written out per axis;
- area averaging straight onto a coarser grid, when the loss is computed on a student stage
  coarser than the teacher (distill.feature_grid "coarser"): each student cell gets the mean of
  the teacher over the region it covers, and its validity is the fraction of that region the
  teacher saw. The batch carries 4x fewer values than warping on the fine grid and pooling.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from featcache.store import EntryReader

Norm = tuple[np.ndarray, np.ndarray] | None


def normaliser(reader: EntryReader, level: str, mode: str) -> Norm:
    """(mean (C,), transform) from the entry's statistics: transform is 1/std (C,) to standardise,
    or the (C, C) PHI-S matrix; None for mode "none". Apply with `normalise`."""
    if mode == "none":
        return None
    stats = reader.stats(level)
    mean = stats["mean"].astype(np.float32)
    if mode == "phis":
        return mean, stats["phis"].astype(np.float32)
    return mean, (1.0 / np.maximum(stats["std"], 1e-6)).astype(np.float32)


def normalise(feature: np.ndarray | torch.Tensor, norm: Norm) -> np.ndarray | torch.Tensor:
    """feature (..., C, H, W) -> the same shape normalised (numpy in, numpy out; torch in, torch
    out, on the feature's device). Standardising is a per-channel scale, not a product with a
    diagonal matrix: that cost a (C, C) x (C, H*W) matmul per sample, ~8 ms for LiteMedSAM's
    embedding."""
    if norm is None:
        return feature
    mean, transform = norm
    if isinstance(feature, torch.Tensor):
        mean = torch.as_tensor(mean).to(feature.device)
        transform = torch.as_tensor(transform).to(feature.device)
    *lead, c, h, w = feature.shape
    centred = feature.reshape(*lead, c, h * w) - mean[:, None]
    if transform.ndim == 1:
        return (centred * transform[:, None]).reshape(*lead, c, h, w)
    return (transform @ centred).reshape(*lead, c, h, w)


@functools.lru_cache(maxsize=1024)
def _area_weights(lo: float, hi: float, n_out: int, n_in: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Along one axis: (n_out, n_in) weights averaging the input cells (n_in of them over [0, 1])
    that output cell k (of n_out over [lo, hi]) overlaps, each row summing to 1 over the part
    inside [0, 1] (0 if none); and (n_out,) the fraction of each output cell inside [0, 1].
    Cached: every slice of a volume, and every image of one shape, has the same box."""
    edges = lo + (hi - lo) * torch.arange(n_out + 1, dtype=torch.float64) / n_out
    cells = torch.arange(n_in + 1, dtype=torch.float64) / n_in
    start, end = edges[:-1, None], edges[1:, None]
    overlap = (torch.minimum(end, cells[None, 1:]) - torch.maximum(start, cells[None, :-1])).clamp_min(0)
    inside = overlap.sum(1)
    weights = overlap / inside.clamp_min(1e-12)[:, None]
    return weights.float(), (inside / (end - start)[:, 0]).float()


@functools.lru_cache(maxsize=1024)
def _bilinear_weights(lo: float, hi: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Along one axis: the (n, n) weights of bilinear sampling with zero padding that put the
    image's extent [lo, hi] of the teacher's grid (n cells over [0, 1]) onto n cells, as
    `grid_sample` (align_corners=False) on `affine_grid` computes them: output cell k samples
    teacher position lo*n + (hi - lo)(k + 1/2) - 1/2 in cell units, a neighbour beyond the grid
    weighs 0. And (n,) each row's sum: grid_sample of ones, whose product over the axes > 0.5
    was the validity."""
    weights = torch.zeros(n, n, dtype=torch.float64)
    for k in range(n):
        position = lo * n + (hi - lo) * (k + 0.5) - 0.5
        left = math.floor(position)
        frac = position - left
        for cell, weight in ((left, 1.0 - frac), (left + 1, frac)):
            if 0 <= cell < n:
                weights[k, cell] += weight
    return weights.float(), weights.sum(1).float()


@functools.lru_cache(maxsize=1024)
def _weights(kind: str, lo: float, hi: float, n_out: int, n_in: int, device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """_area_weights or _bilinear_weights on `device`, moved there once."""
    made = _area_weights(lo, hi, n_out, n_in) if kind == "area" else _bilinear_weights(lo, hi, n_in)
    return made[0].to(device), made[1].to(device)


def _separable(x: torch.Tensor, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """x (n, C, h, w) -> rows (gh, h) . x . columns^T (w, gw): (n, C, gh, gw). Columns first,
    as one (n*C*h, w) x (w, gw) product; then the rows on what is left."""
    n, c, h, w = x.shape
    narrowed = torch.mm(x.reshape(n * c * h, w), columns.T).view(n, c, h, -1)
    return torch.matmul(narrowed.transpose(2, 3), rows.T).transpose(2, 3).contiguous()


def _pool_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """x (n, C, h, w) -> (n, C, rows, w), the sums of each h/rows consecutive rows: with k - 1
    additions (torch's mean over a size-2 axis took 0.40 ms per LiteMedSAM map, one addition
    0.08 ms). The 1/k then joins the column weights."""
    n, c, h, w = x.shape
    blocks = x.view(n, c, rows, h // rows, w)
    total = blocks[:, :, :, 0]
    for j in range(1, h // rows):
        total = total + blocks[:, :, :, j]
    return total


def _area(x: torch.Tensor, box: tuple[float, ...], grid: tuple[int, int]
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows sharing one box: (n, C, h, w) -> (n, C, gh, gw) teacher means over each student cell's
    region, and (1, 1, gh, gw) the fraction of each cell the teacher saw. Features outside the
    image (the teacher's padding) never enter a mean."""
    y0, x0, y1, x1 = box
    h, w = x.shape[-2:]
    wy, cover_y = _weights("area", y0, y1, grid[0], h, x.device)
    wx, cover_x = _weights("area", x0, x1, grid[1], w, x.device)
    if (y0, y1) == (0.0, 1.0) and h % grid[0] == 0:
        # The side of a padded image that fills the teacher's input: a plain pooling of rows,
        # which halves what the columns' product then reads.
        pooled = _pool_rows(x, grid[0])
        n, c = x.shape[:2]
        target = torch.mm(pooled.reshape(-1, w), wx.T / (h // grid[0])).view(n, c, *grid)
    else:
        target = _separable(x, wy, wx)
    return target, (cover_y[:, None] * cover_x[None, :])[None, None]


def _bilinear(x: torch.Tensor, box: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows sharing one box: (n, C, h, w) -> (n, C, h, w) resampled bilinearly so the grid spans
    exactly the image, and a (1, 1, h, w) validity mask (0 or 1)."""
    h, w = x.shape[-2:]
    if box == (0.0, 0.0, 1.0, 1.0):
        return x, torch.ones(1, 1, h, w, device=x.device)
    y0, x0, y1, x1 = box
    wy, seen_y = _weights("bilinear", y0, y1, h, h, x.device)
    wx, seen_x = _weights("bilinear", x0, x1, w, w, x.device)
    return _separable(x, wy, wx), ((seen_y[:, None] * seen_x[None, :]) > 0.5).float()[None, None]


def _groups(boxes: torch.Tensor) -> list[tuple[tuple[float, ...], torch.Tensor]]:
    """(box, row indices) for each distinct box of a batch (B, 4), in first-seen order."""
    found: dict[tuple[float, ...], list[int]] = {}
    for i, box in enumerate(boxes.tolist()):
        found.setdefault(tuple(float(v) for v in box), []).append(i)
    return [(box, torch.tensor(rows)) for box, rows in found.items()]


def target_grid(teacher_grid: tuple[int, int], grid: tuple[int, int] | None) -> tuple[int, int]:
    """The grid `teacher_targets` puts a teacher level of `teacher_grid` on for a loss `grid`:
    `grid` when it is coarser, else the teacher's own; (1, 1) for an image-level vector."""
    h, w = teacher_grid
    if (h == w == 1) or grid is None or grid[0] * grid[1] >= h * w:
        return (h, w)
    return (int(grid[0]), int(grid[1]))


def teacher_targets(features: torch.Tensor, norm: Norm, boxes: torch.Tensor | np.ndarray,
                    grid: tuple[int, int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stored teacher maps (B, C, h, w) float32 of one teacher level and dataset, and each one's box
    (B, 4): y0, x0, y1, x1 of the image on the teacher grid -> (targets, validity (B, 1, ., .)) on
    the student's frame, on the features' device: on `grid` by area averaging when it is coarser
    than the teacher's, else bilinearly on the teacher's."""
    b, c, h, w = features.shape
    if h == w == 1:
        # An image-level vector (a teacher's `global` level): it describes the whole image, so
        # it is not resampled by the box; warping its one cell would blend it with the padding.
        return normalise(features, norm), torch.ones(b, 1, 1, 1, device=features.device)
    out_grid = target_grid((h, w), grid)
    bilinear = out_grid == (h, w)
    groups = _groups(torch.as_tensor(boxes))
    parts = [_resample(features if len(groups) == 1 else features.index_select(0, rows.to(features.device)),
                       norm, box, out_grid, bilinear) for box, rows in groups]
    if len(groups) == 1:
        return parts[0][0], parts[0][1].expand(b, -1, -1, -1).contiguous()
    targets, valid = features.new_empty(b, c, *out_grid), features.new_empty(b, 1, *out_grid)
    for (_, rows), (target, ok) in zip(groups, parts, strict=True):
        rows = rows.to(features.device)
        targets[rows] = target
        valid[rows] = ok.expand(len(rows), -1, -1, -1)
    return targets, valid


def _resample(x: torch.Tensor, norm: Norm, box: tuple[float, ...], grid: tuple[int, int],
              bilinear: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """teacher_targets for rows that share one box; validity (1, 1, gh, gw)."""
    if bilinear:
        # Normalised before the warp: the padding the warp brings in is then 0 in normalised
        # units, as a cell the teacher never saw should be.
        return _bilinear(normalise(x, norm), box)
    # Normalising is affine per channel (or linear for PHI-S) and each row of weights sums to 1,
    # so it commutes with the averaging and runs on 4x fewer values after it.
    target, ok = _area(x, box, grid)
    return normalise(target, norm) * (ok > 0), ok


def area_pool(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """x (B, C, H, W) -> (B, C, gh, gw): each output cell the exact mean of the input over the
    region it covers (fractional cells weighted by their overlap), for any ratio of the grids.
    Used where a student stage is finer than the teacher grid it is matched on."""
    wy, _ = _area_weights(0.0, 1.0, grid[0], x.shape[2])
    wx, _ = _area_weights(0.0, 1.0, grid[1], x.shape[3])
    wy, wx = wy.to(x.device, x.dtype), wx.to(x.device, x.dtype)
    return torch.matmul(torch.matmul(wy, x), wx.T)
