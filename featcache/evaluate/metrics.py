"""Segmentation metrics on binary masks: pure functions plus a per-image accumulator.

Multi-class label maps (0 = background, 1..K the classes) are scored one class at a time:
`dice_per_class` and `per_class_metrics` turn class k into the binary masks (pred == k, gt == k)
and apply the functions below, so the empty-mask conventions hold per class (a class absent from
both prediction and ground truth of an image scores 1.0, or NaN under ``empty_excluded``).

Every function takes `pred` and `gt` as (H, W) images or (X, Y, Z) volumes (bool or {0, 1} integers)
of the same shape; a volume is scored as one 3D object (3D surfaces, spacing per axis).

Empty masks, stated once and applied everywhere:
  * both empty (nothing to find, nothing found): 1.0 under ``empty_as_one`` (the common convention),
    NaN under ``empty_excluded`` (nnU-Net style; NaN values are left out of means and medians);
  * exactly one empty: the case is a failure, scored with the worst value in both conventions:
    Dice = IoU = 0, precision (empty prediction) = 0, recall (empty ground truth) = 0, and HD95 =
    the image diagonal (in mm with a spacing), the largest distance the image allows, so that means
    stay finite.
HD95 follows medpy.metric.binary.hd95: surfaces are the mask minus its 4-connected erosion, distances
come from Euclidean distance transforms, and the 95th percentile is taken over both directions pooled.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from featcache.errors import ConfigError

EMPTY_AS_ONE = "empty_as_one"
EMPTY_EXCLUDED = "empty_excluded"
CONVENTIONS = (EMPTY_AS_ONE, EMPTY_EXCLUDED)
CONVENTION_TEXT = {
    EMPTY_AS_ONE: "empty prediction vs empty ground truth scores 1.0",
    EMPTY_EXCLUDED: "empty prediction vs empty ground truth is excluded (NaN, nnU-Net style)",
}
METRICS = ("dice", "iou", "precision", "recall", "hd95")

Spacing = tuple[float, ...] | None  # mm per pixel/voxel, one value per axis


def check_convention(empty: str) -> str:
    if empty not in CONVENTIONS:
        raise ConfigError(f"unknown empty-mask convention {empty!r}; use {' or '.join(CONVENTIONS)}")
    return empty


def _binary(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, g = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    if p.shape != g.shape or p.ndim not in (2, 3):
        raise ConfigError(f"prediction {p.shape} and ground truth {g.shape} must be equal (H, W) or "
                          "(X, Y, Z) masks")
    return p, g


def _both_empty(empty: str) -> float:
    return 1.0 if check_convention(empty) == EMPTY_AS_ONE else math.nan


def _counts(p: np.ndarray, g: np.ndarray) -> tuple[int, int, int]:
    """True positives, false positives, false negatives."""
    tp = int(np.count_nonzero(p & g))
    return tp, int(np.count_nonzero(p)) - tp, int(np.count_nonzero(g)) - tp


def dice(pred: np.ndarray, gt: np.ndarray, empty: str = EMPTY_AS_ONE) -> float:
    """2|P∩G| / (|P| + |G|)."""
    p, g = _binary(pred, gt)
    tp, fp, fn = _counts(p, g)
    return _both_empty(empty) if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def iou(pred: np.ndarray, gt: np.ndarray, empty: str = EMPTY_AS_ONE) -> float:
    """|P∩G| / |P∪G|."""
    p, g = _binary(pred, gt)
    tp, fp, fn = _counts(p, g)
    return _both_empty(empty) if tp + fp + fn == 0 else tp / (tp + fp + fn)


def precision(pred: np.ndarray, gt: np.ndarray, empty: str = EMPTY_AS_ONE) -> float:
    """|P∩G| / |P|; 0 when only the prediction is empty."""
    p, g = _binary(pred, gt)
    tp, fp, fn = _counts(p, g)
    if tp + fp + fn == 0:
        return _both_empty(empty)
    return tp / (tp + fp) if tp + fp else 0.0


def recall(pred: np.ndarray, gt: np.ndarray, empty: str = EMPTY_AS_ONE) -> float:
    """|P∩G| / |G|; 0 when only the ground truth is empty."""
    p, g = _binary(pred, gt)
    tp, fp, fn = _counts(p, g)
    if tp + fp + fn == 0:
        return _both_empty(empty)
    return tp / (tp + fn) if tp + fn else 0.0


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask ^ ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1))


def _directed(a: np.ndarray, b: np.ndarray, sampling: tuple[float, ...]) -> np.ndarray:
    """Distances from each surface pixel of a to the nearest surface pixel of b."""
    return ndimage.distance_transform_edt(~_surface(b), sampling=sampling)[_surface(a)]


def hd95(pred: np.ndarray, gt: np.ndarray, spacing: Spacing = None, empty: str = EMPTY_AS_ONE) -> float:
    """95th percentile symmetric surface distance, in mm with a spacing (one value per axis: (sy, sx)
    for images, the voxel size for volumes), else in pixels.

    Both empty: 0.0 under empty_as_one (a perfect empty answer), NaN under empty_excluded.
    One empty: the image diagonal.
    """
    p, g = _binary(pred, gt)
    sampling = (1.0,) * p.ndim if spacing is None else tuple(float(s) for s in spacing)
    if len(sampling) != p.ndim or min(sampling) <= 0:
        raise ConfigError(f"spacing {spacing} must be {p.ndim} positive values in mm, one per axis")
    has_p, has_g = bool(p.any()), bool(g.any())
    if not has_p and not has_g:
        return 0.0 if check_convention(empty) == EMPTY_AS_ONE else math.nan
    if not (has_p and has_g):
        return float(math.hypot(*(n * s for n, s in zip(p.shape, sampling, strict=True))))
    both = np.concatenate([_directed(p, g, sampling), _directed(g, p, sampling)])
    return float(np.percentile(both, 95))


def all_metrics(pred: np.ndarray, gt: np.ndarray, spacing: Spacing = None,
                empty: str = EMPTY_AS_ONE) -> dict[str, float]:
    """{metric name: value} for every name in METRICS."""
    overlap: dict[str, Callable[..., float]] = {"dice": dice, "iou": iou, "precision": precision,
                                                "recall": recall}
    out = {name: fn(pred, gt, empty) for name, fn in overlap.items()}
    out["hd95"] = hd95(pred, gt, spacing, empty)
    return out


def check_label_maps(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Check (H, W) or (X, Y, Z) integer label maps with values 0..num_classes."""
    p, g = np.asarray(pred), np.asarray(gt)
    if p.shape != g.shape or p.ndim not in (2, 3):
        raise ConfigError(f"prediction {p.shape} and ground truth {g.shape} must be equal (H, W) or "
                          "(X, Y, Z) label maps")
    for name, a in (("prediction", p), ("ground truth", g)):
        if a.size and (a.min() < 0 or a.max() > num_classes or not np.all(np.mod(a, 1) == 0)):
            raise ConfigError(f"{name} label map must hold class values 0..{num_classes} "
                              f"(0 = background)")
    return p, g


def dice_per_class(pred: np.ndarray, gt: np.ndarray, num_classes: int,
                   empty: str = EMPTY_AS_ONE) -> np.ndarray:
    """float64 (K,): Dice of class k + 1 at index k, from (H, W) / (X, Y, Z) label maps with values
    0..K. A class in neither map scores 1.0 (NaN under empty_excluded); in one map only, 0.0."""
    p, g = check_label_maps(pred, gt, num_classes)
    return np.array([dice(p == k, g == k, empty) for k in range(1, num_classes + 1)], np.float64)


def per_class_metrics(pred: np.ndarray, gt: np.ndarray, num_classes: int, spacing: Spacing = None,
                      empty: str = EMPTY_AS_ONE) -> list[dict[str, float]]:
    """all_metrics of each class 1..K (index k holds class k + 1), from label maps as above."""
    p, g = check_label_maps(pred, gt, num_classes)
    return [all_metrics(p == k, g == k, spacing, empty) for k in range(1, num_classes + 1)]
