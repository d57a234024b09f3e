"""DICOM-SEG out: a predicted label volume as a DICOM segmentation of its source series (highdicom).

The SEG keeps the source's patient and study (StudyInstanceUID, so PACS files it beside the
images), refers to every source slice by its SOPInstanceUID, and is a new series (a new
SeriesInstanceUID and SOPInstanceUID each time). Segment k is class k of the student (label value
k), marked as an automatic result of the featcache student. Viewers that read DICOM-SEG (OHIF,
3D Slicer, the PACS) show it over the images.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from featcache.data.dicom import DicomSeries, read_headers
from featcache.errors import DatasetError
from featcache.version import __version__

ALGORITHM = "featcache student"
SEG_SERIES_OFFSET = 1000  # SeriesNumber of the SEG: the source's plus this (a viewer's sort order)
_CATEGORY = ("91723000", "SCT", "Anatomical Structure")  # SNOMED CT, as DICOM CID 7150 lists it


def _segments(class_names: tuple[str, ...], run_name: str) -> list:
    import highdicom as hd
    from highdicom.sr import CodedConcept

    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM, version=__version__, family=CodedConcept("123110", "DCM", "Artificial Intelligence"),
        source=run_name[:64] or None)
    segments = []
    for number, name in enumerate(class_names, start=1):
        # The student knows its classes by name only: a local code ("99" schemes are private by
        # the DICOM standard) says which class, the label says it to the reader.
        kind = CodedConcept(f"FC{number}", "99FEATCACHE", name[:64] or f"class {number}")
        segments.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name[:64] or f"class {number}",
            segmented_property_category=CodedConcept(*_CATEGORY), segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm))
    return segments


def write_dicom_seg(label_map: np.ndarray, series: DicomSeries, class_names: tuple[str, ...], path: Path,
                    run_name: str = "") -> Path:
    """Write `label_map` (columns, rows, slices) on `series`' grid, values 0..len(class_names), as a
    DICOM-SEG at `path` (written whole, then moved into place). Returns the path."""
    import highdicom as hd

    label_map = np.asarray(label_map)
    if tuple(label_map.shape) != tuple(series.shape):
        raise DatasetError(f"{path}: label map {label_map.shape} is not on the series' grid {series.shape}")
    if label_map.size and int(label_map.max()) > len(class_names):
        raise DatasetError(f"{path}: label map holds value {int(label_map.max())}; classes are "
                           f"1..{len(class_names)}")
    sources = read_headers(series)
    frames = np.ascontiguousarray(label_map.transpose(2, 1, 0).astype(np.uint8))  # (slices, rows, cols)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=_segments(tuple(class_names), run_name), series_instance_uid=hd.UID(),
        series_number=_series_number(sources[0]), sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="featcache", manufacturer_model_name=ALGORITHM, software_versions=__version__,
        device_serial_number="none", series_description=f"{ALGORITHM} segmentation"[:64],
        content_label="FEATCACHE", content_description=(run_name or ALGORITHM)[:64],
        omit_empty_frames=bool(label_map.any()))  # an empty SEG still needs one frame
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        seg.save_as(partial, enforce_file_format=True)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _series_number(source) -> int:
    try:
        return int(source.get("SeriesNumber") or 0) + SEG_SERIES_OFFSET
    except (TypeError, ValueError):
        return SEG_SERIES_OFFSET
