"""Overlay PNGs: the image in grey or colour with the prediction contour in orange and the ground
truth contour in sky blue (Okabe-Ito colours, distinguishable with common colour blindness)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

PRED_RGB = (230, 159, 0)  # orange
GT_RGB = (86, 180, 233)  # sky blue


def contour(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """(H, W) mask -> (H, W) bool: its inner boundary, `width` pixels thick."""
    m = np.asarray(mask).astype(bool)
    return m & ~ndimage.binary_erosion(m, iterations=width, border_value=0)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """float (H, W) or (H, W, 1|3) in [0, 1] -> uint8 (H, W, 3)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return (np.clip(img[:, :, :3], 0, 1) * 255 + 0.5).astype(np.uint8)


def overlay_rgb(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None) -> np.ndarray:
    """uint8 (H, W, 3): the image with contours; the width grows with the image so it stays visible."""
    rgb = to_rgb8(image)
    width = max(1, round(min(rgb.shape[:2]) / 256))
    if gt is not None:
        rgb[contour(gt, width)] = GT_RGB
    rgb[contour(pred, width)] = PRED_RGB  # drawn last: where the two coincide the prediction shows
    return rgb


def overlay_png(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None, path: Path) -> Path:
    """Write the overlay of `pred` (and `gt` when given) on `image` to `path` (same H, W)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay_rgb(image, pred, gt)).save(path)
    return path
