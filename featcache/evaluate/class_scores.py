"""Collects per-image class probabilities during evaluation and scores them per dataset and split.

The counterpart of `MetricAccumulator` for classification datasets: `add` one image's true class
and (K,) probabilities; `summary_rows` gives, per (dataset, split), the metrics of
classification.py (kappa only for graded datasets) and the (K, K) confusion matrix; and
`per_image_rows` one row per image with its true and predicted class and a `p_<class>` column per
class (empty for the classes of other datasets).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from featcache.errors import ConfigError
from featcache.evaluate.classification import classification_metrics, confusion_matrix

_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class ClassSpec:
    classes: tuple[str, ...]  # label k is classes[k]
    graded: bool = False  # ordered grades: quadratic weighted kappa is reported


@dataclass
class ClassResult:
    id: str
    dataset: str
    split: str
    label: int  # the true class index
    probs: np.ndarray  # float64 (K,)

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probs))


@dataclass
class ClassificationScores:
    """`declare` each dataset once, then `add` one image at a time."""

    datasets: dict[str, ClassSpec] = field(default_factory=dict)
    results: list[ClassResult] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.results)

    def declare(self, dataset: str, classes: tuple[str, ...] | list[str], graded: bool = False) -> None:
        self.datasets[dataset] = ClassSpec(tuple(classes), graded)

    def add(self, sample_id: str, dataset: str, split: str, label: int, probs: np.ndarray) -> int:
        """Record one image: its true class index and (K,) probabilities; returns the prediction."""
        spec = self.datasets.get(dataset)
        if spec is None:
            raise ConfigError(f"dataset {dataset}: declare its classes before adding results")
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if p.size != len(spec.classes):
            raise ConfigError(f"dataset {dataset}, sample {sample_id}: {p.size} probabilities for "
                              f"{len(spec.classes)} classes {list(spec.classes)}")
        if not 0 <= int(label) < len(spec.classes):
            raise ConfigError(f"dataset {dataset}, sample {sample_id}: label {label} is not a class "
                              f"index 0..{len(spec.classes) - 1}")
        self.results.append(ClassResult(sample_id, dataset, split, int(label), p))
        return self.results[-1].predicted

    def groups(self) -> list[tuple[str, str]]:
        pairs = {(r.dataset, r.split) for r in self.results}
        return sorted(pairs, key=lambda p: (p[0], _SPLIT_ORDER.get(p[1], 9), p[1]))

    def summary_rows(self) -> list[dict]:
        """Per (dataset, split): n, classes, graded, every metric (kappa when graded), confusion
        (K x K nested lists, row = true class, column = predicted)."""
        rows = []
        for dataset, split in self.groups():
            spec = self.datasets[dataset]
            members = [r for r in self.results if r.dataset == dataset and r.split == split]
            y = np.array([r.label for r in members])
            probs = np.stack([r.probs for r in members])
            cm = confusion_matrix(y, probs.argmax(axis=1), len(spec.classes))
            rows.append({"dataset": dataset, "split": split, "n": len(members),
                         "classes": list(spec.classes), "graded": spec.graded,
                         **classification_metrics(y, probs, spec.graded), "confusion": cm.tolist()})
        return rows

    def prob_columns(self) -> list[str]:
        """`p_<class>` for every class of every declared dataset, in order, each once."""
        names = [c for spec in self.datasets.values() for c in spec.classes]
        return [f"p_{c}" for c in dict.fromkeys(names)]

    def per_image_rows(self) -> list[dict]:
        """id, dataset, split, true_class, predicted_class, then p_<class> (None where the class
        is not one of the image's dataset)."""
        columns = self.prob_columns()
        rows = []
        for r in self.results:
            classes = self.datasets[r.dataset].classes
            probs = {f"p_{c}": float(p) for c, p in zip(classes, r.probs, strict=True)}
            rows.append({"id": r.id, "dataset": r.dataset, "split": r.split,
                         "true_class": classes[r.label], "predicted_class": classes[r.predicted],
                         **{c: probs.get(c) for c in columns}})
        return rows
