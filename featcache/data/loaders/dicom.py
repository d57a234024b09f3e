"""`dicom`: DICOM series as a hospital exports them, one folder per case, sliced to 2D like `msd`.

Layout (docs/data-dicom.md draws it):
  ROOT/images/<case>/...        one image series per case: its DICOM files, in any subfolders and
                                under any names (slices are ordered by position, see data/dicom.py)
  ROOT/labels/<case>.nii.gz     the case's label volume on the series' grid (any axis order or
                                direction of it: dcm2niix, ITK-SNAP and 3D Slicer exports all fit)
  ROOT/labels/<case>.dcm        or a DICOM-SEG of the series
  ROOT/dataset.json             optional: {"labels": {"0": "background", "1": "liver"}} names the
                                label values (and maps DICOM-SEG segments to them by SegmentLabel)
Without dataset.json a DICOM-SEG's segment numbers are the label values and its SegmentLabels
their names; NIfTI label values go unnamed.

Options (besides seed, fractions, skip_bad), as for `msd`:
- axis (2): slice k is volume[..., k] for axis 2 (the series' own slices); the volume is (columns,
  rows, slices), so a slice is the DICOM image transposed (NIfTI's voxel order, data/dicom.py).
- labels (None): None = binary, any foreground; a label (value or name) = binary, that structure;
  a list = multi-class in that order; a list inside the list merges labels into one class.
- window (None): CT series default to (-160, 240) HU; an explicit [lo, hi] applies to any modality.
  Other modalities are scaled by the volume's percentiles (default 1, 99) of its non-zero voxels.
- empty_slices ("balanced"): "balanced", "all", "none" or a fraction, as for `msd`.
Split: by case (a case folder is one patient's series), drawn by seed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featcache.data.base import assign_splits, safe_id
from featcache.data.dicom import (
    SEG_SUFFIX,
    DicomSeries,
    one_series,
    read_labels_on,
    read_series,
    seg_segments,
)
from featcache.data.digest import cached_fact, digest_files, file_key
from featcache.data.files import FileProblem
from featcache.data.loaders.msd import MSDSlices, volume_slices
from featcache.data.loaders.msd_config import (
    MSDConfig,
    declared_labels,
    read_dataset_json,
    resolve_classes,
    slice_config,
    stored_labels,
)
from featcache.data.options import fingerprint_options, locate, require_root, resolve_options
from featcache.data.readers import Scan
from featcache.data.screen import raise_first, screen
from featcache.data.volumes import check_labels, nifti_stem, select
from featcache.errors import DatasetError

EXPECTED = ("a folder with images/<case>/ (one DICOM series per case) and labels/<case>.nii.gz or "
            "labels/<case>.dcm (DICOM-SEG)")
DEFAULTS: dict[str, Any] = {"axis": 2, "labels": None, "window": None, "percentiles": (1.0, 99.0),
                            "empty_slices": "balanced"}


@dataclass(frozen=True)
class DicomCase:
    id: str
    folder: Path
    series: DicomSeries
    label: Path
    seg_values: tuple[tuple[int, int], ...] = ()  # DICOM-SEG: (segment number, label value)

    @property
    def is_seg(self) -> bool:
        return self.label.name.lower().endswith(SEG_SUFFIX)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.series.spacing


class DicomSlices(MSDSlices):
    name = "dicom"
    modality = "CT / MR / PT (per series)"
    reader = "dicom"  # its recipe's reader: a series folder (data/readers.py READERS)

    def __init__(self, samples: list, volumes: dict[str, DicomCase], config: MSDConfig,
                 options: dict[str, Any]) -> None:
        super().__init__(samples, volumes, config, options)  # type: ignore[arg-type]
        self._case_digests: dict[str, str] = {}

    def _decode(self, vid: str) -> tuple[Scan, np.ndarray]:
        case = self.case(vid)
        image, label = load_case(case, self.config)
        return Scan(case.folder, image, case.series.affine_array), label

    def case(self, vid: str) -> DicomCase:
        return self.volumes[vid]  # type: ignore[return-value]

    def content_digest(self, index: int) -> str:
        """The bytes of every file of the case (series and label), and the slice."""
        info = self.samples[index]
        vid = info.meta["volume"]
        if vid not in self._case_digests:
            case = self.case(vid)
            self._case_digests[vid] = digest_files([*case.series.paths, case.label])
        return hashlib.sha256(f"{self._case_digests[vid]}\0slice {info.meta['slice']}".encode()).hexdigest()


def load_case(case: DicomCase, config: MSDConfig) -> tuple[np.ndarray, np.ndarray]:
    """Decode one case -> image (columns, rows, slices) of modality values, label on its grid."""
    image = read_series(case.series)
    label = read_labels_on(case.label, case.series, dict(case.seg_values))
    check_labels(label, case.label, set(config.declared_labels))
    return image, label


def _foreground(case: DicomCase, config: MSDConfig) -> list[bool]:
    """Per slice along the axis: does it hold foreground? Cached per label file and series grid."""
    def compute() -> str:
        _, label = load_case(case, config)
        fg = select(label, config.foreground)
        other = tuple(a for a in range(3) if a != config.axis)
        return json.dumps([bool(b) for b in fg.any(axis=other)])

    grid = hashlib.sha256(case.series.to_json().encode()).hexdigest()
    key = f"dicomfg:v1:{config.axis}:{config.foreground}:{case.seg_values}:{file_key(case.label)}:{grid}"
    return json.loads(cached_fact(key, compute))


def _label_files(root: Path) -> dict[str, Path]:
    """case -> label file (labels/<case>.nii.gz, .nii or .dcm); hidden files ignored."""
    folder = root / "labels"
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        stem = nifti_stem(path) or (path.name[: -len(SEG_SUFFIX)]
                                    if path.name.lower().endswith(SEG_SUFFIX) else None)
        if stem:
            found[stem] = path
    return found


def discover(root: Path) -> tuple[list[DicomCase], list[FileProblem]]:
    """-> (cases with one series and a label, in case order; pairing and series problems)."""
    labels = _label_files(root)
    folders = sorted(p for p in (root / "images").iterdir() if p.is_dir() and not p.name.startswith("."))
    problems = [FileProblem(labels[c], "label without a case folder in images/")
                for c in sorted(set(labels) - {f.name for f in folders})]
    cases = []
    for folder in folders:
        if folder.name not in labels:
            problems.append(FileProblem(folder, f"case without a label: expected labels/{folder.name}"
                                                ".nii.gz or labels/{folder.name}.dcm (DICOM-SEG)"))
            continue
        try:
            cases.append(DicomCase(safe_id(folder.name), folder, one_series(folder), labels[folder.name]))
        except FileProblem as problem:
            problems.append(problem)
    return cases, problems


def _seg_values(case: DicomCase, declared: dict[int, str]) -> DicomCase:
    """A DICOM-SEG case with its segments mapped to label values: by SegmentLabel when dataset.json
    names the labels, else each segment's number is its value."""
    segments = seg_segments(case.label)
    if not declared:
        return DicomCase(**{**case.__dict__, "seg_values": tuple((n, n) for n in sorted(segments))})
    by_name = {name.lower(): value for value, name in declared.items()}
    unknown = [f"{n} {name!r}" for n, name in sorted(segments.items()) if name.lower() not in by_name]
    if unknown:
        raise FileProblem(case.label, f"segment {unknown[0]} is not a label of dataset.json "
                                      f"({', '.join(sorted(by_name))})",
                          "name it in dataset.json's labels, or rename the segment")
    values = tuple((n, by_name[name.lower()]) for n, name in sorted(segments.items()))
    return DicomCase(**{**case.__dict__, "seg_values": values})


def _declared(root: Path, cases: list[DicomCase], problems: list[FileProblem]
              ) -> tuple[dict[int, str], list[DicomCase]]:
    """The label names (dataset.json's, else the DICOM-SEGs' SegmentLabels), and the cases with
    their segment mapping; a SEG whose segments do not fit is a problem of that case."""
    path = root / "dataset.json"
    declared = declared_labels(read_dataset_json(path), path) if path.is_file() else {}
    named: dict[int, tuple[str, Path]] = {}
    kept = []
    for case in cases:
        try:
            case = _seg_values(case, declared) if case.is_seg else case
        except FileProblem as problem:
            problems.append(problem)
            continue
        if case.is_seg and not declared:
            for number, name in seg_segments(case.label).items():
                first = named.setdefault(number, (name, case.label))
                if first[0].lower() != name.lower():
                    raise DatasetError(f"dicom: segment {number} is {first[0]!r} in {first[1]} but {name!r} "
                                       f"in {case.label}; add a dataset.json naming the labels, so "
                                       "segments are matched by name")
        kept.append(case)
    if named:
        declared = {0: "background", **{n: name for n, (name, _) in sorted(named.items())}}
    return declared, kept


def _modality(cases: list[DicomCase]) -> str:
    seen: dict[str, str] = {}
    for case in cases:
        seen.setdefault(case.series.modality, case.id)
    if len(seen) > 1:
        mixed = ", ".join(f"{m} in {c}" for m, c in seen.items())
        raise DatasetError(f"dicom: the cases mix modalities ({mixed}); the intensity window is one per "
                           "dataset: give each modality its own root")
    return next(iter(seen), "unknown")


SUMMARY = ("DICOM series: images/<case>/ (one series each) + labels/<case>.nii.gz or .dcm "
           "(DICOM-SEG), 2D slices, split by case")


def build_dicom(root: Path | None, **options: Any) -> DicomSlices:
    opts = resolve_options("dicom", options, DEFAULTS)
    root = locate("dicom", require_root("dicom", root, EXPECTED), ("images",), EXPECTED)
    cases, problems = discover(root)
    declared, cases = _declared(root, cases, problems)
    config = slice_config("dicom", root.name, (_modality(cases),), declared, {**opts, "channel": 0},
                          resolve_classes(opts["labels"], declared, "dicom"))
    if not opts["skip_bad"]:
        raise_first(problems)
        skipped: list[dict[str, str]] = []
    else:
        skipped = [p.record() for p in problems]
        cases, bad = screen(cases, lambda c: (*c.series.paths, c.label), lambda c: load_case(c, config),
                            salt=f"dicom:{sorted(declared.items())}")
        skipped += bad
    split_of = assign_splits([c.id for c in cases], opts["seed"], opts["fractions"])
    samples = [s for c in cases for s in volume_slices(c, split_of[c.id], config, opts["seed"],  # type: ignore[arg-type]
                                                       _foreground(c, config))]
    if not samples:
        raise DatasetError(f"dicom: no slices to use in {root}"
                           + (f"; {len(skipped)} case(s) skipped" if skipped else ""))
    stored = fingerprint_options({**opts, "window": config.window, "labels": stored_labels(config.classes)})
    dataset = DicomSlices(samples, {c.id: c for c in cases}, config, stored)
    dataset.skipped = skipped
    return dataset
