"""Seed statistics for ablation tables: mean ± std over seeds, and paired differences.

Two arms are compared on the same seeds (same split, same initialisation of what they
share, same number of steps): the per-seed difference in mean Dice removes the seed-to-seed
variation both arms share, and its mean gets a 95% Student-t confidence interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SeedStats:
    n: int
    mean: float
    std: float  # sample std (ddof=1); NaN with fewer than 2 values


def seed_stats(values: list[float]) -> SeedStats:
    """Mean and sample std of finite values (one per seed)."""
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return SeedStats(0, math.nan, math.nan)
    std = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
    return SeedStats(int(arr.size), float(arr.mean()), std)


PAIRED_RULE = ("Δ: mean over seeds of the paired difference in per-image mean Dice (same seed, same "
               "split, same steps for both arms), with its 95% confidence interval "
               "(Student t, n-1 degrees of freedom); an effect is established when the interval "
               "excludes zero")


@dataclass(frozen=True)
class Paired:
    n: int
    mean: float
    low: float  # 95% confidence interval; NaN with fewer than 2 pairs
    high: float

    @property
    def verdict(self) -> str:
        if self.n < 2 or math.isnan(self.low):
            return "n/a"
        if self.low > 0:
            return "better"
        return "worse" if self.high < 0 else "not established"

    def text(self, digits: int = 3) -> str:
        if self.n == 0:
            return "–"
        if math.isnan(self.low):
            return f"{self.mean:+.{digits}f}"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Paired:
    """a - b over the seeds both have (seed -> value), with a 95% t-interval of the mean."""
    from scipy import stats as st

    seeds = sorted(k for k in a.keys() & b.keys() if math.isfinite(a[k]) and math.isfinite(b[k]))
    diffs = np.asarray([a[k] - b[k] for k in seeds], dtype=np.float64)
    if diffs.size == 0:
        return Paired(0, math.nan, math.nan, math.nan)
    mean = float(diffs.mean())
    if diffs.size < 2:
        return Paired(1, mean, math.nan, math.nan)
    half = float(st.t.ppf(0.975, diffs.size - 1) * diffs.std(ddof=1) / math.sqrt(diffs.size))
    return Paired(int(diffs.size), mean, mean - half, mean + half)
