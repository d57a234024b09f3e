"""dataset.json of the nnU-Net v2 raw layout, and discovery of its cases.

The keys read: `channel_names` ({"0": "CT"} or {"0": "R", "1": "G", "2": "B"}), `labels` (name ->
integer value, background 0) and `file_ending` (".nii.gz", ".nii" or ".png"); `name` when present.
Region-based labels (a name mapped to a list of values, nnU-Net's `regions_class_order`) overlap,
so they cannot be one label map and are refused with a line saying so.
Cases: imagesTr/<case>_<XXXX><file_ending> (XXXX the 4-digit channel) and
labelsTr/<case><file_ending>.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featcache.data.files import FileProblem
from featcache.data.loaders.msd_config import read_dataset_json
from featcache.errors import DatasetError

FILE_ENDINGS = (".nii.gz", ".nii", ".png")
REQUIRED = ("channel_names", "labels", "file_ending")


@dataclass(frozen=True)
class NnunetJson:
    name: str
    channels: tuple[str, ...]  # channel names in channel order
    labels: dict[int, str]  # value -> name, background (0) included
    file_ending: str

    @property
    def is_2d(self) -> bool:
        return self.file_ending == ".png"


def _bad(path: Path, key: str, what: str) -> DatasetError:
    return DatasetError(f"{path}: key {key!r} {what}; see the nnU-Net v2 dataset format "
                        "(documentation/dataset_format.md)")


def _channels(raw: Any, path: Path) -> tuple[str, ...]:
    try:
        keys = sorted(raw, key=int)
    except (TypeError, ValueError):
        raise _bad(path, "channel_names", "must map channel numbers to names, e.g. {\"0\": \"CT\"}") \
            from None
    if not keys or [int(k) for k in keys] != list(range(len(keys))):
        raise _bad(path, "channel_names", "must number its channels 0, 1, 2, ...")
    return tuple(str(raw[k]) for k in keys)


def _labels(raw: Any, path: Path) -> dict[int, str]:
    if not isinstance(raw, dict) or not raw:
        raise _bad(path, "labels", "must map label names to integer values, e.g. {\"background\": 0}")
    regions = [name for name, v in raw.items() if isinstance(v, (list, tuple))]
    if regions:
        raise _bad(path, "labels", f"holds region-based labels ({', '.join(regions)}): they overlap "
                                   "and cannot form one label map; give each structure one value")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in raw.values()):
        raise _bad(path, "labels", "must map label names to integer values, e.g. {\"background\": 0}")
    values = list(raw.values())
    if len(set(values)) != len(values):
        raise _bad(path, "labels", "gives two names the same value")
    if 0 not in values:
        raise _bad(path, "labels", "has no background (a label with value 0)")
    return {int(v): str(k) for k, v in raw.items()}


def read_nnunet_json(root: Path) -> NnunetJson:
    """dataset.json -> NnunetJson; a missing or malformed key is one line naming it."""
    path = root / "dataset.json"
    data = read_dataset_json(path)
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise _bad(path, missing[0], "is missing")
    ending = data["file_ending"]
    if ending not in FILE_ENDINGS:
        raise _bad(path, "file_ending", f"is {ending!r}; featcache reads {', '.join(FILE_ENDINGS)}")
    return NnunetJson(str(data.get("name", root.name)), _channels(data["channel_names"], path),
                      _labels(data["labels"], path), ending)


def _cases(folder: Path, suffix: str) -> dict[str, Path]:
    """case -> file for the files of `folder` ending in `suffix` (hidden files ignored)."""
    if not folder.is_dir():
        return {}
    return {p.name[: -len(suffix)]: p for p in sorted(folder.iterdir())
            if p.is_file() and p.name.endswith(suffix) and not p.name.startswith(".")
            and len(p.name) > len(suffix)}


def find_cases(root: Path, meta: NnunetJson, channel_file: int
               ) -> tuple[list[tuple[str, Path, Path]], list[FileProblem]]:
    """(case, image file of the chosen channel, label file) sorted by case, and pairing problems."""
    images = _cases(root / "imagesTr", f"_{channel_file:04d}{meta.file_ending}")
    labels = _cases(root / "labelsTr", meta.file_ending)
    problems = [FileProblem(labels[c], f"label without an image "
                                       f"{c}_{channel_file:04d}{meta.file_ending} in imagesTr")
                for c in sorted(set(labels) - set(images))]
    problems += [FileProblem(images[c], f"image without a label {c}{meta.file_ending} in labelsTr")
                 for c in sorted(set(images) - set(labels))]
    found = [(c, images[c], labels[c]) for c in sorted(set(images) & set(labels))]
    if not found and not problems:
        raise DatasetError(f"nnunet: no cases in {root}: expected imagesTr/<case>_"
                           f"{channel_file:04d}{meta.file_ending} and labelsTr/<case>{meta.file_ending}")
    return found, problems
