"""Seed statistics for ablation tables: mean ± std over seeds and the step rule.

The step rule compares configuration k with k-1 in the same regime: the difference in mean Dice
counts as larger than the seed-to-seed spread when |Δmean| > pooled std, with
pooled std = sqrt((s_k² + s_{k-1}²) / 2) and s the sample standard deviation (ddof=1) of the
per-seed Dice means. It is a spread check, not a significance test: with 3 seeds no test has power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

RULE = ("a step counts when |Δ mean Dice| > pooled std, pooled std = sqrt((s_k² + s_(k-1)²)/2), "
        "s = sample std (ddof=1) of the per-seed Dice over seeds; with one seed no spread is known")


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


@dataclass(frozen=True)
class Step:
    delta: float  # mean(k) - mean(k-1)
    pooled_std: float
    exceeds: bool | None  # None: spread unknown (fewer than 2 seeds on a side)

    @property
    def verdict(self) -> str:
        if self.exceeds is None:
            return "n/a (1 seed)"
        return "yes" if self.exceeds else "no"


def compare(current: SeedStats, previous: SeedStats) -> Step:
    """The step rule (see RULE) for `current` against `previous`."""
    delta = current.mean - previous.mean
    if current.n < 2 or previous.n < 2:
        return Step(delta, math.nan, None)
    pooled = math.sqrt((current.std ** 2 + previous.std ** 2) / 2)
    return Step(delta, pooled, bool(abs(delta) > pooled))


def effect_sentence(what: str, step: Step) -> str:
    """One computed sentence: does `what` change mean Dice by more than the seed spread?"""
    if step.exceeds is None:
        return (f"{what}: Δ mean Dice {step.delta:+.4f}; one seed only, so the seed spread is "
                "unknown and no conclusion is drawn")
    if not step.exceeds:
        return (f"{what}: Δ mean Dice {step.delta:+.4f} is within the seed spread "
                f"(pooled std {step.pooled_std:.4f}): no measurable effect on this data")
    word = "helps" if step.delta > 0 else "hurts"
    return (f"{what}: Δ mean Dice {step.delta:+.4f} exceeds the seed spread "
            f"(pooled std {step.pooled_std:.4f}): it {word} on this data")
