"""Running a trained student on user files: masks, volumes, class probabilities and overlays.

Every input is read with the recipe of the dataset it is like (the run's, data/recipe.py), so it
is served the pixels its dataset was trained on, and each prediction goes back onto the input's
own grid and label values. The student runs in PyTorch (`Predictor`) or ONNX Runtime
(`OnnxPredictor`): this module imports neither.

Outputs under OUT, named by the input (by the case for nnU-Net's CASE_0000 files):
  masks/NAME.png          2D inputs: the mask at the input's size, 0 or 255; for a multi-class
                          student a palette PNG of the dataset's label values, coloured as the
                          overlays
  masks/NAME.nii.gz       volumes: the mask (label values for a multi-class student) on the input's
                          grid: its shape and affine (a DICOM series': data/dicom.py)
  masks/NAME.seg.dcm      DICOM inputs: the same prediction as a DICOM-SEG of the source series
                          (its study kept, a new series; one segment per class), dicom_seg.py
  overlays/NAME.png       2D inputs: image with the prediction (and ground truth) filled, see overlay.py
  overlays/NAME_sliceNNN.png  volumes: the slice (along the recipe's axis) with the largest
                          predicted area
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

from featcache.data.dicom import read_labels_on, seg_values_by_name
from featcache.data.overlay import class_colour, overlay_classes_png, overlay_png
from featcache.data.readers import Scan, read_scan, series_scan
from featcache.data.recipe import Recipe
from featcache.data.serving import SlicedVolume, class_map, input_planes, label_values, read_classes
from featcache.data.volumes import save_nifti, slice_at
from featcache.errors import DatasetError, FeatcacheError
from featcache.evaluate import inputs as io
from featcache.evaluate.accumulator import MetricAccumulator
from featcache.evaluate.dicom_seg import write_dicom_seg
from featcache.evaluate.outputs import write_metric_files
from featcache.evaluate.served import Served, choose_recipe
from featcache.runs import check_folder

__all__ = ["PredictResult", "PredictSummary", "predict_paths", "write_scores"]

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


@dataclass
class _Job:
    """One input being served: what it is, how it is read, where its outputs go."""

    item: io.Input
    recipe: Recipe
    scan: Scan
    out: Path
    gt: np.ndarray | None = None  # ground-truth classes on the scan's grid


def _ground_truth(path: Path | None, job: _Job, predictor: Served) -> np.ndarray | None:
    """The ground truth as classes (0 background, k class k), read as the dataset trains on it."""
    if path is None:
        return None
    series = job.item.series
    gt = read_classes(path, job.recipe) if series is None else class_map(
        read_labels_on(path, series, seg_values_by_name(path, job.recipe.labels)), job.recipe)
    if gt.shape != job.scan.grid:
        raise DatasetError(f"{path}: mask shape {gt.shape} does not match input {job.item.path} "
                           f"{job.scan.grid}")
    return gt > 0 if predictor.mask_classes == 1 else gt


def _segment(predictor: Served, images: list[np.ndarray], source: str) -> list[np.ndarray]:
    """bool masks for a binary student, uint8 label maps (classes) for a multi-class one."""
    if predictor.mask_classes == 1:
        return predictor.masks(images, source)
    return predictor.label_maps(images, source)


def _score(predictor: Served, summary: PredictSummary, job: _Job, pred: np.ndarray) -> float | None:
    """Score into summary.scores; the Dice (mean over classes for label maps), None without gt."""
    if job.gt is None:
        return None
    spacing = _voxel_size(job.scan.affine) if job.scan.is_volume else None
    names = predictor.classes.mask
    if names is None:
        return summary.scores.add(job.item.name, summary.group, "predict", pred, job.gt, spacing)["dice"]
    return summary.scores.add_label_map(job.item.name, summary.group, "predict", pred, job.gt, names,
                                        spacing)["dice"]


def _overlay(predictor: Served, image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None,
             path: Path, caption: str | None = None) -> Path:
    names = predictor.classes.mask
    if names is None:
        return overlay_png(image, pred, gt, path, caption)
    return overlay_classes_png(image, pred, gt, names, path, caption)


def _save_mask_png(pred: np.ndarray, path: Path, recipe: Recipe, multi: bool) -> Path:
    """A binary mask as 0/255 greyscale; a label map as a palette PNG of the label values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    values = label_values(pred.astype(np.uint8), recipe, binary_value=255)
    if not multi:
        Image.fromarray(values).save(path)
    else:
        picture = Image.fromarray(values.astype(np.uint8), mode="P")
        picture.putpalette(_value_palette(recipe))
        picture.save(path)
    return path


def _value_palette(recipe: Recipe) -> list[int]:
    """A PIL palette over label values: 0 black, each class's values in its overlay colour."""
    classes = recipe.labels.values or ((1,),)
    flat = [0, 0, 0] * (max(max(v) for v in classes) + 1)
    for k, values in enumerate(classes):
        for v in values:
            flat[3 * v: 3 * v + 3] = class_colour(k + 1)
    return flat


def _classify(predictor: Served, image: np.ndarray, path: Path, summary: PredictSummary) -> dict[str, str]:
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


def predict_image(predictor: Served, job: _Job, summary: PredictSummary) -> PredictResult:
    image = input_planes(job.scan, job.recipe)[0]
    path, name = job.item.path, job.item.name
    classes = _classify(predictor, image, path, summary)
    if not predictor.classes.segments:  # a classification run: its decoder was never trained
        return PredictResult(path, job.scan.grid, None, [], None, classes)
    pred = _segment(predictor, [image], str(path))[0]
    mask_path = _save_mask_png(pred, job.out / "masks" / f"{name}.png", job.recipe,
                               predictor.mask_classes > 1)
    over = _overlay(predictor, image, pred, job.gt, job.out / "overlays" / f"{name}.png")
    score = _score(predictor, summary, job, pred)
    return PredictResult(path, job.scan.grid, float((pred > 0).mean()), [mask_path, over], score, classes)


def predict_volume(predictor: Served, job: _Job, summary: PredictSummary) -> PredictResult:
    if not predictor.classes.segments:
        heads = ", ".join(predictor.classes.heads)
        raise DatasetError(f"{job.item.path}: this run classifies 2D images (heads: {heads}); "
                           "it has no trained mask decoder for a volume")
    volume = SlicedVolume(job.scan, job.recipe)
    planes = [volume.plane(k) for k in range(len(volume))]
    pred = volume.to_grid(_segment(predictor, planes, str(job.item.path)))
    values = label_values(pred.astype(np.uint8), job.recipe)
    mask_path = save_nifti(values, job.scan.affine, job.out / "masks" / f"{job.item.name}.nii.gz")
    turned = volume.orient(pred)
    areas = (turned > 0).sum(axis=tuple(a for a in range(3) if a != volume.axis))
    k = int(areas.argmax()) if areas.any() else len(volume) // 2
    at = slice_at(k, volume.axis)
    gt_plane = None if job.gt is None else volume.orient(job.gt)[at]
    over = _overlay(predictor, planes[k], turned[at], gt_plane,
                    job.out / "overlays" / f"{job.item.name}_slice{k:03d}.png",
                    caption=f"slice {k} (axis {volume.axis})")
    outputs = [mask_path, over]
    if job.item.series is not None:  # DICOM in: DICOM-SEG out too, beside the NIfTI
        outputs.insert(1, write_dicom_seg(pred.astype(np.uint8), job.item.series, job.recipe.labels.names,
                                          job.out / "masks" / f"{job.item.name}.seg.dcm"))
    score = _score(predictor, summary, job, pred)
    return PredictResult(job.item.path, job.scan.grid, float((pred > 0).mean()), outputs, score)


def _serve(predictor: Served, item: io.Input, out: Path, masks_dir: Path | None, dataset: str | None,
           summary: PredictSummary) -> PredictResult:
    recipe = choose_recipe(predictor.recipes, item.path, dataset)
    if item.series is None:
        scan = read_scan(item.path, recipe)
    elif recipe.reader == "dicom":
        scan = series_scan(item.path, item.series)
    else:
        raise DatasetError(f"{item.path}: a DICOM series; the student reads {recipe.reader} inputs for "
                           f"this dataset")
    job = _Job(item, recipe, scan, out)
    job.gt = _ground_truth(io.find_mask(masks_dir, item), job, predictor)
    run = predict_volume if job.scan.is_volume else predict_image
    return run(predictor, job, summary)


def _channel(predictor: Served, dataset: str | None) -> int:
    """The channel file of nnU-Net inputs to read: that of the recipe(s) (0 when they differ)."""
    channels = {r.channel for name, r in predictor.recipes.items() if dataset in (None, name)}
    return channels.pop() if len(channels) == 1 else 0


def predict_paths(predictor: Served, source: Path, out: Path, masks_dir: Path | None = None,
                  keep_going: bool = False, dataset: str | None = None) -> PredictSummary:
    """Predict every input in `source` (a file or folder) into `out`, each read with its recipe
    (that of `dataset`, when given). A bad input raises its FeatcacheError, or with keep_going is
    recorded in `failures` while the others are written. Inputs with a ground-truth mask are
    scored into `summary.scores`; see `write_scores`."""
    source, out = Path(source), Path(out)
    check_folder(out, "out")
    summary = PredictSummary(group=source.name if source.is_dir() else source.parent.name)
    if masks_dir is not None and not Path(masks_dir).is_dir():
        raise DatasetError(f"masks {masks_dir} is not a folder", fields=("masks",))
    for item in io.list_inputs(source, _channel(predictor, dataset)):
        try:
            summary.results.append(_serve(predictor, item, out, masks_dir, dataset, summary))
        except FeatcacheError as exc:
            if not keep_going:
                raise
            summary.failures.append((str(item.path), str(exc).removeprefix(f"{item.path}: ")))
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
