"""Tiny synthetic DICOM series written with pydicom, for the DICOM reader, loader and SEG tests.

`write_series` writes a volume of modality values (columns, rows, slices) as one file per slice,
stored values = (value - intercept) / slope, with file names shuffled so that name order is not
slice order. The geometry is given in DICOM's own terms (LPS+ mm): the row and column directions,
the first slice's position and the spacings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

AXIAL = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))


def oblique_orientation(degrees_a: float = 20.0, degrees_b: float = 15.0) -> tuple[tuple[float, ...], ...]:
    """Row and column directions of a double-oblique plane (orthonormal)."""
    a, b = np.radians(degrees_a), np.radians(degrees_b)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rot = rx @ rz
    return tuple(float(v) for v in rot[:, 0]), tuple(float(v) for v in rot[:, 1])


def patient_study(study_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Synthetic", "P001", "", "O"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.StudyID, ds.StudyDate, ds.StudyTime = "1", "20250101", "120000"
    ds.ReferringPhysicianName, ds.AccessionNumber = "", ""
    return ds


def slice_dataset(pixels: np.ndarray, position, orientation, pixel_spacing, base: Dataset, *,
                  modality: str, series_uid: str, frame_uid: str, number: int,
                  slope: float, intercept: float, series_number: int = 3) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.update(base)
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = modality, series_uid, series_number
    ds.FrameOfReferenceUID, ds.InstanceNumber = frame_uid, number
    ds.Manufacturer, ds.SeriesDescription = "synthetic", "synthetic series"
    ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*orientation[0], *orientation[1])]
    ds.PixelSpacing = [f"{v:.6f}" for v in pixel_spacing]
    ds.SliceThickness = "1.0"
    if modality == "CT" or slope != 1.0 or intercept != 0.0:
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = f"{slope:g}", f"{intercept:g}", "HU"
    ds.set_pixel_data(pixels, "MONOCHROME2", 16)
    return ds


def write_series(folder: Path, values: np.ndarray, *, modality: str = "CT", slope: float = 1.0,
                 intercept: float = -1024.0, orientation=AXIAL, origin=(-10.0, -20.0, 30.0),
                 spacing=(0.7, 0.8, 2.5), seed: int = 0, study_uid: str | None = None,
                 series_uid: str | None = None, series_number: int = 3) -> list[Path]:
    """`values` (columns, rows, slices) of modality values -> one file per slice in `folder`,
    names shuffled; `spacing` is (between columns, between rows, between slices) in mm. Returns
    the files in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    row, col = np.array(orientation[0]), np.array(orientation[1])
    normal = np.cross(row, col)
    stored = np.round((values - intercept) / slope)
    dtype = np.uint16 if stored.min() >= 0 else np.int16
    base = patient_study(study_uid)
    series_uid, frame_uid = series_uid or generate_uid(), generate_uid()
    names = np.random.default_rng(seed).permutation(values.shape[2])
    files = []
    for k in range(values.shape[2]):
        position = np.array(origin) + k * spacing[2] * normal
        ds = slice_dataset(np.ascontiguousarray(stored[:, :, k].T.astype(dtype)), position, orientation,
                           (spacing[1], spacing[0]), base, modality=modality, series_uid=series_uid,
                           frame_uid=frame_uid, number=k + 1, slope=slope, intercept=intercept,
                           series_number=series_number)
        path = folder / f"IM{series_number}_{names[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def ras_affine(orientation=AXIAL, origin=(-10.0, -20.0, 30.0), spacing=(0.7, 0.8, 2.5)) -> np.ndarray:
    """The NIfTI affine of a series written by write_series, worked out from its geometry alone:
    voxel (column, row, slice) -> RAS+ mm (DICOM's LPS+ with x and y negated)."""
    row, col = np.array(orientation[0]), np.array(orientation[1])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = row * spacing[0], col * spacing[1]
    lps[:3, 2], lps[:3, 3] = np.cross(row, col) * spacing[2], origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def flip_rows(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same grid stored with its row axis reversed, as dcm2niix writes it."""
    flip = np.eye(4)
    flip[1, 1], flip[1, 3] = -1.0, data.shape[1] - 1
    return np.ascontiguousarray(data[:, ::-1, :]), affine @ flip


def ramp_volume(shape=(16, 12, 5), seed: int = 0) -> np.ndarray:
    """Modality values (HU-like, -1000..1000) that differ at every voxel, so order errors show."""
    rng = np.random.default_rng(seed)
    return np.round(rng.uniform(-1000, 1000, size=shape)).astype(np.float64)
