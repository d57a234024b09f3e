"""One shard level's commit work in torch, on the device the features are on: the range check,
the encoding into the stored dtype, the decoded values a reader will get back and the error report.

On a GPU box the features never reach the host as float32: they are checked and encoded beside the
teacher and only the stored bytes (half of float32 for fp16) are copied over. On the CPU the same
code is one pass of torch kernels per step (numpy needed temporaries and float64 sums: 44 ms per
LiteMedSAM image for the check and report, docs/measurements.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from featcache.errors import StoreError
from featcache.store.precision import _MANTISSA, Precision

_TORCH = {"float16": torch.float16, "float32": torch.float32, "uint8": torch.uint8}
_BITS = {"float16": (torch.int16, 0xFFFF), "float32": (torch.int32, 0xFFFFFFFF)}


@dataclass(frozen=True)
class EncodedLevel:
    """stored (n, V, C, H, W) in the stored dtype and scale/offset (n, V, C) or None, on the host;
    values: float32 decode(stored) on the features' device; report (4,) float64:
    [max |err|, max |x|, sum |err|, sum |x|], mergeable across shards (FORMAT.md)."""

    stored: np.ndarray
    scale: np.ndarray | None
    offset: np.ndarray | None
    report: np.ndarray
    values: torch.Tensor


def encode_level(x: torch.Tensor, precision: Precision, level: str, ids: tuple[str, ...], *,
                 consume: bool = False) -> EncodedLevel:
    """float32 x (n, V, C, H, W) -> EncodedLevel; a value the stored dtype cannot hold is one
    StoreError naming the sample (ids[i] is sample i of x) and the level; nothing is returned.
    `consume`: x's memory may be reused for the decoded values (no allocation: on the CPU a fresh
    buffer's page faults cost more than the arithmetic)."""
    x = x.to(torch.float32)
    lo, hi = (float(v) for v in torch.aminmax(x))  # NaN and inf show in them
    _check(x, lo, hi, precision.limit, level, ids)
    stored, scale, offset = encode_tensor(x, precision)
    if stored.dtype.is_floating_point and precision.keepbits is not None:
        _check(stored, *(float(v) for v in torch.aminmax(stored)), np.inf, level, ids)  # bit-rounding
    mag_sum = _l1(x)
    if stored is x:  # fp32: lossless
        values, err_max, err_sum = x, 0.0, 0.0
    elif scale is None:  # float stored: x - decoded in place, then the decoded values over it
        values = x if consume else x.clone()
        values.sub_(stored)  # float32 arithmetic on the promoted stored values: exactly x - decoded
        err_max = max(abs(float(v)) for v in torch.aminmax(values))
        err_sum = _l1(values)
        values.copy_(stored)
    else:
        values = decode_tensor(stored, scale, offset)
        err = values - x
        err_max, err_sum = max(abs(float(v)) for v in torch.aminmax(err)), _l1(err)
    report = np.array([err_max, max(abs(lo), abs(hi)), err_sum, mag_sum], np.float64)
    host = (t.cpu().numpy() if t is not None else None for t in (stored, scale, offset))
    return EncodedLevel(*host, report, values)


def _l1(x: torch.Tensor) -> float:
    """sum |x| in float32, reduced row by row (a dim reduction: 2x faster than a full one here)."""
    return float(torch.linalg.vector_norm(x.reshape(-1, x.shape[-2] * x.shape[-1]), 1, dim=-1).sum())


def _check(x: torch.Tensor, lo: float, hi: float, limit: float, level: str, ids: tuple[str, ...]) -> None:
    if np.isfinite(lo) and np.isfinite(hi) and -limit <= lo and hi <= limit:
        return
    finite = torch.isfinite(x)
    bad = ~finite | (x.abs() > limit)
    sample = ids[int(bad.flatten(1).any(1).nonzero()[0, 0])]
    over = bool(finite.all())
    what = f"values beyond float16 range ({limit:g})" if over else "inf/NaN"
    hint = "; use precision fp32" if over else ""
    raise StoreError(f"sample {sample}, level {level}: teacher produced {what}{hint}",
                     fields=("precision",) if over else ())


def encode_tensor(x: torch.Tensor, precision: Precision) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                   torch.Tensor | None]:
    """float32 (n, V, C, H, W) -> (stored, scale (n, V, C) or None, offset or None), on x's device.
    Bitwise what numpy computes (round to nearest even everywhere; int8: numpy's two roundings)."""
    if precision.quantized:
        lo, hi = x.amin(dim=(3, 4)), x.amax(dim=(3, 4))
        scale = (hi - lo) / 255.0
        scale[scale == 0] = 1.0  # constant channel: q = 0 decodes exactly to offset
        q = torch.round((x - lo[..., None, None]) / scale[..., None, None])
        return q.clamp_(0, 255).to(torch.uint8), scale, lo
    stored = x.to(_TORCH[precision.dtype])
    if precision.keepbits is not None:
        stored = _bitround(stored, precision.dtype, precision.keepbits)
    return stored, None, None


def _bitround(values: torch.Tensor, dtype: str, keepbits: int) -> torch.Tensor:
    """Round to `keepbits` mantissa bits (nearest, ties to even) on the raw bits, computed in a
    wider signed integer so the unsigned arithmetic of the bit pattern never overflows."""
    drop = _MANTISSA[dtype] - keepbits
    if drop <= 0:
        return values
    same, mask = _BITS[dtype]
    bits = values.view(same).to(torch.int64) & mask
    bits = bits + ((bits >> drop) & 1) + ((1 << (drop - 1)) - 1)
    bits = bits & (mask & ~((1 << drop) - 1))
    wrapped = torch.where(bits > mask // 2, bits - (mask + 1), bits)  # back to the signed range
    return wrapped.to(same).view(values.dtype)


def decode_tensor(stored: torch.Tensor, scale: torch.Tensor | None,
                  offset: torch.Tensor | None) -> torch.Tensor:
    """Inverse of encode_tensor, float32, bitwise equal to precision.decode (the reader's);
    `stored` itself when it is float32."""
    if stored.dtype == torch.float32:
        return stored
    out = stored.to(torch.float32)
    if scale is not None:  # two roundings, multiply then add, as the reader's numpy decode
        out.mul_(scale[..., None, None]).add_(offset[..., None, None])
    return out
