"""Per-level feature statistics, accumulated shard by shard where the features are.

Distillation normalises teacher features with them: per-channel standardisation, or PHI-S
(RADIO's finding for SAM-like teachers): subtract the mean, rotate into the covariance eigenbasis,
then by a normalised Hadamard matrix so every dimension has the same variance, and scale by
1/sqrt(mean eigenvalue).

One shard's partial sums are computed in torch on the features' device (CUDA beside the teacher,
else the CPU), in float32, in one pass over the data: per (sample, view) plane the channel sums
and sums of squares over every position, and the channel Gram matrix over a seeded subsample of
at least `SUBSAMPLE_POSITIONS` positions (every stride-th row and column from seeded offsets, the
same in every plane; grids with fewer positions use them all). The partials are added exactly
(exactsum.py), so the statistics are the same bytes however shards are split between processes,
runs or a resume.

Tolerance of the subsampled covariance: applied to the covariance of every position, the PHI-S
matrix from the subsample gives each whitened dimension a variance within `PHIS_TOLERANCE` (20%)
of 1, where the full one gives exactly 1, and closer as the entry grows (the subsample grows with
it). Measured: real LiteMedSAM `embedding` (256 channels, 64x64) of one demo slice 0.16 worst,
0.04 mean over dimensions; of three slices 0.13 worst, 0.04 mean; `stage2` 5e-6 (tested on
synthetic correlated fields: tests/extract/test_stats.py::test_subsampled_phis_is_within_its_tolerance).
Means and stds use every position; float32 partials put them within about 1e-4 (relative) of a
float64 computation.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import hadamard

from featcache.extract.exactsum import ExactSum

SUBSAMPLE_POSITIONS = 1024  # per plane, at least; LiteMedSAM's and SAM's 64x64 grids: one in four
SUBSAMPLE_SEED = 0
PHIS_TOLERANCE = 0.20


def subsample_grid(height: int, width: int) -> tuple[int, int, int]:
    """(stride, y offset, x offset) of the positions the Gram matrix uses: every stride-th row and
    column from seeded offsets, the largest stride keeping SUBSAMPLE_POSITIONS positions (a strided
    view: the gather is the copy that lays the channels out anyway). Stride 1: all positions."""
    stride = 1
    while (-(-height // (stride + 1))) * (-(-width // (stride + 1))) >= SUBSAMPLE_POSITIONS:
        stride += 1
    g = torch.Generator().manual_seed(SUBSAMPLE_SEED)
    oy, ox = (int(v) for v in torch.randint(0, stride, (2,), generator=g))
    return stride, oy, ox


def _gram(x: torch.Tensor) -> np.ndarray:
    """x (C, K) float32 -> x x^T (C, C) float32 on the host. CUDA: a float64 matmul rounded to
    float32 (immune to a TF32 setting of the teacher); CPU: a float32 matmul, on one thread (the
    writer threads and finalize_entry set it) so its sums do not depend on a thread count."""
    if x.device.type != "cpu":
        return (x.double() @ x.double().T).float().cpu().numpy()
    return (x @ x.T).numpy()


class ChannelStats:
    """Mergeable per-channel statistics of one level: exact sums of float32 partials."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.n = 0  # positions seen
        self.sum, self.sumsq = ExactSum((channels,)), ExactSum((channels,))
        self.sub_n = 0  # positions in the Gram matrix
        self.sub_sum, self.gram = ExactSum((channels,)), ExactSum((channels, channels))

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        """features: float32 (..., C, H, W) on any device; every position of every plane is one
        observation. Call it once per shard: the float32 partials depend on the grouping."""
        x = torch.as_tensor(features, dtype=torch.float32)
        c, h, w = x.shape[-3:]
        planes = x.reshape(-1, c, h * w)  # (planes, C, positions): a view of contiguous features
        # per-row reductions over the positions, then over planes: each output summed by one thread
        # in a fixed order, so the partial does not depend on the thread count
        sums = planes.sum(-1).sum(0)
        sumsq = torch.linalg.vector_norm(planes, 2, dim=-1).square().sum(0)  # fused: no temporary
        stride, oy, ox = subsample_grid(h, w)
        grid = x.reshape(-1, c, h, w)[:, :, oy::stride, ox::stride]
        flat = grid.permute(1, 0, 2, 3).reshape(c, -1)  # (C, planes * kept positions): one copy
        sub_sum = sums if stride == 1 else flat.sum(-1)
        self.gram.add(_gram(flat))
        self.sum.add(sums.cpu().numpy())
        self.sumsq.add(sumsq.cpu().numpy())
        self.sub_sum.add(sub_sum.cpu().numpy())
        self.n += planes.shape[0] * h * w
        self.sub_n += flat.shape[1]

    def merge(self, other: ChannelStats) -> ChannelStats:
        """Add another accumulator's observations to this one (in place); returns self."""
        self.n += other.n
        self.sub_n += other.sub_n
        for name in ("sum", "sumsq", "sub_sum", "gram"):
            getattr(self, name).merge(getattr(other, name))
        return self

    def result(self) -> dict[str, np.ndarray]:
        """mean and std (C,) over every position, PHI-S (C, C) from the subsampled covariance,
        count (1,): float64, a function of the exact sums alone."""
        n, k = max(self.n, 1), max(self.sub_n, 1)
        mean = self.sum.value() / n
        var = np.clip(self.sumsq.value() / n - mean * mean, 1e-12, None)
        sub_mean = self.sub_sum.value() / k
        cov = self.gram.value() / k - np.outer(sub_mean, sub_mean)
        cov = (cov + cov.T) / 2
        return {"mean": mean, "std": np.sqrt(var), "phis": phis_matrix(cov, var),
                "count": np.array([self.n])}


def phis_matrix(cov: np.ndarray, var: np.ndarray | None = None) -> np.ndarray:
    """The PHI-S whitening matrix W, applied as W @ (x - mean). Falls back to per-channel
    standardisation (diag 1/std, from `var` when given, else the diagonal of cov) when the channel
    count is not a power of two, since a Hadamard matrix only exists for those sizes here.

    Guarantee (power-of-two C): W C W^T has every diagonal entry equal to 1 (the same variance in
    every dimension) and total variance C, i.e. isotropic in the trace sense, not fully whitened."""
    c = cov.shape[0]
    if c & (c - 1):
        v = np.diag(cov) if var is None else var
        return np.diag(1.0 / np.sqrt(np.clip(v, 1e-12, None)))
    eigvals, eigvecs = np.linalg.eigh(cov)
    h = hadamard(c) / np.sqrt(c)
    scale = 1.0 / np.sqrt(max(float(np.clip(eigvals, 0, None).mean()), 1e-12))
    return scale * (h @ eigvecs.T)
