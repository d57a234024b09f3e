"""Collects per-image metrics during evaluation and aggregates them per dataset and split.

Two Dice figures are kept because papers use both: the mean of per-image Dice (each image counts
once) and the pooled (micro) Dice over all pixels of a group, 2·ΣTP / (Σ|P| + Σ|G|), which is what
the MultiMedDistill code reports; large masks dominate the pooled figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from featcache.evaluate.metrics import EMPTY_AS_ONE, METRICS, Spacing, all_metrics, check_convention

POOLED_LABEL = "pooled Dice (the MultiMedDistill code's convention)"
ALL_DATASETS = "all"
_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


@dataclass
class ImageResult:
    id: str
    dataset: str
    split: str
    metrics: dict[str, float]
    hd95_unit: str  # "mm" with a spacing, else "px"
    tp: int
    pred_pixels: int
    gt_pixels: int


@dataclass
class MetricAccumulator:
    """Call `add` once per image; read `per_image_rows()` and `summary_rows()` at the end."""

    empty: str = EMPTY_AS_ONE
    results: list[ImageResult] = field(default_factory=list)

    def __post_init__(self) -> None:
        check_convention(self.empty)

    def __len__(self) -> int:
        return len(self.results)

    def add(self, sample_id: str, dataset: str, split: str, pred: np.ndarray, gt: np.ndarray,
            spacing: Spacing = None) -> dict[str, float]:
        """Score one (H, W) image or (X, Y, Z) volume against its ground truth; returns its metrics."""
        values = all_metrics(pred, gt, spacing, self.empty)
        p, g = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
        self.results.append(ImageResult(
            id=sample_id, dataset=dataset, split=split, metrics=values,
            hd95_unit="px" if spacing is None else "mm", tp=int(np.count_nonzero(p & g)),
            pred_pixels=int(np.count_nonzero(p)), gt_pixels=int(np.count_nonzero(g))))
        return values

    def per_image_rows(self) -> list[dict]:
        """One flat dict per image: id, dataset, split, every metric, hd95_unit, pixel counts."""
        return [{"id": r.id, "dataset": r.dataset, "split": r.split, **r.metrics, "hd95_unit": r.hd95_unit,
                 "pred_pixels": r.pred_pixels, "gt_pixels": r.gt_pixels} for r in self.results]

    def groups(self) -> list[tuple[str, str]]:
        """(dataset, split) pairs in display order; ("all", split) added when datasets differ."""
        pairs = {(r.dataset, r.split) for r in self.results}
        if len({d for d, _ in pairs}) > 1:
            pairs |= {(ALL_DATASETS, s) for _, s in pairs}

        def order(pair: tuple[str, str]) -> tuple:
            return (pair[0] == ALL_DATASETS, pair[0], _SPLIT_ORDER.get(pair[1], 9), pair[1])

        return sorted(pairs, key=order)

    def summary_rows(self) -> list[dict]:
        """Per group: n, then for each metric mean, std (ddof=0), median and n_<metric> (values that
        were not NaN), the hd95 unit, and pooled_dice."""
        rows = []
        for dataset, split in self.groups():
            members = [r for r in self.results if r.split == split
                       and (dataset == ALL_DATASETS or r.dataset == dataset)]
            rows.append({"dataset": dataset, "split": split, "n": len(members),
                         **_aggregate(members), "pooled_dice": self._pooled(members)})
        return rows

    def _pooled(self, members: list[ImageResult]) -> float:
        denom = sum(r.pred_pixels + r.gt_pixels for r in members)
        if denom == 0:
            return 1.0 if self.empty == EMPTY_AS_ONE else math.nan
        return 2 * sum(r.tp for r in members) / denom


def _aggregate(members: list[ImageResult]) -> dict:
    out: dict = {}
    for name in METRICS:
        values = np.array([r.metrics[name] for r in members], dtype=np.float64)
        values = values[~np.isnan(values)]
        out[f"n_{name}"] = int(values.size)
        for stat, fn in (("mean", np.mean), ("std", np.std), ("median", np.median)):
            out[f"{name}_{stat}"] = float(fn(values)) if values.size else math.nan
    units = {r.hd95_unit for r in members}
    out["hd95_unit"] = units.pop() if len(units) == 1 else "mixed"
    return out
