"""Running a trained student on user files: masks, NIfTI volumes and overlays.

Outputs under OUT:
  masks/STEM.png          2D inputs: the mask at the input's size, 0 or 255; for a multi-class
                          student the label map (0 = background, k = class k) as a palette PNG
                          whose colours are the overlays'
  masks/STEM.nii.gz       NIfTI inputs: uint8 {0, 1} mask volume (label map 0..K for a multi-class
                          student) with the input's affine
  overlays/STEM.png       2D inputs: image with the prediction (and ground truth) filled, see overlay.py
  overlays/STEM_zNNN.png  NIfTI inputs: the slice with the largest predicted area
  class_probabilities.csv 2D inputs, students with classification heads: one row per input and head
                          (input, head, predicted_class, p_<class>); a run trained on classification
                          datasets only writes no masks
  per_image.csv, summary.json   with --masks: the metrics `featcache eval` writes, in its format
                          (images scored in pixels, volumes in 3D with the header's voxel size in mm;
                          label maps per class and their mean)
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from featcache.data.overlay import label_palette, overlay_classes_png, overlay_png
from featcache.errors import DatasetError, FeatcacheError
from featcache.evaluate import inputs as io
from featcache.evaluate.accumulator import MetricAccumulator
from featcache.evaluate.outputs import write_metric_files
from featcache.evaluate.predictor import Predictor

__all__ = ["Predictor", "PredictResult", "PredictSummary", "predict_paths", "write_scores"]

CLASS_CSV = "class_probabilities.csv"


@dataclass
class PredictResult:
    source: Path
    shape: tuple[int, ...]
    foreground: float | None  # fraction of predicted pixels; None when no mask was written
    outputs: list[Path]
    dice: float | None = None  # when a ground-truth mask was found (mean over classes for label maps)
    classes: dict[str, str] = field(default_factory=dict)  # head -> predicted class


@dataclass
class PredictSummary:
    results: list[PredictResult] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)
    scores: MetricAccumulator = field(default_factory=MetricAccumulator)  # inputs with a mask
    group: str = "inputs"  # the dataset column of the scores: the input folder's name
    class_rows: list[dict] = field(default_factory=list)  # rows of class_probabilities.csv
    class_csv: Path | None = None  # written when any input was classified


def _find_mask(masks_dir: Path | None, stem: str) -> Path | None:
    if masks_dir is None:
        return None
    for suffix in io.IMAGE_SUFFIXES + io.VOLUME_SUFFIXES:
        for candidate in (masks_dir / f"{stem}{suffix}", masks_dir / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def _ground_truth(path: Path | None, shape: tuple[int, ...], source: Path,
                  mask_classes: int = 1) -> np.ndarray | None:
    """The ground truth for `source`: a bool mask, or a label map for a multi-class student."""
    if path is None:
        return None
    gt = io.read_mask(path) if mask_classes == 1 else io.read_label_map(path)
    if gt.shape != shape:
        raise DatasetError(f"{path}: mask shape {gt.shape} does not match input {source} {shape}")
    if mask_classes > 1 and gt.size and (gt.min() < 0 or gt.max() > mask_classes):
        raise DatasetError(f"{path}: label map holds value {int(gt.max())}; the student knows classes "
                           f"0..{mask_classes} (0 = background)")
    return gt


def _score(predictor: Predictor, summary: PredictSummary, stem: str, pred: np.ndarray,
           gt: np.ndarray | None, spacing: tuple[float, ...] | None = None) -> float | None:
    """Score into summary.scores; the Dice (mean over classes for label maps), None without gt."""
    if gt is None:
        return None
    names = predictor.classes.mask
    if names is None:
        return summary.scores.add(stem, summary.group, "predict", pred, gt, spacing)["dice"]
    return summary.scores.add_label_map(stem, summary.group, "predict", pred, gt, names, spacing)["dice"]


def _segment(predictor: Predictor, images: list[np.ndarray], source: str) -> list[np.ndarray]:
    """bool masks for a binary student, uint8 label maps for a multi-class one."""
    if predictor.classes.mask is None:
        return predictor.masks(images, source)
    return predictor.label_maps(images, source)


def _overlay(predictor: Predictor, image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None,
             path: Path, caption: str | None = None) -> Path:
    names = predictor.classes.mask
    if names is None:
        return overlay_png(image, pred, gt, path, caption)
    return overlay_classes_png(image, pred, gt, names, path, caption)


def _save_mask_png(pred: np.ndarray, path: Path, names: tuple[str, ...] | None) -> Path:
    """A binary mask as 0/255 greyscale; a label map as a palette PNG (values = class indices)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if names is None:
        Image.fromarray(pred.astype(np.uint8) * 255).save(path)
    else:
        picture = Image.fromarray(pred.astype(np.uint8), mode="P")
        picture.putpalette(label_palette(len(names)))
        picture.save(path)
    return path


def _classify(predictor: Predictor, image: np.ndarray, path: Path, summary: PredictSummary) -> dict[str, str]:
    """Run every classification head on one image; rows go to summary.class_rows."""
    predicted = {}
    for head, names in predictor.classes.heads.items():
        probs = predictor.class_probabilities([image], head, str(path))[0]
        predicted[head] = names[int(probs.argmax())]
        summary.class_rows.append({"input": path.name, "head": head, "predicted_class": predicted[head],
                                   **{f"p_{n}": float(p) for n, p in zip(names, probs, strict=True)}})
    return predicted


def _voxel_size(affine: np.ndarray) -> tuple[float, ...] | None:
    """mm per voxel along each array axis (the affine's column norms), None when degenerate."""
    sizes = tuple(float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))
    return sizes if all(math.isfinite(v) and v > 0 for v in sizes) else None


def predict_image(predictor: Predictor, path: Path, out: Path, gt_path: Path | None,
                  summary: PredictSummary) -> PredictResult:
    image = io.read_image(path)
    classes = _classify(predictor, image, path, summary)
    if not predictor.classes.segments:  # a classification run: its decoder was never trained
        return PredictResult(path, tuple(image.shape[:2]), None, [], None, classes)
    gt = _ground_truth(gt_path, image.shape[:2], path, predictor.mask_classes)
    pred = _segment(predictor, [image], str(path))[0]
    stem = io.input_stem(path)
    mask_path = _save_mask_png(pred, out / "masks" / f"{stem}.png", predictor.classes.mask)
    over = _overlay(predictor, image, pred, gt, out / "overlays" / f"{stem}.png")
    score = _score(predictor, summary, stem, pred, gt)
    return PredictResult(path, tuple(image.shape[:2]), float((pred > 0).mean()), [mask_path, over], score,
                         classes)


def predict_volume(predictor: Predictor, path: Path, out: Path, gt_path: Path | None,
                   summary: PredictSummary) -> PredictResult:
    import nibabel as nib

    if not predictor.classes.segments:
        heads = ", ".join(predictor.classes.heads)
        raise DatasetError(f"{path}: this run classifies 2D images (heads: {heads}); "
                           "it has no trained mask decoder for a volume")
    raw, affine = io.read_volume(path)
    gt = _ground_truth(gt_path, raw.shape, path, predictor.mask_classes)
    volume = io.normalise_volume(raw)
    planes = [io.volume_slice(volume, z)[:, :, None] for z in range(volume.shape[2])]
    pred = np.stack([io.slice_to_volume(m) for m in _segment(predictor, planes, str(path))], axis=2)
    stem = io.input_stem(path)
    mask_path = out / "masks" / f"{stem}.nii.gz"
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(pred.astype(np.uint8), affine), str(mask_path))
    areas = (pred > 0).sum(axis=(0, 1))
    z = int(areas.argmax()) if areas.any() else volume.shape[2] // 2
    gt_plane = None if gt is None else io.volume_slice(gt, z)
    over_path = out / "overlays" / f"{stem}_z{z:03d}.png"
    over = _overlay(predictor, planes[z], io.volume_slice(pred, z), gt_plane, over_path,
                    caption=f"slice z={z}")
    score = _score(predictor, summary, stem, pred, gt, _voxel_size(affine))
    return PredictResult(path, tuple(raw.shape), float((pred > 0).mean()), [mask_path, over], score)


def predict_paths(predictor: Predictor, source: Path, out: Path, masks_dir: Path | None = None,
                  keep_going: bool = False) -> PredictSummary:
    """Predict every input in `source` (a file or folder) into `out`. A bad input raises its
    FeatcacheError, or with keep_going is recorded in `failures` while the others are written.
    Inputs with a ground-truth mask are scored into `summary.scores`; see `write_scores`."""
    source, out = Path(source), Path(out)
    summary = PredictSummary(group=source.name if source.is_dir() else source.parent.name)
    if masks_dir is not None and not Path(masks_dir).is_dir():
        raise DatasetError(f"masks {masks_dir} is not a folder", fields=("masks",))
    for path in io.list_inputs(Path(source)):
        try:
            gt_path = _find_mask(masks_dir, io.input_stem(path))
            run = predict_volume if io.is_volume(path) else predict_image
            summary.results.append(run(predictor, path, out, gt_path, summary))
        except FeatcacheError as exc:
            if not keep_going:
                raise
            summary.failures.append((str(path), str(exc).removeprefix(f"{path}: ")))
    if summary.class_rows:
        summary.class_csv = _write_class_csv(out / CLASS_CSV, summary.class_rows)
    return summary


def _write_class_csv(path: Path, rows: list[dict]) -> Path:
    """input, head, predicted_class, then p_<class> for every class of every head (empty cells for
    another head's classes)."""
    probs = list(dict.fromkeys(k for r in rows for k in r if k.startswith("p_")))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["input", "head", "predicted_class", *probs], restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_scores(summary: PredictSummary, out: Path, info: dict | None = None) -> tuple[Path, Path] | None:
    """per_image.csv and summary.json in `out` when any input was scored, else None."""
    if not len(summary.scores):
        return None
    return write_metric_files(out, summary.scores, info)
