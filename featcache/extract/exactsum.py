"""An exact, order-independent sum of float32 arrays: the same bytes however it is split up.

Statistics are accumulated shard by shard in float32 (where the features are), then the per-shard
partials are added here. A float sum depends on the order of its terms, and the order differs
between an entry extracted in one go, one resumed after `kill -9` (old shards are read back at the
end) and one filled by several processes; an exact sum does not. Every float32 value v is an
integer multiple of 2**-149, so v * 2**149 is an integer below 2**277: it is kept as 9 limbs of
32 bits in int64, to which up to 2**31 partials can be added without a carry. `value()` first
normalises the carries, which makes the limbs a canonical form of the exact total, then converts
it to float64: a function of the total alone.
"""

from __future__ import annotations

import numpy as np

_LIMBS = 9  # 9 * 32 = 288 bits >= 277
_SHIFT = 149  # 2**-149: the smallest float32 subnormal
_BASE = float(2**32)


class ExactSum:
    """The exact sum of float32 arrays of one shape; add() order never changes value()."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)
        self.limbs = np.zeros((_LIMBS, *self.shape), np.int64)

    def add(self, values: np.ndarray) -> None:
        """Add a float32 array of `shape` (other dtypes are rounded to float32 first)."""
        v = np.asarray(values, np.float32).astype(np.float64)  # exact: float32 fits float64
        if v.shape != self.shape:
            raise ValueError(f"ExactSum of shape {self.shape} given {v.shape}")
        if not np.isfinite(v).all():
            raise ValueError("ExactSum: inf/NaN cannot be summed exactly")
        a = np.abs(v)
        nonzero = a[a > 0]
        if not nonzero.size:
            return
        sign = np.sign(v).astype(np.int64)
        # only the limbs these magnitudes reach: a float32's 24 significant bits span two limbs
        low = int(np.frexp(nonzero.min())[1]) - 24 + _SHIFT
        high = int(np.frexp(nonzero.max())[1]) + _SHIFT
        for j in range(max(0, low // 32), min(_LIMBS, high // 32 + 1)):
            # limb j: bits [32j, 32j + 32) of |v| * 2**149, exact in float64
            t = np.floor(np.ldexp(a, _SHIFT - 32 * j))
            self.limbs[j] += sign * np.fmod(t, _BASE).astype(np.int64)

    def merge(self, other: ExactSum) -> ExactSum:
        """Add another sum's terms to this one (in place); returns self."""
        self.limbs += other.limbs
        return self

    def value(self) -> np.ndarray:
        """float64 of the exact total (within an ulp), identical for identical totals."""
        limbs = self.limbs.copy()
        for j in range(_LIMBS - 1):  # carries up: limbs 0..7 in [0, 2**32), the top one signed
            carry = limbs[j] >> 32  # arithmetic shift: floor division, also for negatives
            limbs[j] -= carry << 32
            limbs[j + 1] += carry
        total = np.zeros(self.shape, np.float64)
        for j in reversed(range(_LIMBS)):  # high to low: a fixed order over a canonical form
            total += np.ldexp(limbs[j].astype(np.float64), 32 * j - _SHIFT)
        return total
