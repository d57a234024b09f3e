"""`kvasir-seg`: Kvasir-SEG polyp images (Jha et al. 2020), 1000 colonoscopy frames.

Layout: images/<id>.jpg and masks/<id>.jpg with the same names. The masks are JPEGs, so their
edges carry compression noise (values between 0 and 255): they are thresholded at 128, never
checked for exact binary values. No official split: splits are drawn by seed, one image per group.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featcache.data.base import safe_id
from featcache.data.options import locate, require_root, resolve_options
from featcache.data.paired import PairedDataset, match_stems, seeded_entries

EXPECTED = "Kvasir-SEG (images/*.jpg and masks/*.jpg with the same names)"


class KvasirSEG(PairedDataset):
    name = "kvasir-seg"
    modality = "endoscopy"
    channels = 3


SUMMARY = ("Kvasir-SEG polyps: images/*.jpg + masks/*.jpg (same names; "
           "JPEG masks thresholded at 128); split by seed")


def build_kvasir(root: Path | None, **options: Any) -> KvasirSEG:
    opts = resolve_options("kvasir-seg", options)
    root = locate("kvasir-seg", require_root("kvasir-seg", root, EXPECTED), ("images", "masks"), EXPECTED)
    pairs, problems = match_stems(root / "images", root / "masks", mask_mode="threshold")
    ids = [safe_id(stem) for stem, _ in pairs]
    entries = seeded_entries(ids, pairs, root, opts)
    return KvasirSEG.build(entries, problems, opts)  # type: ignore[return-value]
