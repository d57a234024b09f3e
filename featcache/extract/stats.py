"""Per-level feature statistics, accumulated shard by shard in float64.

Distillation normalises teacher features with them: per-channel standardisation, or PHI-S
(RADIO's finding for SAM-like teachers): subtract the mean, rotate into the covariance eigenbasis,
then by a normalised Hadamard matrix so every dimension has the same variance, and scale by
1/sqrt(mean eigenvalue).

Accumulators are mergeable (sums, not means), so shards extracted by different processes or dask
workers combine into the same statistics as one process computing them all.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import hadamard
from scipy.linalg.blas import dsyrk


class ChannelStats:
    def __init__(self, channels: int) -> None:
        self.n = 0
        self.sum = np.zeros(channels)
        self.outer = np.zeros((channels, channels))  # upper triangle of sum x x^T (result() mirrors it)

    def update(self, features: np.ndarray) -> None:
        """features: (..., C, H, W) -> every spatial position of every sample is one observation.
        A (C, 1, 1) level (a teacher's `global` vector) has one position per sample: its statistics
        are over samples (and views), and a shard's samples go into one product, not one each."""
        c = features.shape[-3]
        if features.shape[-2] * features.shape[-1] == 1:
            planes = [features.reshape(-1, c).T]  # (C, samples): the same sums, one syrk
        else:
            planes = features.reshape(-1, c, features.shape[-2] * features.shape[-1])
        for plane in planes:
            x = plane.astype(np.float64, order="C")  # (C, positions): one contiguous copy
            self.n += x.shape[1]
            self.sum += x.sum(1)
            # the Gram matrix is symmetric: BLAS syrk computes its upper triangle, half a matmul's work
            # (at zero teacher cost this product is the most expensive step of extraction)
            self.outer += dsyrk(1.0, x.T, trans=1)

    def merge(self, other: ChannelStats) -> ChannelStats:
        """Add another accumulator's observations to this one (in place); returns self."""
        self.n += other.n
        self.sum += other.sum
        self.outer += other.outer
        return self

    def result(self) -> dict[str, np.ndarray]:
        mean = self.sum / max(self.n, 1)
        gram = np.triu(self.outer) + np.triu(self.outer, 1).T
        cov = gram / max(self.n, 1) - np.outer(mean, mean)
        cov = (cov + cov.T) / 2
        std = np.sqrt(np.clip(np.diag(cov), 1e-12, None))
        return {"mean": mean, "std": std, "phis": phis_matrix(cov), "count": np.array([self.n])}


def phis_matrix(cov: np.ndarray) -> np.ndarray:
    """The PHI-S whitening matrix W, applied as W @ (x - mean). Falls back to per-channel
    standardisation (diag 1/std) when the channel count is not a power of two, since a Hadamard
    matrix only exists for those sizes here.

    Guarantee (power-of-two C): W C W^T has every diagonal entry equal to 1 (the same variance in
    every dimension) and total variance C, i.e. isotropic in the trace sense, not fully whitened."""
    c = cov.shape[0]
    if c & (c - 1):
        return np.diag(1.0 / np.sqrt(np.clip(np.diag(cov), 1e-12, None)))
    eigvals, eigvecs = np.linalg.eigh(cov)
    h = hadamard(c) / np.sqrt(c)
    scale = 1.0 / np.sqrt(max(float(np.clip(eigvals, 0, None).mean()), 1e-12))
    return scale * (h @ eigvecs.T)
