"""The readers a recipe names (`Recipe.reader`), in one registry.

A reader opens one input (a file, or the folder of a format that spreads a scan over files) and
returns a `Scan`: the raw values on the input's own grid and, for volumes, the affine that places
that grid in the world. What the values become (intensity, slices, channels) is the recipe's
business (serving.py), so every reader is served the same way. A new format adds its reader
here, one line in READERS, as the datasets and teachers registries are written out.

No torch: the ONNX Runtime path reads through this module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featcache.data.dicom import DicomSeries, looks_like_dicom, one_series, read_series
from featcache.data.files import IMAGE_EXTS, decode_image, read_label_image, read_mask
from featcache.data.recipe import Recipe
from featcache.data.volumes import NIFTI_SUFFIXES, nifti_scan, read_label_volume
from featcache.errors import DatasetError
from featcache.registry import lookup


@dataclass
class Scan:
    """One input as read: `array` holds raw values, (H, W, C) for a 2D image, (X, Y, Z) for a
    volume (the recipe's channel of a 4D one); `affine` (4 x 4, voxel -> mm) is None for images."""

    source: Path
    array: np.ndarray
    affine: np.ndarray | None = None

    @property
    def is_volume(self) -> bool:
        return self.affine is not None

    @property
    def grid(self) -> tuple[int, ...]:
        """The shape a prediction is written back in: (H, W) or (X, Y, Z)."""
        return tuple(self.array.shape[:3] if self.is_volume else self.array.shape[:2])


@dataclass(frozen=True)
class Reader:
    kind: str  # "image" (2D, no affine) or "volume"
    suffixes: tuple[str, ...]  # lower-case name endings it opens; () for folders
    read: Callable[[Path, Recipe], Scan]
    read_labels: Callable[[Path, Recipe], np.ndarray]  # a label file -> integer values on its grid
    summary: str
    folder_test: Callable[[Path], bool] | None = None  # readers of folders: is it one of theirs?

    def opens(self, path: Path) -> bool:
        name = path.name.lower()
        if not self.suffixes:
            return path.is_dir() and (self.folder_test is None or self.folder_test(path))
        return any(name.endswith(s) for s in self.suffixes)


def _read_image(path: Path, recipe: Recipe) -> Scan:
    return Scan(path, decode_image(path, recipe.channels))


def _image_labels(path: Path, recipe: Recipe) -> np.ndarray:
    """Label values as stored; a binary dataset's mask file read as it trains ({0, 1})."""
    if recipe.labels.values is None:
        return read_mask(path, recipe.labels.mask_mode).astype(np.int64)
    return read_label_image(path)


def _read_nifti(path: Path, recipe: Recipe) -> Scan:
    array, affine = nifti_scan(path, recipe.channel)
    return Scan(path, array, affine)


def series_scan(path: Path, series: DicomSeries) -> Scan:
    """A DICOM series as read: modality values (HU for CT), its RAS affine; `path` its folder."""
    return Scan(path, read_series(series), series.affine_array)


def _read_dicom(path: Path, recipe: Recipe) -> Scan:
    return series_scan(path, one_series(path))


READERS: dict[str, Reader] = {
    "image": Reader("image", IMAGE_EXTS, _read_image, _image_labels,
                    "2D image files (PNG, JPEG, TIFF, BMP, GIF) read with PIL"),
    "nifti": Reader("volume", NIFTI_SUFFIXES, _read_nifti, lambda p, r: read_label_volume(p),
                    "NIfTI volumes (.nii, .nii.gz) read with nibabel, the header's scaling applied"),
    # A DICOM input is a folder of one series. Its label files are read as stored (NIfTI on the
    # series' voxel order, as predict writes them); predict lays a lab's labels (any orientation
    # of the grid, or DICOM-SEG) on the series itself (data/dicom.py read_labels_on).
    "dicom": Reader("volume", (), _read_dicom, lambda p, r: read_label_volume(p),
                    "DICOM series (a folder of one series) read with pydicom, rescaled to HU",
                    looks_like_dicom),
}


def reader(name: str) -> Reader:
    return lookup(READERS, "reader", name, DatasetError)


def read_scan(path: Path, recipe: Recipe) -> Scan:
    """Open `path` with the recipe's reader; a file it does not open is one line naming both."""
    found = reader(recipe.reader)
    if not found.opens(Path(path)):
        what = ", ".join(found.suffixes) or "a folder"
        raise DatasetError(f"{path}: the {recipe.reader} reader opens {what}; this student was "
                           f"trained on {recipe.reader} inputs")
    return found.read(Path(path), recipe)


def readers_for(path: Path) -> list[str]:
    """The registered readers that open `path`."""
    return [name for name, r in READERS.items() if r.opens(Path(path))]
