"""The dataset registry: name -> builder(root, **options) -> SegmentationDataset, and its layout
in one line. Written out here from each loader module's build function and SUMMARY."""

from __future__ import annotations

import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from featcache.data.base import SegmentationDataset
from featcache.data.loaders import (
    aptos,
    busi,
    classes,
    cvc,
    demo,
    dicom,
    drive,
    folder,
    images,
    isic,
    kvasir,
    msd,
    nnunet,
)
from featcache.errors import DatasetError
from featcache.registry import Entry, lookup

DatasetBuilder = Callable[..., SegmentationDataset]

DATASETS: dict[str, Entry[DatasetBuilder]] = {
    "aptos2019": Entry(aptos.build_aptos, aptos.SUMMARY),
    "busi": Entry(busi.build_busi, busi.SUMMARY),
    "classes": Entry(classes.build_classes, classes.SUMMARY),
    "cvc-clinicdb": Entry(cvc.build_cvc, cvc.SUMMARY),
    "demo": Entry(demo.build_demo, demo.SUMMARY),
    "dicom": Entry(dicom.build_dicom, dicom.SUMMARY),
    "drive": Entry(drive.build_drive, drive.SUMMARY),
    "folder": Entry(folder.build_folder, folder.SUMMARY),
    "images": Entry(images.build_images, images.SUMMARY),
    "isic2017": Entry(isic.build_isic, isic.SUMMARY),
    "kvasir-seg": Entry(kvasir.build_kvasir, kvasir.SUMMARY),
    "msd": Entry(msd.build_msd, msd.SUMMARY),
    "nnunet": Entry(nnunet.build_nnunet, nnunet.SUMMARY),
}


def build_dataset(name: str, root: str | Path | None = None, **options: Any) -> SegmentationDataset:
    """Build a registered dataset. `root` is required by every loader except `demo`."""
    build = lookup(DATASETS, "dataset", name, DatasetError).build
    return build(Path(root) if root is not None else None, **options)


def dataset_modality(name: str) -> str:
    """The modality a builder's dataset class declares (read from its return annotation, so nothing
    is built); '' when the builder does not say."""
    build = lookup(DATASETS, "dataset", name, DatasetError).build
    try:
        cls = typing.get_type_hints(build).get("return")
    except Exception:  # an annotation that cannot be resolved is not worth failing a listing for
        return ""
    # A builder returning one of several classes (nnunet: slices or images) says what they agree on.
    members = typing.get_args(cls) or (cls,)
    said = {str(getattr(m, "modality", "") or "") for m in members}
    return said.pop() if len(said) == 1 else ""
