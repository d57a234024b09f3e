"""`drive`: DRIVE retinal vessels (Staal et al. 2004), 20 training + 20 test fundus photographs.

Layout: training/ and test/, each with images/<n>_training.tif (<n>_test.tif), 1st_manual/
<n>_manual1.gif (the vessel labels) and mask/<n>_..._mask.gif (the camera's field of view, FOV).
The FOV is not the target: its path is kept in meta["fov"] (relative to the root) and
`dataset.fov_mask(index)` decodes it, because DRIVE metrics are computed inside the FOV.

Split: the official one. training/ -> train, with a deterministic val carved out of it by seed
(val_fraction, default 0.2 = 4 images); test/ -> test. Some releases (e.g. the grand-challenge
download) ship test/ without 1st_manual: then the test images have no labels, cannot be evaluated,
and are left out; train/val/test are carved from training/ by `fractions`, and dataset.notes says so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from featcache.data.base import SampleInfo, assign_splits
from featcache.data.files import FileProblem, check_same_size, list_images, read_mask
from featcache.data.options import locate, require_root, resolve_options
from featcache.data.paired import Pair, PairedDataset
from featcache.errors import DatasetError

EXPECTED = "DRIVE (training/ and test/ with images/*.tif, 1st_manual/*.gif, mask/*.gif)"
_NUMBER = re.compile(r"^(\d+)_")


class DRIVE(PairedDataset):
    name = "drive"
    modality = "fundus photography"
    channels = 3
    root: Path = Path(".")

    def fov_mask(self, index: int) -> np.ndarray:
        """The field-of-view mask of sample `index`: uint8 (H, W) in {0, 1}; all ones if absent."""
        fov = self.samples[index].meta.get("fov")
        if fov is None:
            image = self.load(index).image
            return np.ones(image.shape[:2], np.uint8)
        return read_mask(self.root / fov, "binary")

    def validate_extra(self, index: int) -> None:
        """The FOV mask must decode, be binary and match its image in size."""
        fov = self.samples[index].meta.get("fov")
        if fov is not None:
            image = self.load(index).image
            check_same_size(image, self.fov_mask(index), self.pairs[index].image, self.root / fov)


def _by_number(folder: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    if folder.is_dir():
        for p in list_images(folder):
            m = _NUMBER.match(p.name)
            if m:
                found.setdefault(m.group(1), []).append(p)
    return found


def _part(root: Path, part: str) -> tuple[list[tuple[str, Pair, Path | None]], list[FileProblem]]:
    """(number, Pair, fov path) for training/ or test/, plus pairing problems."""
    images, labels = _by_number(root / part / "images"), _by_number(root / part / "1st_manual")
    fovs = _by_number(root / part / "mask")
    problems = [FileProblem(p, f"label without an image in {root / part / 'images'}")
                for n in sorted(set(labels) - set(images)) for p in labels[n]]
    found = []
    for n in sorted(images, key=int):
        if n not in labels:
            problems += [FileProblem(p, f"image without a label in {root / part / '1st_manual'}")
                         for p in images[n]]
            continue
        fov = fovs.get(n, [None])[0]
        found.append((n, Pair(images[n][0], (labels[n][0],), "binary"), fov))
    return found, problems


def _entry(root: Path, part: str, n: str, pair: Pair, fov: Path | None, split: str
           ) -> tuple[SampleInfo, Pair]:
    sid = f"drive_{part}_{n}"
    meta = {"file": str(pair.image.relative_to(root)), "official_part": part,
            "fov": str(fov.relative_to(root)) if fov else None}
    return SampleInfo(sid, split, sid, meta), pair


SUMMARY = ("DRIVE retinal vessels: training|test/images/*.tif + 1st_manual/*.gif "
           "(+ mask/*.gif FOV); official split, val carved from training")


def build_drive(root: Path | None, **options: Any) -> DRIVE:
    opts = resolve_options("drive", options, {"val_fraction": 0.2})
    vf = opts["val_fraction"]
    if not isinstance(vf, (int, float)) or isinstance(vf, bool) or not 0 <= vf < 1:
        raise DatasetError(f"drive: val_fraction must be in [0, 1), got {vf}")
    root = locate("drive", require_root("drive", root, EXPECTED), ("training",), EXPECTED)
    train, problems = _part(root, "training")
    notes: list[str] = []
    if (root / "test" / "1st_manual").is_dir():
        test, test_problems = _part(root, "test")
        problems += test_problems
        split_of = assign_splits([n for n, _, _ in train], opts["seed"], (1 - vf, vf, 0.0))
    else:
        unlabeled = len(list_images(root / "test" / "images")) if (root / "test" / "images").is_dir() else 0
        notes.append(f"DRIVE test/1st_manual not found: {unlabeled} test image(s) have no labels in this "
                     "release and are left out; train/val/test are carved from training/ by seed "
                     f"(fractions {list(opts['fractions'])}), so this is not the official test split")
        test = []
        split_of = assign_splits([n for n, _, _ in train], opts["seed"], opts["fractions"])
    entries = [_entry(root, "training", n, pair, fov, split_of[n]) for n, pair, fov in train]
    entries += [_entry(root, "test", n, pair, fov, "test") for n, pair, fov in test]
    dataset = DRIVE.build(entries, problems, opts)
    dataset.root = root
    dataset.notes = notes
    return dataset  # type: ignore[return-value]
