"""Collects per-image metrics during evaluation and aggregates them per dataset and split.

Two Dice figures are kept because papers use both: the mean of per-image Dice (each image counts
once) and the pooled (micro) Dice over all pixels of a group, 2·ΣTP / (Σ|P| + Σ|G|), which is what
the MultiMedDistill code reports; large masks dominate the pooled figure.

Multi-class label maps (`add_label_map`) add one result per class, named by the dataset's
`classes`, and one named MEAN_CLASS whose metrics are the mean over the classes (NaN classes left
out) and whose pixel counts are summed over them; groups are then (dataset, split, class). Binary
results have class "" and read and write exactly as before classes existed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from featcache.evaluate.metrics import (
    EMPTY_AS_ONE,
    METRICS,
    Spacing,
    all_metrics,
    check_convention,
    check_label_maps,
)

POOLED_LABEL = "pooled Dice (the MultiMedDistill code's convention)"
ALL_DATASETS = "all"
MEAN_CLASS = "mean"  # the per-image mean over the classes of a label map
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
    cls: str = ""  # "" for binary masks; a class name or MEAN_CLASS for label maps

    @property
    def whole_image(self) -> bool:
        """Whether it scores the whole image (binary, or the mean over classes), not one class."""
        return self.cls in ("", MEAN_CLASS)


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
            spacing: Spacing = None, cls: str = "") -> dict[str, float]:
        """Score one (H, W) image or (X, Y, Z) binary volume against its ground truth; returns its
        metrics. `cls` names the class the masks stand for ("" for a binary dataset)."""
        values = all_metrics(pred, gt, spacing, self.empty)
        p, g = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
        self.results.append(ImageResult(
            id=sample_id, dataset=dataset, split=split, metrics=values,
            hd95_unit="px" if spacing is None else "mm", tp=int(np.count_nonzero(p & g)),
            pred_pixels=int(np.count_nonzero(p)), gt_pixels=int(np.count_nonzero(g)), cls=cls))
        return values

    def add_label_map(self, sample_id: str, dataset: str, split: str, pred: np.ndarray,
                      gt: np.ndarray, classes: tuple[str, ...] | list[str],
                      spacing: Spacing = None) -> dict[str, float]:
        """Score (H, W) / (X, Y, Z) label maps with values 0..K (K = len(classes), 0 = background):
        one result per class and their mean (MEAN_CLASS), whose metrics it returns."""
        check_label_maps(pred, gt, len(classes))
        per_class = [self.add(sample_id, dataset, split, np.asarray(pred) == k, np.asarray(gt) == k,
                              spacing, name) for k, name in enumerate(classes, start=1)]
        mean = {m: _nanmean([v[m] for v in per_class]) for m in METRICS}
        added = self.results[-len(classes):]
        self.results.append(ImageResult(
            id=sample_id, dataset=dataset, split=split, metrics=mean, hd95_unit=added[0].hd95_unit,
            tp=sum(r.tp for r in added), pred_pixels=sum(r.pred_pixels for r in added),
            gt_pixels=sum(r.gt_pixels for r in added), cls=MEAN_CLASS))
        return mean

    @property
    def has_classes(self) -> bool:
        """Whether any result is one class of a label map (then rows carry a "class" column)."""
        return any(r.cls for r in self.results)

    def per_image_rows(self) -> list[dict]:
        """One flat dict per image (per image and class for label maps): id, dataset, split,
        [class,] every metric, hd95_unit, pixel counts."""
        classes = self.has_classes
        return [{"id": r.id, "dataset": r.dataset, "split": r.split, **({"class": r.cls} if classes else {}),
                 **r.metrics, "hd95_unit": r.hd95_unit, "pred_pixels": r.pred_pixels,
                 "gt_pixels": r.gt_pixels} for r in self.results]

    def groups(self) -> list[tuple[str, str, str]]:
        """(dataset, split, class) triples in display order (a dataset's whole-image row first,
        then its classes in the order met); ("all", split, "") added when datasets differ."""
        triples = {(r.dataset, r.split, r.cls) for r in self.results}
        if len({d for d, _, _ in triples}) > 1:
            triples |= {(ALL_DATASETS, s, "") for _, s, _ in triples}
        first = {c: i for i, c in reversed(list(enumerate(r.cls for r in self.results)))}

        def order(t: tuple[str, str, str]) -> tuple:
            rank = -1 if t[2] in ("", MEAN_CLASS) else first[t[2]]
            return (t[0] == ALL_DATASETS, t[0], _SPLIT_ORDER.get(t[1], 9), t[1], rank)

        return sorted(triples, key=order)

    def _members(self, dataset: str, split: str, cls: str) -> list[ImageResult]:
        if dataset == ALL_DATASETS:  # every image once: binary results and label-map means
            return [r for r in self.results if r.split == split and r.whole_image]
        return [r for r in self.results if r.split == split and r.dataset == dataset and r.cls == cls]

    def summary_rows(self) -> list[dict]:
        """Per group: n, then for each metric mean, std (ddof=0), median and n_<metric> (values that
        were not NaN), the hd95 unit, and pooled_dice; "class" for the groups of label maps."""
        rows = []
        for dataset, split, cls in self.groups():
            members = self._members(dataset, split, cls)
            rows.append({"dataset": dataset, "split": split, **({"class": cls} if cls else {}),
                         "n": len(members), **_aggregate(members), "pooled_dice": self._pooled(members)})
        return rows

    def _pooled(self, members: list[ImageResult]) -> float:
        denom = sum(r.pred_pixels + r.gt_pixels for r in members)
        if denom == 0:
            return 1.0 if self.empty == EMPTY_AS_ONE else math.nan
        return 2 * sum(r.tp for r in members) / denom


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan


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
