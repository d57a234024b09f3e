"""Reading user images and volumes for `featcache predict`.

2D images (PNG, JPG, TIF, BMP) are read with PIL into float32 (H, W, C) in [0, 1], C in {1, 3}.
NIfTI volumes are normalised per volume exactly as the demo dataset does (1st-99th percentile of the
positive voxels to [0, 1]) and cut into slices along axis 2, in the demo's display orientation, so a
student trained on the demo sees what it was trained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from featcache.data.base import to_float_image
from featcache.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
VOLUME_SUFFIXES = (".nii.gz", ".nii")
_GREY_MODES = {"1", "L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
_TO_RGB_MODES = {"P", "CMYK", "YCbCr", "HSV", "LAB"}


def is_volume(path: Path) -> bool:
    return path.name.lower().endswith(VOLUME_SUFFIXES)


def input_stem(path: Path) -> str:
    """File name without its image suffix ('ct.nii.gz' -> 'ct')."""
    name = path.name
    for suffix in VOLUME_SUFFIXES + IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _supported(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES + VOLUME_SUFFIXES)


def list_inputs(source: Path) -> list[Path]:
    """A supported file, or the supported files directly inside a folder (sorted)."""
    source = Path(source)
    if source.is_file():
        if not _supported(source):
            raise DatasetError(f"{source}: unsupported file type; use PNG, JPG, TIF, BMP or NIfTI")
        return [source]
    if not source.is_dir():
        raise DatasetError(f"input {source} does not exist")
    files = sorted(p for p in source.iterdir() if _supported(p))
    if not files:
        raise DatasetError(f"{source} holds no PNG, JPG, TIF, BMP or NIfTI files")
    stems = [input_stem(p) for p in files]
    clashes = sorted({s for s in stems if stems.count(s) > 1})
    if clashes:
        raise DatasetError(f"{source}: several inputs share the name {clashes[0]!r} (e.g. .png and .jpg); "
                           "outputs would overwrite each other, rename one")
    return files


def read_image(path: Path) -> np.ndarray:
    """A 2D image file -> float32 (H, W, C) in [0, 1] with C in {1, 3} (alpha dropped)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in _TO_RGB_MODES:
                im = im.convert("RGB")
            array = np.asarray(im)
            mode = im.mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read the image ({type(exc).__name__}); "
                           "the file is corrupt or not an image") from None
    if mode == "1":
        array = array.astype(np.uint8) * 255
    channels = 1 if array.ndim == 2 else array.shape[2]
    if mode not in _GREY_MODES and channels not in (1, 3, 4):
        raise DatasetError(f"{path}: image has {channels} channels (mode {mode}); "
                           "save it as greyscale or RGB")
    return to_float_image(array, str(path))


def normalise_volume(volume: np.ndarray) -> np.ndarray:
    """The demo dataset's per-volume normalisation: 1st-99th percentile of positive voxels -> [0, 1]."""
    volume = np.asarray(volume, dtype=np.float32)
    positive = volume[volume > 0]
    ref = positive if positive.size else volume.ravel()
    lo, hi = np.percentile(ref, [1, 99])
    if hi <= lo:
        return np.zeros_like(volume)
    return np.clip((volume - lo) / (hi - lo), 0, 1).astype(np.float32)


def read_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI file -> (raw float32 (X, Y, Z) volume, 4x4 affine)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        volume = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for a damaged file
        raise DatasetError(f"{path}: cannot read the NIfTI volume ({type(exc).__name__}); "
                           "the file is corrupt or not NIfTI") from None
    if volume.ndim == 4 and volume.shape[3] == 1:
        volume = volume[..., 0]
    if volume.ndim != 3:
        raise DatasetError(f"{path}: volume has shape {volume.shape}; predict takes one-channel 3D volumes")
    bad = volume.size - int(np.count_nonzero(np.isfinite(volume)))
    if bad:  # the percentiles would be NaN and every slice blank: no mask is better than an empty one
        raise DatasetError(f"{path}: volume holds {bad} non-finite voxel(s) (NaN or inf); replace them "
                           "(e.g. with the background value) and predict again")
    return volume, np.asarray(img.affine, dtype=np.float64)


def volume_slice(volume: np.ndarray, z: int) -> np.ndarray:
    """(X, Y, Z) -> slice z as (H, W) in the demo's display orientation (rot90 of RAS voxels)."""
    return np.ascontiguousarray(np.rot90(volume[:, :, z]))


def slice_to_volume(plane: np.ndarray) -> np.ndarray:
    """Inverse of `volume_slice` for one (H, W) plane -> (X, Y)."""
    return np.ascontiguousarray(np.rot90(plane, k=-1))


def read_mask(path: Path) -> np.ndarray:
    """A ground-truth mask file -> bool (H, W) for images, (X, Y, Z) for NIfTI; nonzero is foreground."""
    if is_volume(path):
        return read_volume(path)[0] > 0
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("L") if im.mode not in _GREY_MODES else im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read the mask ({type(exc).__name__})") from None
    return array > 0


def read_label_map(path: Path) -> np.ndarray:
    """A ground-truth label map file -> int64 (H, W) for images, (X, Y, Z) for NIfTI, with its
    class values kept (0 = background); a palette PNG is read by its indices, not its colours."""
    if is_volume(path):
        volume = read_volume(path)[0]
        if not np.all(np.mod(volume, 1) == 0):
            raise DatasetError(f"{path}: label map holds non-integer values; save class indices")
        return volume.astype(np.int64)
    try:
        with Image.open(path) as im:
            if im.mode not in _GREY_MODES and im.mode != "P":
                raise DatasetError(f"{path}: label map has mode {im.mode}; save class indices as a "
                                   "greyscale or palette PNG")
            return np.asarray(im).astype(np.int64)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read the label map ({type(exc).__name__})") from None
