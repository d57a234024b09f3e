"""`busi`: Breast Ultrasound Images (Al-Dhabyani et al. 2020), folder Dataset_BUSI_with_GT.

Layout: benign/, malignant/, normal/, each holding `benign (12).png` with `benign (12)_mask.png`
and, for some lesions, `benign (12)_mask_1.png`, `_mask_2.png`: extra lesions of the same image,
merged by union. `normal` images have empty masks (a missing normal mask counts as empty). The
release has no patient ids and no official split: splits are drawn by seed within each class, so
every split keeps the class balance. Ids are path-safe: `benign (12)` -> `benign_12`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from featcache.data.base import SampleInfo, assign_splits_by_stratum, safe_id
from featcache.data.files import FileProblem, list_images
from featcache.data.options import locate, require_root, resolve_options
from featcache.data.paired import Pair, PairedDataset

CLASSES = ("benign", "malignant", "normal")
_MASK = re.compile(r"^(?P<stem>.+?)_mask(?:_(?P<k>\d+))?$")
EXPECTED = "Dataset_BUSI_with_GT (benign/, malignant/, normal/ with 'x (n).png' + 'x (n)_mask.png')"


class BUSI(PairedDataset):
    name = "busi"
    modality = "ultrasound"
    channels = 3  # the PNGs are stored as RGB greyscale; kept RGB like the teachers expect


def _class_pairs(folder: Path, label: str) -> tuple[list[tuple[str, Pair]], list[FileProblem]]:
    """(stem, Pair) for one class folder, plus pairing problems."""
    images: dict[str, Path] = {}
    masks: dict[str, list[tuple[int, Path]]] = {}
    for path in list_images(folder):
        m = _MASK.match(path.stem)
        if m:
            masks.setdefault(m["stem"], []).append((int(m["k"] or 0), path))
        else:
            images[path.stem] = path
    problems = [FileProblem(p, f"mask without an image (expected {folder / (stem + '.png')})")
                for stem in sorted(set(masks) - set(images)) for _, p in masks[stem]]
    pairs = []
    for stem, image in sorted(images.items()):
        found = tuple(p for _, p in sorted(masks.get(stem, [])))
        if not found and label != "normal":
            problems.append(FileProblem(image, f"image without a mask (expected {stem}_mask.png)"))
            continue
        pairs.append((stem, Pair(image, found, "auto")))
    return pairs, problems


SUMMARY = ("BUSI breast ultrasound: benign|malignant|normal/'x (n).png' + "
           "'x (n)_mask[_k].png' (union); split by seed within class")


def build_busi(root: Path | None, **options: Any) -> BUSI:
    opts = resolve_options("busi", options)
    root = locate("busi", require_root("busi", root, EXPECTED), ("benign", "malignant"), EXPECTED)
    found: list[tuple[str, str, Pair]] = []
    problems: list[FileProblem] = []
    for label in CLASSES:
        if (root / label).is_dir():
            pairs, bad = _class_pairs(root / label, label)
            found += [(label, stem, pair) for stem, pair in pairs]
            problems += bad
    ids = [safe_id(stem) for _, stem, _ in found]
    split_of = assign_splits_by_stratum(ids, [label for label, _, _ in found], opts["seed"],
                                        opts["fractions"])
    entries = [(SampleInfo(sid, split_of[sid], sid,
                           {"class": label, "file": str(pair.image.relative_to(root)),
                            "masks": len(pair.masks)}), pair)
               for sid, (label, _, pair) in zip(ids, found, strict=True)]
    return BUSI.build(entries, problems, opts)  # type: ignore[return-value]
