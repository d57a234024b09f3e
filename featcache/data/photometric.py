"""Online photometric augmentation of the student's input: brightness, contrast, gamma, noise, blur.

Only intensities change, never geometry, so the teacher features cached for the image (resampled
onto the student's frame with the stored view's box) stay aligned with it pixel for pixel. The
random draw comes from a generator the caller seeds per (run seed, epoch, item), so a run is
reproducible whatever the number of loader workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Photometric:
    """Bounds of each operation (0 switches it off); each is applied with probability p."""

    p: float = 0.5
    brightness: float = 0.1
    contrast: float = 0.25
    gamma: float = 0.4
    noise: float = 0.03
    blur: float = 1.0


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x (C, H, W) blurred with a separable Gaussian (reflect padding, same size)."""
    radius = max(1, math.ceil(2.5 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    c = x.shape[0]
    y = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(y, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y[0]


def augment(x: torch.Tensor, spec: Photometric, rng: np.random.Generator) -> torch.Tensor:
    """x (C, H, W) in [0, 1] -> the same shape in [0, 1], intensities changed only."""

    def chosen(bound: float) -> bool:
        return bound > 0 and rng.random() < spec.p

    y = x
    if chosen(spec.blur):
        y = _gaussian_blur(y, float(rng.uniform(0.3, max(0.3, spec.blur))))
    if chosen(spec.contrast):
        mean = y.mean()
        y = (y - mean) * float(rng.uniform(1 - spec.contrast, 1 + spec.contrast)) + mean
    if chosen(spec.brightness):
        y = y + float(rng.uniform(-spec.brightness, spec.brightness))
    y = y.clamp(0, 1)
    if chosen(spec.gamma):
        y = y ** float(math.exp(rng.uniform(-spec.gamma, spec.gamma)))
    if chosen(spec.noise):
        noise = torch.from_numpy(rng.standard_normal(y.shape, dtype=np.float32))
        y = (y + float(rng.uniform(0, spec.noise)) * noise).clamp(0, 1)
    return y.contiguous()
