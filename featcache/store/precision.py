"""Precision modes: how float32 teacher features become stored numbers, and back.

fp32        float32 as is (lossless).
fp16        float16 (default); values beyond +-65504 are refused.
fpXX-brN    float16/float32 keeping N mantissa bits (round to nearest even); the rest are zero,
            so the compressor shrinks them. Stored as plain float16/float32: any reader decodes it.
int8        uint8 per (sample, view, channel): x ~= q * scale + offset, with scale and offset
            float32 arrays beside the level (levels/<name>__scale, levels/<name>__offset).
            Per sample, not per shard or entry, so shards written independently agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from featcache.errors import StoreError

_MANTISSA = {"float16": 10, "float32": 23}
_BR = re.compile(r"^fp(16|32)-br(\d+)$")
FP16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class Precision:
    name: str
    dtype: str  # dtype of the stored level array
    keepbits: int | None = None  # mantissa bits kept (bit-rounding modes)
    quantized: bool = False  # int8: uint8 + per-channel scale/offset

    @property
    def limit(self) -> float:
        """Largest magnitude the stored dtype holds."""
        return FP16_MAX if self.dtype == "float16" else float("inf")


def parse_precision(name: str) -> Precision:
    if name == "fp32":
        return Precision(name, "float32")
    if name == "fp16":
        return Precision(name, "float16")
    if name == "int8":
        return Precision(name, "uint8", quantized=True)
    match = _BR.match(name)
    if match:
        dtype = f"float{match.group(1)}"
        keep = int(match.group(2))
        if not 1 <= keep <= _MANTISSA[dtype]:
            raise StoreError(f"precision {name}: keep 1..{_MANTISSA[dtype]} mantissa bits for {dtype}")
        return Precision(name, dtype, keepbits=keep)
    raise StoreError(f"unknown precision {name!r}; use fp32, fp16, int8 or fp16-brN / fp32-brN "
                     "(N mantissa bits kept, e.g. fp16-br7)")


# Encoding (float32 -> stored) is in encoding.py, in torch, on the features' device.

# torch runs an element-wise kernel on the calling thread when it has fewer elements than this
# (at::internal::GRAIN_SIZE). Above it torch fans out to its OpenMP pool, and on a busy machine
# (other processes, the reader's own threads) a 1M-element conversion then took 8 ms instead of
# 0.07 ms while the pool waited for a descheduled thread. Blocks below it never fan out.
_BLOCK = 32767


def _to_float32(stored: np.ndarray, out: np.ndarray) -> None:
    """out[...] = stored (float16 or uint8) as float32, converted by torch: 20-40x faster than
    numpy's astype for float16 (numpy converts element by element). Both are exact."""
    import torch  # here, not at module level: `featcache ls` and plain store users need no torch

    if not stored.flags.writeable:  # torch.from_numpy warns on read-only arrays
        stored = stored.copy()
    src = torch.from_numpy(np.ascontiguousarray(stored).reshape(-1))
    dst = torch.from_numpy(out.reshape(-1))  # a view: out is C-contiguous
    for d, s in zip(dst.split(_BLOCK), src.split(_BLOCK), strict=True):
        d.copy_(s)


def decode(stored: np.ndarray, scale: np.ndarray | None, offset: np.ndarray | None,
           out: np.ndarray | None = None) -> np.ndarray:
    """Inverse of encode; scale/offset have the shape of `stored` minus its last two axes.
    float32 result, bitwise equal to numpy's `stored.astype(float32) * scale + offset`; written into
    `out` (C-contiguous float32 of stored's shape) when given, else a new array (or `stored` itself
    when it is float32 already)."""
    if out is None:
        if stored.dtype == np.float32:
            return stored
        out = np.empty(stored.shape, np.float32)
    if out.dtype != np.float32 or out.shape != stored.shape or not out.flags.c_contiguous:
        raise ValueError(f"decode: out must be C-contiguous float32 {stored.shape}")
    if stored.dtype == np.float32:
        out[...] = stored
        return out
    if not stored.dtype.isnative:  # torch has no byte-swapped dtypes
        stored = stored.astype(stored.dtype.newbyteorder("="))
    _to_float32(stored, out)
    if scale is not None:  # numpy's float32 multiply, then add: the same two roundings as encode's check
        out *= np.asarray(scale, np.float32)[..., None, None]
        out += np.asarray(offset, np.float32)[..., None, None]
    return out


def summarize(rows: np.ndarray) -> dict[str, float]:
    """Merge per-shard error reports (k, 4): [max |err|, max |x|, sum |err|, sum |x|] (FORMAT.md,
    encoding.py) into relative errors."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    max_mag, sum_mag = rows[:, 1].max(initial=0.0), rows[:, 3].sum()
    return {"max_rel_error": float(rows[:, 0].max(initial=0.0) / max_mag) if max_mag else 0.0,
            "mean_rel_error": float(rows[:, 2].sum() / sum_mag) if sum_mag else 0.0}
