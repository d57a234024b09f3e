"""Evaluate a trained run on its datasets' split, at each image's original resolution."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featcache.data.overlay import overlay_png
from featcache.data.registry import build_dataset
from featcache.distill.run import Checkpoint, Run
from featcache.errors import ConfigError
from featcache.evaluate.accumulator import MetricAccumulator
from featcache.evaluate.outputs import summary_dict, write_eval_outputs
from featcache.evaluate.predict import Predictor
from featcache.manifest import DatasetSpec


@dataclass
class EvalResult:
    """What `evaluate_run` scored and wrote."""

    accumulator: MetricAccumulator  # per-image metrics
    summary: dict[str, Any]  # as written to summary.json (NaN as None)
    checkpoint: Checkpoint  # the checkpoint scored (epoch, manifest, ...)
    csv: Path  # per_image.csv
    json: Path  # summary.json
    overlays: Path | None  # the overlay folder, when overlays were written


def score_dataset(predictor: Predictor, spec: DatasetSpec, split: str, acc: MetricAccumulator,
                  overlay_run: Path | None = None, progress=None) -> None:
    """Add every image of a dataset's `split` (as the manifest entry `spec` names it) to `acc`;
    with overlay_run, write each overlay under that run's eval folder."""
    data = build_dataset(spec.name, spec.root, **spec.options)
    if not data.labelled:
        raise ConfigError(f"dataset {spec.name} has no masks to score against")
    named = {"train": spec.train_split, "val": spec.val_split, "test": spec.test_split}
    indices = data.split_indices(named.get(split, split))
    for k, i in enumerate(indices):
        sample = data.load(i)
        pred = predictor.masks([sample.image], sample.id)[0]
        spacing = sample.meta.get("spacing")
        acc.add(sample.id, spec.name, split, pred, sample.mask.astype(bool),
                spacing=tuple(spacing[:2]) if spacing else None)
        if overlay_run is not None:
            overlay_png(sample.image, pred, sample.mask.astype(bool),
                        Run(overlay_run).eval_overlay(spec.name, sample.id))
        if progress:
            progress(k + 1, len(indices))


def evaluate_run(run_dir: Path, split: str = "test", which: str = "best", dataset: str | None = None,
                 empty: str = "empty_as_one", threshold: float = 0.5, overlays: bool = True,
                 progress=None) -> EvalResult:
    """Score every image of `split` for the run's datasets (or one); writes RUN/eval/*."""
    run = Run(run_dir)
    student, checkpoint = run.load_student(which)
    predictor = Predictor(student, checkpoint.image_size, threshold)
    datasets = checkpoint.manifest.datasets
    specs = [d for d in datasets if dataset in (None, d.name)]
    if not specs:
        names = ", ".join(d.name for d in datasets)
        raise ConfigError(f"run {run_dir} was not trained on dataset {dataset!r}; it used {names}")
    acc = MetricAccumulator(empty=empty)
    for spec in specs:
        score_dataset(predictor, spec, split, acc, run.path if overlays else None, progress)
    info = {"checkpoint": which, "epoch": checkpoint.epoch, "threshold": threshold}
    csv_path, json_path = write_eval_outputs(run.path, acc, info)
    return EvalResult(acc, summary_dict(acc, info), checkpoint, csv_path, json_path,
                      run.eval.overlays_dir if overlays else None)
