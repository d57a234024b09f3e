"""A recipe (recipe.py) applied: a read `Scan` -> the student's input planes, float32 (H, W, C) in
[0, 1], and one prediction per plane -> one array on the scan's own grid, in the dataset's label
values. The dataset loaders (hence training and `eval`), `predict`, the Python API and the ONNX
Runtime path all call these functions, so what is trained is what is served. numpy only (no
torch): the exported model's path uses it too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featcache.data.base import to_float_image
from featcache.data.readers import Scan, read_scan, reader
from featcache.data.recipe import Intensity, Recipe
from featcache.data.volumes import label_map, orientation, reorient, slice_at


def intensity_range(raw: np.ndarray, intensity: Intensity) -> tuple[float, float] | None:
    """(lo, hi) mapped to 0 and 1 (None for file_range): a window, or the percentiles of the
    whole scan's reference voxels (falling back to all voxels when none qualify)."""
    if intensity.kind == "file_range":
        return None
    if intensity.kind == "window":
        return float(intensity.low), float(intensity.high)
    pick = {"nonzero": raw != 0, "positive": raw > 0}.get(intensity.reference)
    values = raw[pick] if pick is not None and pick.any() else raw.reshape(-1)
    # float32 first, as every reader before the recipe read voxels: the same percentiles.
    lo, hi = np.percentile(values.astype(np.float32, copy=False), [intensity.low, intensity.high])
    return float(lo), float(hi)


def scale(raw: np.ndarray, bounds: tuple[float, float] | None, source: str) -> np.ndarray:
    """Raw (H, W[, C]) values -> float32 (H, W, C) in [0, 1]: clipped to bounds and scaled (in
    float64, then rounded once), or by the file type's range when bounds is None."""
    if bounds is None:
        return to_float_image(raw, source)
    lo, hi = bounds
    out = np.zeros(raw.shape, np.float32) if hi <= lo else \
        np.clip((np.asarray(raw, np.float32).astype(np.float64) - lo) / (hi - lo), 0, 1).astype(np.float32)
    return out if out.ndim == 3 else out[:, :, None]


class SlicedVolume:
    """A volume scan ready to slice: its voxels turned to the recipe's orientation (a view) and
    the intensity bounds of the whole volume; `plane(k)` is the student's input for slice k."""

    def __init__(self, scan: Scan, recipe: Recipe) -> None:
        slicing = recipe.slicing
        if slicing is None:
            raise ValueError(f"recipe for {recipe.reader} has no slicing; it is not a volume recipe")
        self.scan, self.axis = scan, slicing.axis
        self.forward, self.back = (None, None) if slicing.orientation is None else \
            orientation(scan.affine, slicing.orientation, slicing.assume)
        self.voxels = reorient(scan.array, self.forward)
        self.bounds = intensity_range(scan.array, recipe.intensity)

    def __len__(self) -> int:
        return int(self.voxels.shape[self.axis])

    def orient(self, array: np.ndarray) -> np.ndarray:
        """Another array on the scan's grid (its label map), turned the same way."""
        return reorient(array, self.forward)

    def plane(self, k: int) -> np.ndarray:
        """float32 (H, W, 1) in [0, 1]: slice k along the axis, rows and columns the other two."""
        return scale(self.voxels[slice_at(k, self.axis)], self.bounds, str(self.scan.source))

    def to_grid(self, planes: list[np.ndarray]) -> np.ndarray:
        """One (H, W) prediction per slice -> the scan's own grid (X, Y, Z), stored voxel order."""
        return np.ascontiguousarray(reorient(np.stack(planes, axis=self.axis), self.back))


def input_planes(scan: Scan, recipe: Recipe) -> list[np.ndarray]:
    """The student's inputs for one scan: one float32 (H, W, C) plane for an image, one per slice
    for a volume."""
    if scan.is_volume:
        volume = SlicedVolume(scan, recipe)
        return [volume.plane(k) for k in range(len(volume))]
    return [scale(scan.array, intensity_range(scan.array, recipe.intensity), str(scan.source))]


def to_grid(planes: list[np.ndarray], scan: Scan, recipe: Recipe) -> np.ndarray:
    """Predictions of `input_planes` -> one array on the scan's grid."""
    return SlicedVolume(scan, recipe).to_grid(planes) if scan.is_volume else planes[0]


def class_map(labels: np.ndarray, recipe: Recipe) -> np.ndarray:
    """A label file's values -> uint8 classes (0 background, k + 1 for the values of class k)."""
    return label_map(labels, recipe.labels.values)


def read_classes(path: Path, recipe: Recipe) -> np.ndarray:
    """A ground-truth label file -> uint8 classes on its own grid, as the dataset trains on them."""
    return class_map(reader(recipe.reader).read_labels(Path(path), recipe), recipe)


def label_values(classes: np.ndarray, recipe: Recipe, binary_value: int = 1) -> np.ndarray:
    """uint8 classes -> the dataset's label values: class k + 1 -> the first value of class k;
    a binary student's foreground -> binary_value (255 for 8-bit PNG masks)."""
    values = recipe.labels.values
    if values is None:
        return np.where(classes > 0, binary_value, 0).astype(np.uint8)
    lookup = np.array([0, *(v[0] for v in values)], np.int64)
    out = lookup[np.minimum(classes, len(values))]
    return out.astype(np.uint8 if out.max(initial=0) < 256 else np.uint16)


def image_input(path: Path, recipe: Recipe) -> np.ndarray:
    """A 2D image file -> the student's float32 (H, W, C) input, as its dataset trains on it."""
    return input_planes(read_scan(path, recipe), recipe)[0]


def open_planes(path: Path, recipe: Recipe) -> tuple[Scan, list[np.ndarray]]:
    """Read one input with its recipe -> (the scan, its input planes)."""
    scan = read_scan(path, recipe)
    return scan, input_planes(scan, recipe)
