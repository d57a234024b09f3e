"""`folder`: any dataset laid out as images/ + masks/ with matching file stems.

Formats: png, jpg/jpeg, tif/tiff, bmp, gif, mixed freely (images/a.png may pair with masks/a.gif).
Masks named `<stem>_mask.*` (or _seg, _segmentation, _label, _gt) also pair. JPEG masks are
thresholded at 128; lossless masks must hold 0 and one foreground value (mask_mode='threshold'
or 'binary' forces one rule for all).
Images are read as RGB unless channels=1. If a `splits.csv` (`stem,split` lines) sits next to
images/, it is the split; otherwise splits are drawn by seed. Grouping: option group_regex, a
regular expression whose first group extracts the patient id from the stem (e.g. '^(P\\d+)_').
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from featcache.data.base import SPLITS, SampleInfo, assign_splits, safe_id
from featcache.data.files import MASK_MODES
from featcache.data.options import locate, require_root, resolve_options
from featcache.data.paired import PairedDataset, match_stems
from featcache.errors import DatasetError

MASK_SUFFIXES = ("_mask", "_seg", "_segmentation", "_label", "_gt")  # ISIC uses _segmentation
EXPECTED = "a folder with images/ and masks/ holding files with matching names"


class ImageFolder(PairedDataset):
    name = "folder"
    modality = "unspecified"
    channels = 3


class GreyImageFolder(ImageFolder):
    channels = 1


def _read_split_file(path: Path) -> dict[str, str]:
    result = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#") or line.lower().startswith("stem,"):
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or parts[1] not in SPLITS:
            raise DatasetError(f"{path}:{n}: expected 'stem,split' with split in {', '.join(SPLITS)}")
        result[parts[0]] = parts[1]
    return result


def _groups(stems: list[str], pattern: str | None) -> list[str]:
    if not pattern:
        return [safe_id(s) for s in stems]
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise DatasetError(f"folder: group_regex {pattern!r} is not a valid expression ({exc})") from None
    groups = []
    for stem in stems:
        m = regex.search(stem)
        group = next((g for g in m.groups() if g), None) if m else None
        if not group:
            raise DatasetError(f"folder: group_regex {pattern!r} captures no group in {stem!r}; it needs "
                               "one capturing group, e.g. '^(P\\d+)_'")
        groups.append(group)
    return groups


SUMMARY = ("generic: images/ + masks/ with matching stems (png, jpg, tif, bmp, "
           "gif); optional splits.csv; else split by seed")


def build_folder(root: Path | None, **options: Any) -> ImageFolder:
    opts = resolve_options("folder", options, {"mask_mode": "auto", "channels": 3, "group_regex": None})
    if opts["mask_mode"] not in MASK_MODES:
        raise DatasetError(f"folder: mask_mode must be one of {', '.join(MASK_MODES)}")
    if opts["channels"] not in (1, 3):
        raise DatasetError(f"folder: channels must be 1 or 3, got {opts['channels']!r}")
    root = locate("folder", require_root("folder", root, EXPECTED), ("images", "masks"), EXPECTED)
    pairs, problems = match_stems(root / "images", root / "masks", opts["mask_mode"], MASK_SUFFIXES)
    stems = [stem for stem, _ in pairs]
    groups = _groups(stems, opts["group_regex"])
    split_file = root / "splits.csv"
    if split_file.is_file():
        listed = _read_split_file(split_file)
        missing = [s for s in stems if s not in listed]
        if missing:
            raise DatasetError(f"{split_file}: no split for {len(missing)} image(s), e.g. {missing[0]!r}")
        splits = [listed[s] for s in stems]  # the user's file is authoritative, per image
    else:
        split_of = assign_splits(groups, opts["seed"], opts["fractions"])
        splits = [split_of[g] for g in groups]
    entries = [(SampleInfo(safe_id(stem), split, g, {"file": str(pair.image.relative_to(root))}), pair)
               for stem, g, split, (_, pair) in zip(stems, groups, splits, pairs, strict=True)]
    cls = ImageFolder if opts["channels"] == 3 else GreyImageFolder
    return cls.build(entries, problems, opts)  # type: ignore[return-value]
