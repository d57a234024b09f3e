"""Which files `featcache predict` reads from --input, what it names each one's outputs, and where
its ground truth is in --masks.

Any file a registered reader opens (data/readers.py: images, NIfTI volumes, ...) is an input;
how it is read is the run's recipe's business (data/serving.py). Labs name files as their tools
do: a folder of nnU-Net images (every name CASE_XXXX.ext, XXXX the 4-digit channel) gives one
input per case, the channel file the student was trained on, named CASE, paired with the label
CASE.ext that nnU-Net's labelsTr holds. A folder of DICOM files gives one input per image series
(see dicom_inputs), its ground truth a NIfTI label or a DICOM-SEG named like it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from featcache.data.dicom import SEG_SUFFIX, DicomSeries, looks_like_dicom, scan_folder
from featcache.data.readers import READERS, readers_for
from featcache.data.volumes import NIFTI_SUFFIXES
from featcache.errors import DatasetError

_NNUNET = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class Input:
    path: Path
    name: str  # what its outputs are called: the file's stem, or the nnU-Net case
    series: DicomSeries | None = None  # a DICOM input: the series (path is a folder holding it)


def input_stem(path: Path) -> str:
    """File name without its suffix ('ct.nii.gz' -> 'ct'); a folder's whole name."""
    name = path.name
    if path.is_dir():
        return name
    for suffix in sorted({s for r in READERS.values() for s in r.suffixes}, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _supported(path: Path) -> bool:
    return not path.name.startswith(".") and bool(readers_for(path)) and (path.is_file() or path.is_dir())


def _known() -> str:
    return ", ".join(sorted(r.summary.split(" (")[0] for r in READERS.values()))


def _nnunet_names(paths: list[Path], channel: int) -> list[Input] | None:
    """nnU-Net's naming: every file CASE_XXXX -> the files of `channel`, named CASE; else None."""
    found = [(_NNUNET.match(input_stem(p)), p) for p in paths]
    if not found or not all(m for m, _ in found):
        return None
    return [Input(p, m["case"]) for m, p in found if int(m["channel"]) == channel]


def list_inputs(source: Path, channel: int = 0) -> list[Input]:
    """A supported file, or the supported entries directly inside a folder (sorted); nnU-Net
    CASE_XXXX files are cases (see the module docstring)."""
    source = Path(source)
    if source.is_file():
        if not _supported(source):
            raise DatasetError(f"{source}: unsupported file type; featcache reads {_known()}")
        named = _nnunet_names([p for p in source.parent.iterdir() if p.is_file() and _supported(p)], channel)
        case = next((i.name for i in named or [] if i.path == source), None)
        return [Input(source, case or input_stem(source))]
    if not source.is_dir():
        raise DatasetError(f"input {source} does not exist")
    files = sorted(p for p in source.iterdir() if _supported(p))
    if not any(p.is_file() for p in files) and looks_like_dicom(source):
        return dicom_inputs(source)
    if not files:
        raise DatasetError(f"{source} holds no files featcache reads ({_known()})")
    inputs = _nnunet_names(files, channel) or [Input(p, input_stem(p)) for p in files]
    names = [i.name for i in inputs]
    clashes = sorted({s for s in names if names.count(s) > 1})
    if clashes:
        raise DatasetError(f"{source}: several inputs share the name {clashes[0]!r} (e.g. .png and .jpg); "
                           "outputs would overwrite each other, rename one")
    return inputs


def _tag(series: DicomSeries) -> str:
    return f"s{series.number}" if series.number is not None else series.series_uid.rsplit(".", 1)[-1]


def dicom_inputs(source: Path) -> list[Input]:
    """Every image series under a folder of DICOM files, one input each, named by the folder
    that holds it: `source` itself when it holds one series, else its subfolder (a case folder);
    series sharing a folder add their SeriesNumber (`study_s3`)."""
    found = scan_folder(source).series
    if not found:
        raise DatasetError(f"{source} holds DICOM files but no image series (CT, MR, PET...)")
    if len(found) == 1:
        return [Input(source, source.name, found[0])]
    base = source.resolve()
    tops = [Path(s.files[0]).relative_to(base).parts for s in found]
    tops = [parts[0] if len(parts) > 1 else "" for parts in tops]
    inputs = [Input(source / top if top else source,
                    top if top and tops.count(top) == 1 else f"{top or source.name}_{_tag(s)}", s)
              for s, top in zip(found, tops, strict=True)]
    names = [i.name for i in inputs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DatasetError(f"{source}: several series would be named {twice[0]!r}; put each series in "
                           "a folder of its own")
    return sorted(inputs, key=lambda i: i.name)


def find_mask(masks_dir: Path | None, item: Input) -> Path | None:
    """The ground truth of an input in masks_dir: a file named like its output (the case, for
    nnU-Net inputs) or like the input itself, in any supported format (a DICOM input's: NAME.nii.gz,
    NAME.nii or a DICOM-SEG NAME.dcm)."""
    if masks_dir is None:
        return None
    suffixes = sorted({s for r in READERS.values() for s in r.suffixes}, key=len, reverse=True)
    if item.series is not None:
        suffixes = [*NIFTI_SUFFIXES, SEG_SUFFIX]
    for stem in dict.fromkeys((item.name, input_stem(item.path))):
        for suffix in suffixes:
            for candidate in (masks_dir / f"{stem}{suffix}", masks_dir / f"{stem}{suffix.upper()}"):
                if candidate.is_file():
                    return candidate
    return None
