"""`aptos2019`: APTOS 2019 Blindness Detection (Kaggle), fundus photographs graded for diabetic
retinopathy.

Layout: train.csv (`id_code,diagnosis`, diagnosis a grade 0-4) and train_images/<id_code>.png.
The release's test.csv has no grades and is ignored. There is no official validation split:
splits are drawn by seed within each grade, so every split keeps the grade balance. The grades
are ordered (`graded = True`): quadratic weighted kappa is the challenge's metric.
"""

from __future__ import annotations

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
from featcache.data.options import locate, require_root, resolve_options
from featcache.errors import DatasetError

CLASSES = ("no DR", "mild", "moderate", "severe", "proliferative DR")  # grade k = CLASSES[k]
EXPECTED = "the APTOS 2019 folder (train.csv with id_code,diagnosis and train_images/<id_code>.png)"


class APTOS2019(ClassificationDataset):
    name = "aptos2019"
    modality = "fundus photography"
    channels = 3
    classes = CLASSES
    graded = True


def _grade(value: str, where: str) -> int:
    """'3' -> 3; anything but an integer grade 0-4 is an error naming the CSV line."""
    try:
        grade = int(value)
    except ValueError:
        grade = -1
    if not 0 <= grade < len(CLASSES):
        raise DatasetError(f"{where}: diagnosis {value!r} is not a grade 0-{len(CLASSES) - 1}; "
                           "fix the row or remove it")
    return grade


def _read_labels(root: Path) -> tuple[list[Labelled], list[FileProblem], list[str]]:
    """(labelled images, missing or ambiguous images, notes) from train.csv."""
    csv_path, folder = root / "train.csv", root / "train_images"
    index = image_index(folder)
    items: list[Labelled] = []
    problems: list[FileProblem] = []
    seen: dict[str, int] = {}
    for line, row in csv_rows(csv_path, ("id_code", "diagnosis")):
        where = f"{csv_path}:{line}"
        code = row["id_code"]
        if not code:
            raise DatasetError(f"{where}: empty id_code")
        if code in seen:
            raise DatasetError(f"{where}: id_code {code!r} is listed twice (first on line "
                               f"{seen[code]})")
        seen[code] = line
        grade = _grade(row["diagnosis"], where)
        image = find_image(index, code, folder, f"{csv_path.name}:{line}")
        if isinstance(image, FileProblem):
            problems.append(image)
        else:
            items.append(Labelled(image, grade))
    return items, problems, unlisted_note(index, set(seen), folder, csv_path.name)


SUMMARY = ("APTOS 2019 fundus, DR grades 0-4: train.csv (id_code,diagnosis) + "
           "train_images/<id>.png; split by seed within grade")


def build_aptos(root: Path | None, **options: Any) -> APTOS2019:
    opts = resolve_options("aptos2019", options)
    root = locate("aptos2019", require_root("aptos2019", root, EXPECTED),
                  ("train.csv", "train_images"), EXPECTED)
    items, problems, notes = _read_labels(root)
    ids = [safe_id(it.image.stem) for it in items]
    entries = stratified_entries(ids, items, CLASSES, root, opts)
    dataset = APTOS2019.build(entries, problems, opts)
    dataset.notes += notes
    return dataset  # type: ignore[return-value]
