"""`cvc-clinicdb`: CVC-ClinicDB polyp frames (Bernal et al. 2015), 612 frames from 31 sequences.

Layout: Original/<n>.tif (or .png) and "Ground Truth"/<n>.tif (or .png) with the same names. Masks
are lossless, so they must hold 0 and one foreground value (mask_mode='threshold' relaxes that).
The release does not say which frame belongs to which sequence, so frames are split by seed one
by one: neighbouring frames of one video can land in different splits (a known leakage risk of
random CVC splits; use the `folder` loader with your own split if you have sequence ids).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featcache.data.base import safe_id
from featcache.data.files import MASK_MODES
from featcache.data.options import locate, require_root, resolve_options
from featcache.data.paired import PairedDataset, match_stems, seeded_entries
from featcache.errors import DatasetError

EXPECTED = "CVC-ClinicDB (Original/ and 'Ground Truth'/ holding .tif or .png frames with the same names)"


class CVCClinicDB(PairedDataset):
    name = "cvc-clinicdb"
    modality = "endoscopy"
    channels = 3


SUMMARY = ("CVC-ClinicDB polyps: Original/ + 'Ground Truth'/ (.tif or "
           ".png, same names); split by seed")


def build_cvc(root: Path | None, **options: Any) -> CVCClinicDB:
    opts = resolve_options("cvc-clinicdb", options, {"mask_mode": "auto"})
    if opts["mask_mode"] not in MASK_MODES:
        raise DatasetError(f"cvc-clinicdb: mask_mode must be one of {', '.join(MASK_MODES)}")
    root = locate("cvc-clinicdb", require_root("cvc-clinicdb", root, EXPECTED),
                  ("Original", "Ground Truth"), EXPECTED)
    pairs, problems = match_stems(root / "Original", root / "Ground Truth", mask_mode=opts["mask_mode"])
    ids = [f"cvc_{safe_id(stem)}" for stem, _ in pairs]  # bare frame numbers ('1') read badly as keys
    entries = seeded_entries(ids, pairs, root, opts)
    return CVCClinicDB.build(entries, problems, opts)  # type: ignore[return-value]
