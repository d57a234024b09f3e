"""The shared machinery of 2D loaders: one image file paired with zero or more mask files.

BUSI, Kvasir-SEG, CVC-ClinicDB, DRIVE and the generic `folder` loader differ only in how they find
and name their pairs; decoding, union of extra masks, size checks, digests and the skip_bad policy
live here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featcache.data.base import Sample, SampleInfo, SegmentationDataset, assign_splits
from featcache.data.digest import digest_files
from featcache.data.files import (
    FileProblem,
    check_same_size,
    list_images,
    read_mask,
    resolve_mask_mode,
)
from featcache.data.options import fingerprint_options
from featcache.data.recipe import Recipe
from featcache.data.screen import raise_first, screen
from featcache.data.serving import image_input
from featcache.errors import DatasetError


@dataclass(frozen=True)
class Pair:
    image: Path
    masks: tuple[Path, ...]  # unioned; none at all means an all-zero mask (BUSI `normal`)
    mask_mode: str = "auto"  # see files.read_mask

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.image, *self.masks)


def load_pair(pair: Pair, recipe: Recipe) -> tuple[np.ndarray, np.ndarray]:
    """-> image float32 (H, W, channels) in [0, 1] through the dataset's recipe, mask uint8 (H, W)
    in {0, 1} (union of masks)."""
    image = image_input(pair.image, recipe)
    mask = np.zeros(image.shape[:2], np.uint8)
    for path in pair.masks:
        part = read_mask(path, pair.mask_mode)
        check_same_size(image, part, pair.image, path)
        mask |= part
    return image, mask


class PairedDataset(SegmentationDataset):
    """Subclasses set name, modality and channels; builders call `build` with discovered pairs."""

    def __init__(self, samples: list[SampleInfo], pairs: list[Pair], options: dict[str, Any]) -> None:
        super().__init__(samples, options)
        self.pairs = pairs

    def _load(self, index: int) -> Sample:
        image, mask = load_pair(self.pairs[index], self.recipe)
        return Sample(self.samples[index].id, image, mask)

    def content_digest(self, index: int) -> str:
        pair = self.pairs[index]
        # The mask mode decides what the bytes mean, so it is part of the content.
        return digest_files(list(pair.files), salt=pair.mask_mode)

    @classmethod
    def build(cls, entries: list[tuple[SampleInfo, Pair]], problems: list[FileProblem],
              opts: dict[str, Any]) -> PairedDataset:
        """Apply the bad-input policy (see featcache.data.screen) and construct the dataset."""
        skipped: list[dict[str, str]] = []
        if not opts["skip_bad"]:
            raise_first(problems)
        else:
            skipped = [p.record() for p in problems]
            entries, bad = screen(entries, lambda e: e[1].files,
                                  lambda e: _validate(e[1], cls.channels), salt=cls.name)
            skipped += bad
        if not entries:
            detail = f"; {len(skipped)} file(s) skipped, first: {skipped[0]['path']}: " \
                     f"{skipped[0]['reason']}" if skipped else ""
            raise DatasetError(f"{cls.name}: no usable samples found{detail}")
        dataset = cls([e[0] for e in entries], [e[1] for e in entries], fingerprint_options(opts))
        dataset.skipped = skipped
        return dataset


def _validate(pair: Pair, channels: int) -> None:
    for path in pair.masks:
        resolve_mask_mode(path, pair.mask_mode)  # an unknown mode is a usage error, not a bad file
    load_pair(pair, Recipe("image", channels=channels))


def match_stems(image_dir: Path, mask_dir: Path, mask_mode: str = "auto",
                mask_suffixes: tuple[str, ...] = ("",)) -> tuple[list[tuple[str, Pair]], list[FileProblem]]:
    """Pair images/<stem>.* with masks/<stem><suffix>.* (any image format on either side).

    Returns (stem, Pair) sorted by stem, and one problem per unpaired or ambiguous file.
    """
    images: dict[str, list[Path]] = {}
    masks: dict[str, list[Path]] = {}
    for path in list_images(image_dir):
        images.setdefault(path.stem, []).append(path)
    for path in list_images(mask_dir):
        stem = path.stem
        for suffix in sorted(mask_suffixes, key=len, reverse=True):
            if suffix and stem.endswith(suffix):
                stem = stem[: -len(suffix)]
                break
        masks.setdefault(stem, []).append(path)
    problems: list[FileProblem] = []
    pairs: list[tuple[str, Pair]] = []
    for stem in sorted(set(images) | set(masks)):
        imgs, msks = images.get(stem, []), masks.get(stem, [])
        if not msks:
            problems += [FileProblem(p, f"image without a mask in {mask_dir}") for p in imgs]
        elif not imgs:
            problems += [FileProblem(p, f"mask without an image in {image_dir}") for p in msks]
        elif len(imgs) > 1 or len(msks) > 1:
            names = ", ".join(p.name for p in imgs + msks)
            problems.append(FileProblem(imgs[0], f"ambiguous pairing: several files share the stem "
                                                 f"{stem!r} ({names})"))
        else:
            pairs.append((stem, Pair(imgs[0], (msks[0],), mask_mode)))
    return pairs, problems


def seeded_entries(ids: list[str], pairs: list[tuple[str, Pair]], root: Path,
                   options: dict[str, Any]) -> list[tuple[SampleInfo, Pair]]:
    """Entries for datasets without an official split: each image is its own group, split by
    seed; the file path relative to the root travels as metadata."""
    split_of = assign_splits(ids, options["seed"], options["fractions"])
    return [(SampleInfo(sid, split_of[sid], sid, {"file": str(pair.image.relative_to(root))}), pair)
            for sid, (_, pair) in zip(ids, pairs, strict=True)]
