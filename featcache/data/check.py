"""`featcache datasets check`, the library half: decode every sample and summarise what was found.

The dataset is built with skip_bad=True so that EVERY problem is collected (not just the first);
the caller decides whether problems are fatal (the CLI exits 1 unless --skip-bad).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featcache.data.base import SPLITS, Sample, SegmentationDataset
from featcache.data.files import FileProblem
from featcache.data.registry import build_dataset
from featcache.errors import DatasetError


@dataclass
class SplitSummary:
    samples: int = 0
    min_hw: tuple[int, int] | None = None  # smallest height and smallest width (each on its own)
    max_hw: tuple[int, int] | None = None
    foreground: list[float] = field(default_factory=list)  # per-sample foreground fraction
    empty_masks: int = 0
    # Samples per class index: of that class (classification), or showing it (segmentation).
    labels: dict[int, int] = field(default_factory=dict)

    def add(self, height: int, width: int, fg_fraction: float, labels: tuple[int, ...] = ()) -> None:
        self.samples += 1
        for label in labels:
            self.labels[label] = self.labels.get(label, 0) + 1
        lo, hi = self.min_hw or (height, width), self.max_hw or (height, width)
        self.min_hw = (min(lo[0], height), min(lo[1], width))
        self.max_hw = (max(hi[0], height), max(hi[1], width))
        self.foreground.append(fg_fraction)
        self.empty_masks += fg_fraction == 0

    @property
    def mean_foreground(self) -> float | None:
        return float(np.mean(self.foreground)) if self.foreground else None


@dataclass
class CheckReport:
    dataset: str
    modality: str
    channels: int
    splits: dict[str, SplitSummary]  # train, val, test and "all"
    problems: list[dict[str, str]]  # {"path", "reason"}: skipped files and load failures
    notes: list[str]
    task: str = "segmentation"
    classes: tuple[str, ...] = ("foreground",)

    @property
    def ok(self) -> bool:
        return not self.problems


def _build(name: str, root: str | Path | None, options: dict[str, Any]) -> SegmentationDataset:
    try:
        return build_dataset(name, root, **{**options, "skip_bad": True})
    except TypeError as exc:
        # A builder without a skip_bad option (e.g. the embedded demo) has no files to skip.
        if "skip_bad" not in str(exc):
            raise
        return build_dataset(name, root, **options)


def _classes_in(sample: Sample) -> tuple[int, ...]:
    """Class indices a sample has: its label (classification), the mask's classes (segmentation)."""
    if sample.label >= 0:
        return (sample.label,)
    return tuple(int(v) - 1 for v in np.unique(sample.mask) if v > 0)


def check_dataset(name: str, root: str | Path | None, **options: Any) -> CheckReport:
    """Build `name` at `root`, load every sample, and report counts, sizes, foreground, problems."""
    options.pop("skip_bad", None)
    dataset = _build(name, root, options)
    problems = list(getattr(dataset, "skipped", []))
    splits = {split: SplitSummary() for split in (*SPLITS, "all")}
    for index, info in enumerate(dataset.samples):
        try:
            sample = dataset.load(index)
            dataset.validate_extra(index)
        except FileProblem as problem:
            problems.append(problem.record())
            continue
        except DatasetError as exc:
            problems.append({"path": info.id, "reason": str(exc)})
            continue
        h, w = sample.mask.shape
        fg = float(np.count_nonzero(sample.mask)) / sample.mask.size  # any class: label maps too
        labels = _classes_in(sample)
        splits[info.split].add(h, w, fg, labels)
        splits["all"].add(h, w, fg, labels)
    return CheckReport(dataset.name or name, dataset.modality, dataset.channels, splits, problems,
                       list(getattr(dataset, "notes", [])), dataset.task, tuple(dataset.classes))
