"""`images`: a folder of images without masks, for feature pretraining.

Teachers need no labels: `featcache extract --dataset images --root DIR` caches their features for
every image under DIR (subfolders included), and a manifest lists the dataset under
`pretrain.datasets` so the student learns the teachers' features on all of them before its
labelled training. Samples carry an all-zero mask only to keep the Sample contract; the dataset
says `labelled = False`, and distillation's labelled phase and `eval` refuse it.
Every image is in the train split (`train_split: train` or `all` in a manifest both take them all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featcache.data.base import SampleInfo, safe_id
from featcache.data.files import IMAGE_EXTS
from featcache.data.options import require_root, resolve_options
from featcache.data.paired import Pair, PairedDataset
from featcache.errors import DatasetError

EXPECTED = "a folder of images (png, jpg, tif, bmp, gif; subfolders included), no masks needed"


class UnlabelledImages(PairedDataset):
    name = "images"
    modality = "any (unlabelled)"
    channels = 3
    labelled = False


class GreyUnlabelledImages(UnlabelledImages):
    channels = 1


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


SUMMARY = ("unlabelled: every image under a folder (no masks), for "
           "feature pretraining (pretrain.datasets)")


def build_images(root: Path | None, **options: Any) -> UnlabelledImages:
    opts = resolve_options("images", options, {"channels": 3})
    if opts["channels"] not in (1, 3):
        raise DatasetError(f"images: channels must be 1 or 3, got {opts['channels']!r}")
    root = require_root("images", root, EXPECTED)
    files = _image_files(root)
    if not files:
        raise DatasetError(f"images: no image files under {root}; expected layout: {EXPECTED}")
    # Ids from the path below root ('ward2/scan 7.png' -> 'ward2_scan_7'), so names repeated in
    # different subfolders stay distinct.
    entries = [(SampleInfo(safe_id(str(p.relative_to(root).with_suffix(""))), "train", str(p.parent),
                           {"file": str(p.relative_to(root))}), Pair(p, ()))
               for p in files]
    cls = UnlabelledImages if opts["channels"] == 3 else GreyUnlabelledImages
    return cls.build(entries, [], opts)  # type: ignore[return-value]
