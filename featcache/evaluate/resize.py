"""The student's two resizes in numpy, for serving without torch (the ONNX Runtime path).

`to_student` is `student.student_input`'s: the image stretched to S x S by an antialiased
bilinear filter (torch's `interpolate(..., mode="bilinear", antialias=True)`, the triangle filter
widened by the scale when shrinking, as PIL does); `upsample` is the predictor's: logits back to
the image's size by plain bilinear interpolation (align_corners=False). Both are separable, so
each is two small weight matrices: out = Wy @ image @ Wx^T. They match torch to ~1e-6.
"""

from __future__ import annotations

import numpy as np

from featcache.errors import DatasetError


def antialias_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of torch's antialiased bilinear resize along one axis."""
    scale = n_in / n_out
    support = scale if scale >= 1.0 else 1.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    weights = np.zeros((n_out, n_in))
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        taps = np.maximum(0.0, 1.0 - np.abs((np.arange(lo, hi) - center + 0.5) * inv))
        total = taps.sum()
        weights[i, lo:hi] = taps / total if total else taps
    return weights


def bilinear_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of torch's bilinear interpolation (align_corners=False), with its
    rounding: a float32 scale, each source coordinate rounded once to float32 (a fused multiply-add)."""
    scale = np.float64(np.float32(n_in) / np.float32(n_out))
    src = np.maximum(((np.arange(n_out) + 0.5) * scale - 0.5).astype(np.float32), np.float32(0.0))
    i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float64)
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), i0), 1.0 - frac)
    np.add.at(weights, (np.arange(n_out), i1), frac)
    return weights


def to_student(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    """float32 (H, W, C) in [0, 1] -> float32 (channels, size, size): grey replicated, RGB averaged
    for a one-channel student (as `student_input`)."""
    x = np.asarray(image, np.float32)
    if x.shape[2] != channels:
        if x.shape[2] == 1:
            x = np.repeat(x, channels, axis=2)
        elif channels == 1:
            x = x.mean(axis=2, keepdims=True)
        else:
            raise DatasetError(f"image has {x.shape[2]} channels; the student takes {channels}")
    wy, wx = antialias_weights(x.shape[0], size), antialias_weights(x.shape[1], size)
    return np.einsum("yh,hwc,xw->cyx", wy, x.astype(np.float64), wx).astype(np.float32)


def upsample(logits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(M, S, S) logits -> (M, H, W) by bilinear interpolation."""
    wy, wx = bilinear_weights(logits.shape[1], shape[0]), bilinear_weights(logits.shape[2], shape[1])
    return np.einsum("yh,mhw,xw->myx", wy, logits.astype(np.float64), wx).astype(np.float32)
