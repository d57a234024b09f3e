"""NIfTI volumes (via nibabel, the one module that imports it): reading, label selection, slices.

Slice k along axis a is `volume[slice_at(k, a)]`, whose rows and columns are the two remaining
axes in order, so meta["spacing"] lists those axes' voxel sizes in mm (what HD95 in mm needs).
How voxels become the student's input (intensity, orientation) is the recipe's: serving.py.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from featcache.data.digest import cached_fact, file_key
from featcache.data.files import FileProblem

NIFTI_SUFFIXES = (".nii.gz", ".nii")
DEFAULT_CT_WINDOW = (-160.0, 240.0)  # abdominal soft tissue (HU); lungs want e.g. (-1000, 400)
DEFAULT_PERCENTILES = (1.0, 99.0)  # MRI: the volume's 1st-99th percentile -> [0, 1]


def nifti_stem(path: Path) -> str | None:
    """'liver_0.nii.gz' -> 'liver_0'; None for anything that is not a NIfTI file."""
    for suffix in NIFTI_SUFFIXES:
        if path.name.endswith(suffix) and not path.name.startswith("."):
            return path.name[: -len(suffix)]
    return None


def _nib_errors() -> tuple[type[BaseException], ...]:
    from nibabel.filebasedimages import ImageFileError

    return (OSError, EOFError, ValueError, zlib.error, ImageFileError)


def read_header(path: Path) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(shape, voxel sizes) from the header alone; cheap, no voxel data is decoded."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        return tuple(int(s) for s in image.shape), tuple(float(z) for z in image.header.get_zooms())
    except _nib_errors() as exc:
        raise FileProblem(path, f"unreadable NIfTI header ({exc})") from None


def read_volume(path: Path) -> np.ndarray:
    """Decode all voxels (scaling applied); a truncated .nii.gz fails here, naming the file."""
    import nibabel as nib

    try:
        return np.asanyarray(nib.load(str(path)).dataobj)
    except _nib_errors() as exc:
        raise FileProblem(path, f"unreadable or truncated NIfTI file ({exc})") from None


def read_on_grid(path: Path, affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A 3D NIfTI volume laid on another volume's voxel grid, given as its (RAS+) affine and shape.

    The file may store the grid in any axis order and direction (dcm2niix flips rows, ITK-SNAP or
    3D Slicer may reverse slices): nibabel's orientation tools turn it into the grid's order. It
    must be the same grid: every voxel within a tenth of a voxel of its place, or one line says so.
    Nothing is resampled."""
    import nibabel as nib
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except _nib_errors() as exc:
        raise FileProblem(path, f"unreadable or truncated NIfTI file ({exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise FileProblem(path, f"expected a 3D label volume, got shape {data.shape}")
    turn = ornt_transform(io_orientation(image.affine), io_orientation(affine))
    data = apply_orientation(data, turn)
    moved = image.affine @ inv_ornt_aff(turn, image.shape[:3])
    corners = np.array([[i, j, k, 1] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)], dtype=np.float64).T
    apart = float(np.linalg.norm(((moved - affine) @ corners)[:3], axis=0).max())
    voxel = float(np.linalg.norm(np.asarray(affine)[:3, :3], axis=0).min())
    if tuple(data.shape) != tuple(shape) or apart > 0.1 * voxel:
        raise FileProblem(path, f"label volume is not on its image's grid (shape {tuple(data.shape)} vs "
                                f"{tuple(shape)}, voxels up to {apart:.2f} mm apart)",
                          "save the label on the image's own grid (same size and affine; e.g. draw it "
                          "on the converted series in ITK-SNAP or 3D Slicer)")
    return np.ascontiguousarray(data)


def nifti_scan(path: Path, channel: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A NIfTI file -> (its voxels (X, Y, Z) with the header's scaling applied, channel `channel`
    of a 4D file; its 4 x 4 affine). A damaged file, or NaN or inf voxels, is one line naming it."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        voxels = _one_channel(np.asanyarray(image.dataobj), path, channel)
    except _nib_errors() as exc:
        raise FileProblem(path, f"unreadable or truncated NIfTI file ({exc})") from None
    check_finite(voxels, path)
    return voxels, np.asarray(image.affine, np.float64)


def _one_channel(volume: np.ndarray, path: Path, channel: int) -> np.ndarray:
    if volume.ndim == 4 and channel < volume.shape[3]:
        return volume[..., channel]
    if volume.ndim != 3:
        raise FileProblem(path, f"volume has shape {volume.shape}; expected a 3D volume"
                                + (f" (or a 4D one with channel {channel})" if volume.ndim == 4 else ""))
    return volume


def read_label_volume(path: Path) -> np.ndarray:
    """A NIfTI label map -> int64 (X, Y, Z) label values; non-integer values are one line."""
    volume = _one_channel(read_volume(path), path, 0)
    if not np.all(np.mod(volume, 1) == 0):
        raise FileProblem(path, "label volume holds non-integer values; save class labels")
    return volume.astype(np.int64)


def save_nifti(values: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """Write (X, Y, Z) values (a mask, a label map) as NIfTI on the grid `affine` places."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(values, affine), str(path))
    return path


def check_labels(label: np.ndarray, path: Path, declared: set[int]) -> None:
    """Labels must be integers declared in dataset.json (a float or stray value means a wrong file)."""
    values = np.unique(label)
    if not np.all(np.mod(values, 1) == 0):
        raise FileProblem(path, "label volume holds non-integer values; expected integer class labels")
    stray = sorted(int(v) for v in values if int(v) not in declared)
    if declared and stray:
        raise FileProblem(path, f"label values {stray[:6]} are not declared in dataset.json labels "
                                f"{sorted(declared)}")


def check_finite(volume: np.ndarray, path: Path) -> None:
    """NaN or inf voxels are the file's fault, said before any teacher or student sees them
    (normalising would spread them over the whole volume)."""
    bad = volume.size - int(np.count_nonzero(np.isfinite(volume)))
    if bad:
        raise FileProblem(path, f"holds {bad} non-finite voxel(s) (NaN or inf); replace them (e.g. "
                                "with the background value) or leave the case out (skip_bad)")


def slice_at(k: int, axis: int) -> tuple[int | slice, ...]:
    """Index of slice k along axis (0-2) of a 3D volume. Basic indexing gives a view: `take` copies
    through a path that is ~100x slower on the Fortran-ordered arrays nibabel returns."""
    index: list[int | slice] = [slice(None)] * 3
    index[axis] = k
    return tuple(index)


def orientation(affine: np.ndarray, to: str, assume: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """nibabel orientation transforms (forward, back) that turn stored voxels to the axis codes
    `to` ("PRS": axis 0 runs to posterior, 1 to the right, 2 to superior) and back; the stored
    axes' codes come from the affine, or are `assume`d (the header ignored)."""
    from nibabel import orientations as ornt

    start = ornt.axcodes2ornt(tuple(assume)) if assume else ornt.io_orientation(affine)
    end = ornt.axcodes2ornt(tuple(to))
    return ornt.ornt_transform(start, end), ornt.ornt_transform(end, start)


def reorient(array: np.ndarray, transform: np.ndarray | None) -> np.ndarray:
    """The first three axes of `array` permuted and flipped by a transform from `orientation`
    (a view: nothing is copied); None leaves it as it is."""
    from nibabel.orientations import apply_orientation

    return array if transform is None else apply_orientation(array, transform)


def select(label: np.ndarray, labels: tuple[int, ...] | None) -> np.ndarray:
    """Label volume/slice -> uint8 foreground: any label > 0, or the chosen label values."""
    hit = label > 0 if labels is None else np.isin(label, labels)
    return hit.astype(np.uint8)


def label_map(label: np.ndarray, classes: tuple[tuple[int, ...], ...] | None) -> np.ndarray:
    """Label volume/slice -> uint8 label map: value k + 1 where the label is one of classes[k],
    0 elsewhere; classes None = binary, any label > 0 is 1."""
    if classes is None:
        return select(label, None)
    out = np.zeros(label.shape, np.uint8)
    for k, values in enumerate(classes):
        out[np.isin(label, values)] = k + 1
    return out


def foreground_slices(path: Path, axis: int, labels: tuple[int, ...] | None) -> list[bool]:
    """Per slice along `axis`: does it hold foreground? Cached per label-file version (decoding a
    large label volume takes seconds, the answer is a few hundred booleans)."""
    def compute() -> str:
        fg = select(read_volume(path), labels)
        other = tuple(a for a in range(fg.ndim) if a != axis)
        return json.dumps([bool(b) for b in fg.any(axis=other)])

    return json.loads(cached_fact(f"fgslices:v1:{axis}:{labels}:{file_key(path)}", compute))
