"""DICOM in: the one module that reads DICOM (pydicom for images, highdicom for DICOM-SEG labels).

A folder (searched recursively) is grouped into series by SeriesInstanceUID. A series' slices are
ordered by ImagePositionPatient projected on the slice normal (the cross product of the row and
column directions of ImageOrientationPatient), never by file name or InstanceNumber, and stored
values become modality values (HU for CT) through RescaleSlope and RescaleIntercept, slice by slice.

The volume follows NIfTI's convention: voxel (i, j, k) is column i, row j of the k-th slice along
the normal, so `volume[:, :, k]` is slice k transposed (what dcm2niix writes, up to flips). The
affine maps (i, j, k, 1) to RAS+ millimetres, as nibabel expects: DICOM's patient coordinates are
LPS+, so the first two rows of the LPS affine change sign.

Bad input is one line naming the file and what to do: a file that is not DICOM, slices of different
sizes or orientations in one series, missing position tags, a series with a gap, duplicate
positions or uneven spacing, multi-frame or colour images, pixel data pydicom cannot decode.
Files named DICOMDIR and hidden files are passed over; DICOM objects that are not image slices
(DICOM-SEG, structured reports, RT structure sets...) are listed in `DicomFolder.other`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featcache.data.digest import cached_fact, file_key
from featcache.data.files import FileProblem
from featcache.data.recipe import Labels

SKIPPED_NAMES = ("DICOMDIR",)
SEG_SUFFIX = ".dcm"  # a DICOM-SEG label file beside NIfTI ones (labels/<case>.dcm)
DECOMPRESS_HINT = ("install a decoder pydicom can use (`pip install pylibjpeg pylibjpeg-libjpeg "
                   "pylibjpeg-openjpeg`, or python-gdcm), or decompress the series first "
                   "(`gdcmconv --raw IN OUT`, or dcmtk's `dcmdjpeg IN OUT`)")
_SCAN_VERSION = "v2"  # bump when a geometry rule changes, so cached scans are recomputed


@dataclass(frozen=True)
class DicomSeries:
    """One image series: its files in slice order, its grid, and the UIDs a DICOM-SEG refers to."""

    files: tuple[str, ...]  # absolute paths, slice k = files[k]
    shape: tuple[int, int, int]  # (columns, rows, slices)
    affine: tuple[tuple[float, ...], ...]  # 4x4, voxel (i, j, k) -> RAS+ mm
    modality: str  # DICOM Modality: CT, MR, PT...
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sop_class_uid: str
    sop_instance_uids: tuple[str, ...]  # in slice order
    description: str = ""
    number: int | None = None  # SeriesNumber, when the files give one

    @property
    def affine_array(self) -> np.ndarray:
        return np.array(self.affine, dtype=np.float64)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """mm per voxel along i, j, k (the affine's column norms, as nibabel's zooms)."""
        norms = np.linalg.norm(self.affine_array[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))

    @property
    def paths(self) -> list[Path]:
        return [Path(f) for f in self.files]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> DicomSeries:
        data = json.loads(text)
        return cls(**{k: _tuples(v) for k, v in data.items()})


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@dataclass(frozen=True)
class DicomFolder:
    series: tuple[DicomSeries, ...]  # image series, largest first
    other: tuple[tuple[str, str], ...]  # (path, what it is): DICOM objects that are not image slices


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = re.sub(r"\s+", " ", str(exc)).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read(path: Path, pixels: bool) -> Any:
    """pydicom's dataset of one file; a file that is not DICOM is one line naming it."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except InvalidDicomError:
        raise FileProblem(path, "not a DICOM file (no DICM marker)",
                          "move it out of the DICOM folder") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise FileProblem(path, f"unreadable DICOM file ({_one_line(exc)})",
                          "re-export it from the PACS, or move it out of the folder") from None


def _dicom_files(folder: Path) -> list[Path]:
    """Every file under `folder` (recursively), sorted; hidden files and DICOMDIR are passed over."""
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts)
                  and p.name.upper() not in SKIPPED_NAMES)


def _float_list(ds: Any, keyword: str, count: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    try:
        values = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        values = np.array([])
    if values.shape != (count,) or not np.all(np.isfinite(values)):
        raise FileProblem(path, f"missing or malformed {keyword} ({value!r})",
                          "a slice needs ImagePositionPatient, ImageOrientationPatient and PixelSpacing "
                          "to be placed in a volume; re-export the series with them")
    return values


@dataclass(frozen=True)
class _Slice:
    path: Path
    position: np.ndarray  # ImagePositionPatient, LPS mm
    orientation: np.ndarray  # ImageOrientationPatient: row direction, then column direction
    pixel_spacing: np.ndarray  # (between rows, between columns), mm
    size: tuple[int, int]  # (rows, columns)
    sop_uid: str


def _image_slice(ds: Any, path: Path) -> _Slice:
    """The geometry of one single-frame greyscale slice; anything else is one line."""
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise FileProblem(path, f"multi-frame image ({ds.NumberOfFrames} frames in one file)",
                          "featcache reads single-frame series; convert it (e.g. dcm2niix, or dcm4che's "
                          "emf2sf) or export the series as one file per slice")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise FileProblem(path, f"colour image ({ds.get('PhotometricInterpretation', '?')})",
                          "featcache reads greyscale series (CT, MR, PET); move it out of the folder")
    return _Slice(path, _float_list(ds, "ImagePositionPatient", 3, path),
                  _float_list(ds, "ImageOrientationPatient", 6, path),
                  _float_list(ds, "PixelSpacing", 2, path), (int(ds.Rows), int(ds.Columns)),
                  str(ds.get("SOPInstanceUID", "")))


def _same_grid(slices: list[_Slice]) -> None:
    """Every slice of a series shares size, orientation and pixel spacing."""
    first = slices[0]
    for s in slices[1:]:
        if s.size != first.size:
            raise FileProblem(s.path, f"slice is {s.size[1]}x{s.size[0]} (columns x rows) but "
                                      f"{first.path.name} of the same series is "
                                      f"{first.size[1]}x{first.size[0]}",
                              "a series' slices share one size; move stray files (e.g. a localizer) out")
        if not np.allclose(s.orientation, first.orientation, atol=1e-4):
            raise FileProblem(s.path, f"ImageOrientationPatient differs from {first.path.name} of the "
                                      "same series", "a series must be one stack of parallel slices; move "
                                      "localizers or reformats into their own folder")
        if not np.allclose(s.pixel_spacing, first.pixel_spacing, rtol=1e-4):
            raise FileProblem(s.path, f"PixelSpacing {list(s.pixel_spacing)} differs from "
                                      f"{first.path.name}'s {list(first.pixel_spacing)}",
                              "a series' slices share one pixel spacing")


def _ordered(slices: list[_Slice]) -> tuple[list[_Slice], np.ndarray]:
    """Slices sorted along the normal, and the step between neighbours (LPS mm, a 3-vector); a
    duplicate position, a gap or uneven spacing is one line naming the file where it shows."""
    row, col = slices[0].orientation[:3], slices[0].orientation[3:]
    normal = np.cross(row, col)
    slices = sorted(slices, key=lambda s: float(s.position @ normal))
    if len(slices) == 1:
        return slices, normal
    depth = np.array([s.position @ normal for s in slices])
    steps = np.diff(depth)
    median = float(np.median(steps))
    for k, step in enumerate(steps):
        if step < 1e-3 * max(median, 1.0):
            raise FileProblem(slices[k + 1].path, f"lies at the same position as {slices[k].path.name} "
                                                  f"({depth[k]:.3f} mm along the slice normal)",
                              "a series holds one slice per position; put each echo, phase or time point "
                              "in its own folder, or remove the duplicate file")
    step_vector = (slices[-1].position - slices[0].position) / (len(slices) - 1)
    for k, s in enumerate(slices):
        off = float(np.linalg.norm(s.position - (slices[0].position + k * step_vector)))
        if off > 0.2 * median:
            gap = int(np.argmax(steps))
            if steps[gap] > 1.5 * median:
                raise FileProblem(slices[gap + 1].path, f"the series has a gap: {steps[gap]:.3f} mm from "
                                                        f"{slices[gap].path.name} to this slice, "
                                                        f"{median:.3f} mm between the others",
                                  "a slice file is missing; export the whole series again")
            raise FileProblem(s.path, f"slice spacing is uneven ({steps.min():.3f} to {steps.max():.3f} "
                                      "mm)", "featcache reads evenly spaced series; resample it first")
    return slices, step_vector


def _affine(slices: list[_Slice], step: np.ndarray, thickness: float) -> np.ndarray:
    """Voxel (column, row, slice) -> RAS+ mm. A single slice steps `thickness` along its normal."""
    first = slices[0]
    row, col = first.orientation[:3], first.orientation[3:]
    if len(slices) == 1:
        step = step * thickness  # `step` is the unit normal here
    lps = np.eye(4)
    lps[:3, 0] = row * first.pixel_spacing[1]  # along a row: the column index grows
    lps[:3, 1] = col * first.pixel_spacing[0]  # along a column: the row index grows
    lps[:3, 2] = step
    lps[:3, 3] = first.position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS


def _series(headers: list[tuple[Path, Any]]) -> DicomSeries:
    """One series from its (path, header) pairs, validated and in slice order."""
    slices = [_image_slice(ds, path) for path, ds in headers]
    _same_grid(slices)
    slices, step = _ordered(slices)
    ds = headers[0][1]
    thickness = abs(float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0))
    rows, cols = slices[0].size
    affine = _affine(slices, step, thickness)
    return DicomSeries(tuple(str(s.path.resolve()) for s in slices), (cols, rows, len(slices)),
                       tuple(tuple(float(v) for v in r) for r in affine),
                       str(ds.get("Modality", "") or "OT"), str(ds.get("StudyInstanceUID", "")),
                       str(ds.SeriesInstanceUID), str(ds.get("FrameOfReferenceUID", "")),
                       str(ds.get("SOPClassUID", "")), tuple(s.sop_uid for s in slices),
                       str(ds.get("SeriesDescription", "") or ""), _series_number(ds))


def _series_number(ds: Any) -> int | None:
    try:
        return int(ds.get("SeriesNumber"))
    except (TypeError, ValueError):
        return None


def _what(ds: Any) -> str | None:
    """None for an image slice; else what the object is (it holds no slice of a volume)."""
    modality = str(ds.get("Modality", "") or "")
    if modality == "SEG":
        return "DICOM-SEG segmentation"
    if "Rows" not in ds or "Columns" not in ds:
        return f"DICOM object without an image ({modality or 'no Modality'})"
    return None


def _scan(folder: Path, files: list[Path]) -> DicomFolder:
    groups: dict[str, list[tuple[Path, Any]]] = {}
    other = []
    for path in files:
        ds = _read(path, pixels=False)
        what = _what(ds)
        if what is not None:
            other.append((str(path), what))
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid:
            raise FileProblem(path, "has no SeriesInstanceUID", "re-export it from the PACS")
        groups.setdefault(uid, []).append((path, ds))
    series = sorted((_series(h) for h in groups.values()), key=lambda s: (-s.shape[2], s.series_uid))
    return DicomFolder(tuple(series), tuple(other))


def scan_folder(folder: Path) -> DicomFolder:
    """Every image series under `folder` (headers only; no pixel data is decoded). The result is
    cached per version of the folder's files (paths, sizes, times), so a repeat only stats them."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileProblem(folder, "is not a folder", "pass the folder holding the DICOM files")
    files = _dicom_files(folder)
    if not files:
        raise FileProblem(folder, "holds no files", "pass the folder holding the DICOM series")
    key = hashlib.sha256("\n".join(file_key(p) for p in files).encode()).hexdigest()

    def compute() -> str:
        found = _scan(folder, files)
        return json.dumps({"series": [s.to_json() for s in found.series], "other": found.other})

    data = json.loads(cached_fact(f"dicomscan:{_SCAN_VERSION}:{key}", compute))
    return DicomFolder(tuple(DicomSeries.from_json(s) for s in data["series"]),
                       tuple((str(p), str(w)) for p, w in data["other"]))


def looks_like_dicom(folder: Path, sample: int = 8) -> bool:
    """Does `folder` hold DICOM files (somewhere below it)? The first few files are checked for
    the DICM marker, nothing is parsed: cheap enough to ask of every folder in a listing."""
    if not Path(folder).is_dir():
        return False
    checked = 0
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.name.startswith(".") or path.name.upper() in SKIPPED_NAMES:
            continue
        try:
            with open(path, "rb") as fh:
                if fh.read(132)[128:] == b"DICM":
                    return True
        except OSError:
            pass
        checked += 1
        if checked >= sample:
            return False
    return False


def one_series(folder: Path) -> DicomSeries:
    """The one image series under `folder`; none or several is one line naming the folder."""
    found = scan_folder(folder)
    if len(found.series) == 1:
        return found.series[0]
    if not found.series:
        raise FileProblem(folder, "holds no DICOM image series", "give the folder of one CT, MR or PET "
                                                                 "series")
    listed = "; ".join(f"{s.description or s.series_uid} ({s.shape[2]} slices)" for s in found.series)
    raise FileProblem(folder, f"holds {len(found.series)} image series: {listed}",
                      "keep one series per folder (move localizers and other series out)")


def _pixels(ds: Any, path: Path) -> np.ndarray:
    """Decoded stored values (rows, columns); undecodable compressed data says what to install."""
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:  # pydicom's decoders raise RuntimeError, NotImplementedError, ValueError...
        if syntax is not None and syntax.is_compressed:
            raise FileProblem(path, f"compressed pixel data ({syntax.name}) that pydicom cannot decode "
                                    f"here ({_one_line(exc, 120)})", DECOMPRESS_HINT) from None
        raise FileProblem(path, f"unreadable pixel data ({_one_line(exc, 120)})",
                          "the file is damaged or truncated; export the series again") from None


def _rescale(ds: Any, path: Path) -> tuple[float, float]:
    try:
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    except (TypeError, ValueError):
        raise FileProblem(path, "malformed RescaleSlope or RescaleIntercept",
                          "re-export the series from the PACS") from None
    return slope, intercept


def read_series(series: DicomSeries) -> np.ndarray:
    """Decode a series -> float32 (columns, rows, slices) of modality values (HU for CT): each
    slice's stored values times its RescaleSlope plus its RescaleIntercept."""
    cols, rows, depth = series.shape
    volume = np.empty((cols, rows, depth), np.float32)
    for k, path in enumerate(series.paths):
        ds = _read(path, pixels=True)
        stored = _pixels(ds, path)
        if stored.shape != (rows, cols):
            raise FileProblem(path, f"pixel data is {stored.shape} (rows, columns); the header said "
                                    f"{(rows, cols)}", "the file changed since it was listed, or is damaged")
        slope, intercept = _rescale(ds, path)
        volume[:, :, k] = (stored.astype(np.float64) * slope + intercept).T
    return volume


def read_headers(series: DicomSeries) -> list[Any]:
    """pydicom datasets of the series' slices in slice order, without pixel data (what a DICOM-SEG
    writer needs to reference them)."""
    return [_read(path, pixels=False) for path in series.paths]


def read_folder(folder: Path) -> list[tuple[DicomSeries, np.ndarray]]:
    """Every image series under `folder` with its decoded volume (see read_series)."""
    found = scan_folder(folder)
    if not found.series:
        kinds = sorted({what for _, what in found.other})
        raise FileProblem(folder, "holds no DICOM image series" + (f" (only: {', '.join(kinds)})"
                                                                     if kinds else ""),
                          "pass the folder of a CT, MR or PET series")
    return [(s, read_series(s)) for s in found.series]


def seg_segments(path: Path) -> dict[int, str]:
    """A DICOM-SEG's segments, {SegmentNumber: SegmentLabel}, read from its header alone."""
    ds = _read(path, pixels=False)
    if str(ds.get("Modality", "")) != "SEG" or "SegmentSequence" not in ds:
        raise FileProblem(path, f"is not a DICOM-SEG (Modality {ds.get('Modality', '?')})",
                          "labels/<case>.dcm must be a DICOM segmentation of the case's series")
    return {int(item.SegmentNumber): str(item.get("SegmentLabel", "") or item.SegmentNumber)
            for item in ds.SegmentSequence}


def read_seg_labels(path: Path, series: DicomSeries, values: dict[int, int] | None = None) -> np.ndarray:
    """A DICOM-SEG of `series` -> int64 label volume (columns, rows, slices) on the series' grid:
    each segment's pixels get its SegmentNumber, or `values[number]` when given. Segments must not
    overlap (one label per voxel)."""
    import highdicom as hd

    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # highdicom and pydicom raise many types for a file that is not a SEG
        raise FileProblem(path, f"unreadable DICOM-SEG ({_one_line(exc, 120)})",
                          "export the segmentation again") from None
    referenced = {uid for _, series_uid, uid in seg.get_source_image_uids()
                  if series_uid == series.series_uid}
    if not referenced:
        raise FileProblem(path, f"does not refer to series {series.series_uid}",
                          "pair each case's images with the segmentation made on them")
    try:
        planes = seg.get_pixels_by_source_instance(list(series.sop_instance_uids), combine_segments=True,
                                                   assert_missing_frames_are_empty=True)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise FileProblem(path, f"cannot be laid on series {series.series_uid} "
                                f"({_one_line(exc, 120)})", "segments must not overlap and must "
                          "lie on the series' slices") from None
    labels = np.ascontiguousarray(np.asarray(planes, dtype=np.int64).transpose(2, 1, 0))
    if values:
        lookup = np.zeros(max(max(values), int(labels.max())) + 1, np.int64)
        for number, value in values.items():
            lookup[number] = value
        labels = lookup[labels]
    return labels


def read_labels_on(path: Path, series: DicomSeries, seg_values: dict[int, int] | None = None) -> np.ndarray:
    """A label file of `series` -> int64 label values on its grid (columns, rows, slices): a NIfTI
    volume on the series' grid in any axis order (volumes.read_on_grid), or a DICOM-SEG of it
    (segment numbers as values, or `seg_values[number]`)."""
    from featcache.data.volumes import read_on_grid

    if Path(path).name.lower().endswith(SEG_SUFFIX):
        return read_seg_labels(Path(path), series, seg_values)
    return read_on_grid(Path(path), series.affine_array, series.shape).astype(np.int64)


def seg_values_by_name(path: Path, labels: Labels) -> dict[int, int] | None:
    """A DICOM-SEG ground truth's segments as label values, matched by SegmentLabel to a recipe's
    class names; None (segment numbers are the values) for a NIfTI file, a binary recipe, or
    segments that do not all name a class."""
    if not Path(path).name.lower().endswith(SEG_SUFFIX) or labels.values is None:
        return None
    by_name = {name.lower(): values[0] for name, values in zip(labels.names, labels.values, strict=True)}
    segments = seg_segments(Path(path))
    if not all(label.lower() in by_name for label in segments.values()):
        return None
    return {number: by_name[label.lower()] for number, label in segments.items()}
