"""Evaluate a trained run on its datasets' split, at each image's original resolution.

Each dataset is scored by its task: segmentation datasets with the mask metrics (label maps per
class when the student has several mask classes), classification datasets with the classification
metrics of the head trained for them (the student's classifier named like the dataset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featcache.data.base import SegmentationDataset
from featcache.data.overlay import overlay_classes_png, overlay_png
from featcache.data.registry import build_dataset
from featcache.errors import ConfigError
from featcache.evaluate.accumulator import MetricAccumulator
from featcache.evaluate.class_scores import ClassificationScores
from featcache.evaluate.outputs import summary_dict, write_metric_files
from featcache.evaluate.predictor import Predictor
from featcache.events import epoch_number
from featcache.manifest import DatasetSpec
from featcache.runs import Checkpoint, Run


@dataclass
class EvalResult:
    """What `evaluate_run` scored and wrote."""

    accumulator: MetricAccumulator  # per-image segmentation metrics
    summary: dict[str, Any]  # as written to summary.json (NaN as None)
    checkpoint: Checkpoint  # the checkpoint scored (epoch, manifest, ...)
    csv: Path  # per_image.csv
    json: Path  # summary.json
    overlays: Path | None  # the overlay folder, when overlays were written
    classification: ClassificationScores = field(default_factory=ClassificationScores)
    classes_csv: Path | None = None  # per_image_classes.csv, when classification datasets were scored


def _split_indices(data: SegmentationDataset, spec: DatasetSpec, split: str) -> list[int]:
    named = {"train": spec.train_split, "val": spec.val_split, "test": spec.test_split}
    return data.split_indices(named.get(split, split))


def _mask_classes(predictor: Predictor, data: SegmentationDataset, name: str) -> tuple[str, ...]:
    """The class names a multi-class student's label maps are scored by: the dataset's."""
    k = predictor.mask_classes
    if len(data.classes) != k:
        raise ConfigError(f"dataset {name} has {len(data.classes)} mask classes {list(data.classes)} "
                          f"but the student's decoder has {k} (student.mask_classes); "
                          "evaluate it with a run trained on it")
    return tuple(data.classes)


def _score_segmentation(predictor: Predictor, spec: DatasetSpec, data: SegmentationDataset,
                        split: str, acc: MetricAccumulator, overlay_run: Path | None, progress) -> None:
    if not data.labelled:
        raise ConfigError(f"dataset {spec.name} has no masks to score against")
    classes = _mask_classes(predictor, data, spec.name) if predictor.mask_classes > 1 else None
    indices = _split_indices(data, spec, split)
    for k, i in enumerate(indices):
        sample = data.load(i)
        spacing = sample.meta.get("spacing")
        spacing = tuple(spacing[:2]) if spacing else None
        target = None if overlay_run is None else Run(overlay_run).eval_overlay(spec.name, sample.id, split)
        if classes is None:
            pred = predictor.masks([sample.image], sample.id)[0]
            acc.add(sample.id, spec.name, split, pred, sample.mask.astype(bool), spacing=spacing)
            if target is not None:
                overlay_png(sample.image, pred, sample.mask.astype(bool), target)
        else:
            pred = predictor.label_maps([sample.image], sample.id)[0]
            acc.add_label_map(sample.id, spec.name, split, pred, sample.mask, classes, spacing)
            if target is not None:
                overlay_classes_png(sample.image, pred, sample.mask, classes, target)
        if progress:
            progress(k + 1, len(indices))


def _score_classification(predictor: Predictor, spec: DatasetSpec, data: SegmentationDataset,
                          split: str, scores: ClassificationScores, progress) -> None:
    heads = predictor.student.config.classifiers
    if spec.name not in heads:
        raise ConfigError(f"dataset {spec.name} is a classification dataset but the student has no "
                          f"head for it (student.classifiers: {sorted(heads) or 'none'})")
    if heads[spec.name] != len(data.classes):
        raise ConfigError(f"dataset {spec.name} has {len(data.classes)} classes but the student's "
                          f"head for it has {heads[spec.name]}; was the dataset changed since training?")
    scores.declare(spec.name, data.classes, data.graded)
    indices = _split_indices(data, spec, split)
    for k, i in enumerate(indices):
        sample = data.load(i)
        probs = predictor.class_probabilities([sample.image], spec.name, sample.id)[0]
        scores.add(sample.id, spec.name, split, sample.label, probs)
        if progress:
            progress(k + 1, len(indices))


def score_dataset(predictor: Predictor, spec: DatasetSpec, split: str, acc: MetricAccumulator,
                  overlay_run: Path | None = None, progress=None,
                  classification: ClassificationScores | None = None) -> None:
    """Add every image of a dataset's `split` (as the manifest entry `spec` names it) to `acc`, or
    to `classification` for a classification dataset; with overlay_run, write each segmentation
    overlay under that run's eval folder."""
    data = build_dataset(spec.name, spec.root, **spec.options)
    if data.task == "classification":
        if classification is None:
            raise ConfigError(f"dataset {spec.name} is a classification dataset; score it with "
                              "evaluate_run (it has no masks)")
        _score_classification(predictor, spec, data, split, classification, progress)
    else:
        _score_segmentation(predictor, spec, data, split, acc, overlay_run, progress)


def evaluate_run(run_dir: Path, split: str = "test", which: str = "best", dataset: str | None = None,
                 empty: str = "empty_as_one", threshold: float = 0.5, overlays: bool = True,
                 progress=None) -> EvalResult:
    """Score every image of `split` for the run's datasets (or one); writes RUN/eval/* for the test
    split, RUN/eval-SPLIT/* for another (Run.eval_of)."""
    run = Run(run_dir)
    folder = run.eval_of(split)
    student, checkpoint = run.load_student(which)
    predictor = Predictor(student, checkpoint.image_size, threshold)
    datasets = checkpoint.manifest.datasets
    specs = [d for d in datasets if dataset in (None, d.name)]
    if not specs:
        names = ", ".join(d.name for d in datasets)
        raise ConfigError(f"run {run_dir} was not trained on dataset {dataset!r}; it used {names}")
    acc, scores = MetricAccumulator(empty=empty), ClassificationScores()
    for spec in specs:
        score_dataset(predictor, spec, split, acc, run.path if overlays else None, progress, scores)
    info = {"checkpoint": which, "epoch": epoch_number(checkpoint.epoch), "split": split,
            "threshold": threshold}
    csv_path, json_path = write_metric_files(folder.path, acc, info, scores)
    return EvalResult(acc, summary_dict(acc, info, scores), checkpoint, csv_path, json_path,
                      folder.overlays_dir if overlays else None, scores,
                      folder.per_image_classes_csv if len(scores) else None)
