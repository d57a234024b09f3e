"""The shared machinery of classification loaders: one image file and one class index per sample.

APTOS 2019, ISIC 2017 and the generic `classes` layout differ only in how they find images and
their classes; decoding, digests, stratified splits and the skip_bad policy live here. A sample's
mask is all zeros (the Sample contract: extraction and the cache need no second code path) and its
class index travels in `Sample.label` and `SampleInfo.meta["label"]`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featcache.data.base import Sample, SampleInfo, SegmentationDataset, assign_splits_by_stratum
from featcache.data.digest import digest_files
from featcache.data.files import FileProblem, list_images
from featcache.data.options import fingerprint_options
from featcache.data.recipe import Recipe
from featcache.data.screen import raise_first, screen
from featcache.data.serving import image_input
from featcache.errors import DatasetError


@dataclass(frozen=True)
class Labelled:
    """One image of a classification dataset, before it is given an id and a split."""

    image: Path
    label: int  # index into the dataset's classes


class ClassificationDataset(SegmentationDataset):
    """Subclasses set name, modality, channels and classes; builders call `build`."""

    task = "classification"

    def __init__(self, samples: list[SampleInfo], files: list[Path], options: dict[str, Any],
                 classes: tuple[str, ...] | None = None) -> None:
        super().__init__(samples, options)
        self.files = files
        if classes is not None:
            self.classes = tuple(classes)

    def _load(self, index: int) -> Sample:
        """-> image float32 (H, W, channels), mask uint8 (H, W) zeros, label = class index."""
        info = self.samples[index]
        image = image_input(self.files[index], self.recipe)
        return Sample(info.id, image, np.zeros(image.shape[:2], np.uint8), label=info.meta["label"])

    def content_digest(self, index: int) -> str:
        # The class is part of the content: relabelling an image must change the fingerprint.
        return digest_files([self.files[index]], salt=f"label {self.samples[index].meta['label']}")

    @classmethod
    def build(cls, entries: list[tuple[SampleInfo, Path]], problems: list[FileProblem],
              opts: dict[str, Any], classes: tuple[str, ...] | None = None) -> ClassificationDataset:
        """Apply the bad-input policy (see featcache.data.screen) and construct the dataset."""
        skipped: list[dict[str, str]] = []
        if not opts["skip_bad"]:
            raise_first(problems)
        else:
            skipped = [p.record() for p in problems]
            recipe = Recipe("image", channels=cls.channels)
            entries, bad = screen(entries, lambda e: (e[1],), lambda e: image_input(e[1], recipe),
                                  salt=cls.name)
            skipped += bad
        if not entries:
            detail = f"; {len(skipped)} file(s) skipped, first: {skipped[0]['path']}: " \
                     f"{skipped[0]['reason']}" if skipped else ""
            raise DatasetError(f"{cls.name}: no usable samples found{detail}")
        present = sorted({e[0].meta["class"] for e in entries})
        if len(present) < 2:  # nothing to tell apart: a run would score 1.0 and serve nothing
            raise DatasetError(f"{cls.name}: every usable image is of class {present[0]!r}; a classifier "
                               "needs images of at least two classes (one folder or label per class)")
        dataset = cls([e[0] for e in entries], [e[1] for e in entries], fingerprint_options(opts),
                      classes)
        dataset.skipped = skipped
        return dataset


def stratified_entries(ids: list[str], items: list[Labelled], classes: tuple[str, ...], root: Path,
                       opts: dict[str, Any], splits: list[str] | None = None
                       ) -> list[tuple[SampleInfo, Path]]:
    """SampleInfo for every item: the given official `splits`, else drawn by seed within each class
    (so every split keeps the class balance); each image is its own group."""
    if splits is None:
        split_of = assign_splits_by_stratum(ids, [str(it.label) for it in items], opts["seed"],
                                            opts["fractions"])
        splits = [split_of[i] for i in ids]
    return [(SampleInfo(sid, split, sid, {"label": it.label, "class": classes[it.label],
                                          "file": str(it.image.relative_to(root))}), it.image)
            for sid, split, it in zip(ids, splits, items, strict=True)]


def csv_rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row of a CSV that must have `columns` in its header.

    A missing column, an unreadable file or a short row is one line naming the file (and line)."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # Excel writes a byte-order mark
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read the CSV file ({exc})") from None
    reader = csv.DictReader(text.splitlines())
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise DatasetError(f"{path}: header lacks column(s) {', '.join(missing)}; expected "
                           f"{','.join(columns)}")
    for row in reader:
        line = reader.line_num
        if not any((v or "").strip() for v in row.values()):
            continue  # a blank line
        if any(row.get(c) is None for c in columns):
            raise DatasetError(f"{path}:{line}: row has fewer fields than the header "
                               f"({','.join(columns)})")
        yield line, {k: (v or "").strip() for k, v in row.items() if k is not None}


def image_index(folder: Path) -> dict[str, list[Path]]:
    """stem -> image files in `folder` with that stem (several: an ambiguous name)."""
    index: dict[str, list[Path]] = {}
    for path in list_images(folder):
        index.setdefault(path.stem, []).append(path)
    return index


def unlisted_note(index: dict[str, list[Path]], listed: set[str], folder: Path, csv_name: str
                  ) -> list[str]:
    """A note for images in `folder` that the CSV does not list (left out, never silently)."""
    extra = sorted(set(index) - listed)
    if not extra:
        return []
    return [f"{len(extra)} image(s) in {folder.name}/ are not listed in {csv_name} and are left "
            f"out, e.g. {extra[0]!r}"]


def find_image(index: dict[str, list[Path]], stem: str, folder: Path, where: str
               ) -> Path | FileProblem:
    """The one image named `stem` in `folder`, or a problem naming the CSV line that listed it."""
    found = index.get(stem, [])
    if len(found) == 1:
        return found[0]
    if not found:
        return FileProblem(folder / f"{stem}.*", f"image listed in {where} not found")
    names = ", ".join(p.name for p in found)
    return FileProblem(found[0], f"ambiguous: several images named {stem!r} ({names}), listed in "
                                 f"{where}")
