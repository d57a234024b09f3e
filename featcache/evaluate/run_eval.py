"""Evaluate a trained run on a dataset split at each image's original resolution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from featcache.data.registry import build_dataset
from featcache.distill.checkpoint import load_student
from featcache.distill.student import student_input
from featcache.errors import ConfigError


def predict_mask(student: torch.nn.Module, image: np.ndarray, size: int, channels: int,
                 threshold: float = 0.5) -> np.ndarray:
    """float32 (H, W, C) -> uint8 (H, W) mask at the image's own resolution."""
    x = student_input(image, size, channels)[None]
    with torch.no_grad():
        logits = student(x)
    logits = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
    return (torch.sigmoid(logits)[0, 0].numpy() > threshold).astype(np.uint8)


def evaluate_run(run_dir: Path, split: str = "test", which: str = "best",
                 dataset: str | None = None, progress=None) -> list[dict[str, Any]]:
    """Per-image rows (dataset, id, split, pred, gt, meta) for the run's datasets (or one of them)."""
    student, payload = load_student(run_dir, which)
    manifest = payload["manifest"]
    specs = [d for d in manifest["datasets"] if dataset in (None, d["name"])]
    if not specs:
        names = ", ".join(d["name"] for d in manifest["datasets"])
        raise ConfigError(f"run {run_dir} was not trained on dataset {dataset!r}; it used {names}")
    size = int(payload["image_size"])
    channels = int(payload["student_config"]["in_channels"])
    rows = []
    for spec in specs:
        data = build_dataset(spec["name"], spec["root"], **spec["options"])
        indices = data.split_indices(split)
        for k, i in enumerate(indices):
            sample = data.load(i)
            pred = predict_mask(student, sample.image, size, channels)
            rows.append({"dataset": spec["name"], "id": sample.id, "split": split, "pred": pred,
                         "gt": sample.mask, "image": sample.image, "meta": sample.meta})
            if progress:
                progress(k + 1, len(indices))
    return rows
