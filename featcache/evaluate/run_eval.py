"""Evaluate a trained run on its datasets' split, at each image's original resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featcache.data.registry import build_dataset
from featcache.distill.checkpoint import load_student
from featcache.errors import ConfigError
from featcache.evaluate.accumulator import MetricAccumulator
from featcache.evaluate.outputs import eval_overlay_path, write_eval_outputs
from featcache.evaluate.overlay import overlay_png
from featcache.evaluate.predict import Predictor


def score_dataset(predictor: Predictor, spec: dict[str, Any], split: str, acc: MetricAccumulator,
                  overlay_run: Path | None = None, progress=None) -> None:
    """Add every image of a dataset's `split` (spec: a manifest dataset entry as a dict) to `acc`;
    with overlay_run, write each overlay under that run's eval folder."""
    data = build_dataset(spec["name"], spec.get("root"), **spec.get("options", {}))
    if not data.labelled:
        raise ConfigError(f"dataset {spec['name']} has no masks to score against")
    indices = data.split_indices(spec.get(f"{split}_split", split) if split != "all" else "all")
    for k, i in enumerate(indices):
        sample = data.load(i)
        pred = predictor.masks([sample.image], sample.id)[0]
        spacing = sample.meta.get("spacing")
        acc.add(sample.id, spec["name"], split, pred, sample.mask.astype(bool),
                spacing=tuple(spacing[:2]) if spacing else None)
        if overlay_run is not None:
            overlay_png(sample.image, pred, sample.mask.astype(bool),
                        eval_overlay_path(overlay_run, spec["name"], sample.id))
        if progress:
            progress(k + 1, len(indices))


def evaluate_run(run_dir: Path, split: str = "test", which: str = "best", dataset: str | None = None,
                 empty: str = "empty_as_one", threshold: float = 0.5, overlays: bool = True,
                 progress=None) -> dict[str, Any]:
    """Score every image of `split` for the run's datasets (or one); writes RUN/eval/*.

    Returns {"accumulator", "csv", "json", "payload"}.
    """
    student, payload = load_student(run_dir, which)
    predictor = Predictor(student, payload["image_size"], threshold)
    specs = [d for d in payload["manifest"]["datasets"] if dataset in (None, d["name"])]
    if not specs:
        names = ", ".join(d["name"] for d in payload["manifest"]["datasets"])
        raise ConfigError(f"run {run_dir} was not trained on dataset {dataset!r}; it used {names}")
    acc = MetricAccumulator(empty=empty)
    for spec in specs:
        score_dataset(predictor, spec, split, acc, run_dir if overlays else None, progress)
    csv_path, json_path = write_eval_outputs(
        run_dir, acc, {"checkpoint": which, "epoch": payload["epoch"], "threshold": threshold})
    return {"accumulator": acc, "csv": csv_path, "json": json_path, "payload": payload}
