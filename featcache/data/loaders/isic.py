"""`isic2017`: ISIC 2017 Skin Lesion Analysis, Part 3 (lesion classification), dermoscopy.

Layout: each part of the release is a ground-truth CSV `ISIC-2017_<Part>_Part3_GroundTruth.csv`
(`image_id,melanoma,seborrheic_keratosis`, values 0/1 or 0.0/1.0) beside its image folder
`ISIC-2017_<Part>_Data/<image_id>.jpg` (the `_superpixels.png` files there are not images of the
task and are ignored). Part is Training, Validation or Test_v2 (any name containing Training,
Validation or Test). Three classes: melanoma, seborrheic_keratosis, and nevus (neither flag).
When two or more parts are present, they are the splits (the official ones); one part alone is
split by seed within each class.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from featcache.data.base import safe_id
from featcache.data.classified import (
    ClassificationDataset,
    Labelled,
    csv_rows,
    find_image,
    image_index,
    stratified_entries,
    unlisted_note,
)
from featcache.data.files import FileProblem
from featcache.data.options import require_root, resolve_options
from featcache.errors import DatasetError

CLASSES = ("melanoma", "seborrheic_keratosis", "nevus")
COLUMNS = ("image_id", "melanoma", "seborrheic_keratosis")
_PART_CSV = re.compile(r"^(?P<prefix>.+)_Part3_GroundTruth\.csv$")
_SPLIT_WORDS = (("Training", "train"), ("Validation", "val"), ("Test", "test"))
EXPECTED = ("the ISIC 2017 folder (ISIC-2017_Training_Part3_GroundTruth.csv with image_id,melanoma,"
            "seborrheic_keratosis and ISIC-2017_Training_Data/, optionally the Validation and Test_v2 "
            "parts)")


class ISIC2017(ClassificationDataset):
    name = "isic2017"
    modality = "dermoscopy"
    channels = 3
    classes = CLASSES


def _flag(value: str, column: str, where: str) -> bool:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if number not in (0.0, 1.0):
        raise DatasetError(f"{where}: {column} {value!r} must be 0 or 1")
    return number == 1.0


def _label(row: dict[str, str], where: str) -> int:
    """melanoma -> 0, seborrheic_keratosis -> 1, neither -> 2 (nevus); both is an unknown class."""
    mel, sk = (_flag(row[c], c, where) for c in COLUMNS[1:])
    if mel and sk:
        raise DatasetError(f"{where}: both melanoma and seborrheic_keratosis are 1; a lesion has "
                           f"one of the classes {', '.join(CLASSES)}")
    return 0 if mel else (1 if sk else 2)


def _parts(root: Path) -> list[tuple[str, Path, Path]]:
    """(split, csv, image folder) for each part present, in train/val/test order."""
    found = []
    for csv_path in sorted(root.glob("*_Part3_GroundTruth.csv")):
        prefix = _PART_CSV.match(csv_path.name)["prefix"]  # type: ignore[index]
        split = next((s for word, s in _SPLIT_WORDS if word.lower() in prefix.lower()), None)
        if split is None:
            raise DatasetError(f"{csv_path}: cannot tell which split this part is; its name should "
                               "contain Training, Validation or Test")
        folder = root / f"{prefix}_Data"
        if not folder.is_dir():
            raise DatasetError(f"{csv_path}: its image folder {folder} is missing")
        found.append((split, csv_path, folder))
    if not found:
        raise DatasetError(f"isic2017: {root} does not have the expected layout (no "
                           f"*_Part3_GroundTruth.csv); expected {EXPECTED}")
    splits = [s for s, _, _ in found]
    duplicate = next((s for s in splits if splits.count(s) > 1), None)
    if duplicate:
        raise DatasetError(f"isic2017: several ground-truth CSVs in {root} are the {duplicate} "
                           "split; keep one")
    return sorted(found, key=lambda p: ("train", "val", "test").index(p[0]))


def _read_part(csv_path: Path, folder: Path) -> tuple[list[Labelled], list[FileProblem], list[str]]:
    """(labelled images, missing or ambiguous images, notes) of one part."""
    index = {stem: paths for stem, paths in image_index(folder).items()
             if not stem.endswith("_superpixels")}  # the release's superpixel maps are no images
    items, problems, listed = [], [], {}
    for line, row in csv_rows(csv_path, COLUMNS):
        where = f"{csv_path}:{line}"
        if not row["image_id"]:
            raise DatasetError(f"{where}: empty image_id")
        if row["image_id"] in listed:
            raise DatasetError(f"{where}: image_id {row['image_id']!r} is listed twice (first on line "
                               f"{listed[row['image_id']]}); remove the repeated row")
        listed[row["image_id"]] = line
        image = find_image(index, row["image_id"], folder, f"{csv_path.name}:{line}")
        label = _label(row, where)
        if isinstance(image, FileProblem):
            problems.append(image)
        else:
            items.append(Labelled(image, label))
    return items, problems, unlisted_note(index, set(listed), folder, csv_path.name)


def _locate(root: Path) -> Path:
    """The root, or its one subfolder, holding the ground-truth CSVs (archives add a level)."""
    if any(root.glob("*_Part3_GroundTruth.csv")):
        return root
    below = [d for d in sorted(root.iterdir()) if d.is_dir() and any(d.glob("*_Part3_GroundTruth.csv"))]
    return below[0] if len(below) == 1 else root


SUMMARY = ("ISIC 2017 dermoscopy, melanoma|seborrheic_keratosis|nevus: Part 3 ground-truth CSVs + "
           "*_Data/; official splits when present, else by seed within class")


def build_isic(root: Path | None, **options: Any) -> ISIC2017:
    opts = resolve_options("isic2017", options)
    root = _locate(require_root("isic2017", root, EXPECTED))
    parts = _parts(root)
    items: list[Labelled] = []
    problems: list[FileProblem] = []
    splits: list[str] = []
    notes: list[str] = []
    for split, csv_path, folder in parts:
        part_items, part_problems, part_notes = _read_part(csv_path, folder)
        notes += part_notes
        items += part_items
        problems += part_problems
        splits += [split] * len(part_items)
    ids = [safe_id(it.image.stem) for it in items]
    official = splits if len(parts) > 1 else None
    entries = stratified_entries(ids, items, CLASSES, root, opts, official)
    dataset = ISIC2017.build(entries, problems, opts)
    dataset.notes += notes
    if official is None:
        dataset.notes.append(f"only {parts[0][1].name} is present: splits drawn by seed within class")
    else:
        absent = [s for s in ("train", "val", "test") if s not in {p[0] for p in parts}]
        if absent:
            dataset.notes.append(f"no ground truth for the {' and '.join(absent)} split(s)")
    return dataset  # type: ignore[return-value]
