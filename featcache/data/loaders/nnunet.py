"""`nnunet`: a dataset in the nnU-Net v2 raw layout (DatasetXXX_Name), 3D NIfTI or 2D PNG.

Layout: dataset.json (`channel_names`, `labels` name -> value with background 0, `file_ending`),
imagesTr/<case>_0000<file_ending> (one file per channel, _0001 for the second...) and
labelsTr/<case><file_ending> (imagesTs/ has no labels and is ignored). See nnunet_config.

Options (besides seed, fractions, skip_bad):
- labels (None): None keeps EVERY foreground label of dataset.json as a class, in value order
  (what nnU-Net itself trains); otherwise as for `msd`: one label = binary, a list = those classes
  in that order, a list inside the list merges labels into one class.
- channel (0): which channel file (_0000, _0001...) to read. 2D datasets whose channel_names are
  three (R, G, B) and which have no _0001 files hold RGB in _0000.png, the nnU-Net convention for
  natural images: they are read as RGB.
- NIfTI only, as for `msd`: axis, window, percentiles, empty_slices (slices to 2D like msd does).
Split: by case, drawn by seed (nnU-Net's own folds live in its preprocessed folder, not here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from featcache.data.base import Sample, SampleInfo, SegmentationDataset, assign_splits, safe_id
from featcache.data.digest import digest_files
from featcache.data.files import FileProblem, check_same_size, read_label_image
from featcache.data.loaders.msd import DEFAULTS, MSDSlices, slice_dataset
from featcache.data.loaders.msd_config import (
    Classes,
    Volume,
    class_names,
    resolve_classes,
    slice_config,
    stored_labels,
)
from featcache.data.loaders.nnunet_config import NnunetJson, find_cases, read_nnunet_json
from featcache.data.options import fingerprint_options, locate, require_root, resolve_options
from featcache.data.recipe import Labels, Recipe
from featcache.data.screen import raise_first, screen, skipped_reasons
from featcache.data.serving import image_input
from featcache.data.volumes import check_labels, label_map, read_header
from featcache.errors import DatasetError

EXPECTED = ("an nnU-Net v2 raw dataset folder (dataset.json, imagesTr/<case>_0000.nii.gz|.png, "
            "labelsTr/<case>.nii.gz|.png)")


class NnunetSlices(MSDSlices):
    """3D NIfTI cases sliced to 2D, exactly as `msd` slices its volumes."""

    name = "nnunet"
    modality = "per dataset.json channel_names"


class NnunetImages(SegmentationDataset):
    """2D PNG cases: one sample per case."""

    name = "nnunet"
    modality = "per dataset.json channel_names"

    def __init__(self, samples: list[SampleInfo], files: list[tuple[Path, Path]], meta: NnunetJson,
                 classes: Classes, channels: int, options: dict[str, Any]) -> None:
        super().__init__(samples, options)
        self.files, self.meta, self.label_classes = files, meta, classes
        self.channels = channels
        self.classes = class_names(classes, meta.labels)
        self.modality = "/".join(meta.channels) if channels == 3 else meta.channels[options["channel"]]

    @property
    def recipe(self) -> Recipe:
        return image_recipe(self.channels, self.options["channel"], self.label_classes, self.classes)

    def _load(self, index: int) -> Sample:
        image, mask = decode_pair(self.files[index], self.recipe, self.meta)
        return Sample(self.samples[index].id, image, mask)

    def content_digest(self, index: int) -> str:
        return digest_files(list(self.files[index]))


def _classes(given: Any, meta: NnunetJson) -> Classes:
    """The `labels` option, None meaning every foreground label of dataset.json in value order."""
    if given is None:
        given = [v for v in sorted(meta.labels) if v != 0]
        if not given:
            raise DatasetError("nnunet: dataset.json declares no foreground label (only background)")
    return resolve_classes(given, meta.labels, "nnunet")


def _rgb(root: Path, meta: NnunetJson) -> bool:
    """nnU-Net's natural-image convention: three channel names, all in the one _0000.png file."""
    return meta.is_2d and len(meta.channels) == 3 and not any((root / "imagesTr").glob("*_0001.png"))


def image_recipe(channels: int, channel: int, classes: Classes, names: tuple[str, ...]) -> Recipe:
    """How a 2D case is read: its _000c file (RGB when the three channels share _0000.png)."""
    return Recipe("image", channels=channels, channel=channel, labels=Labels(names, classes))


def decode_pair(files: tuple[Path, Path], recipe: Recipe, meta: NnunetJson
                ) -> tuple[np.ndarray, np.ndarray]:
    """-> image float32 (H, W, channels), mask uint8 (H, W) label map 0..len(classes)."""
    image_path, label_path = files
    image = image_input(image_path, recipe)
    raw = read_label_image(label_path)
    check_same_size(image, raw, image_path, label_path)
    check_labels(raw, label_path, set(meta.labels))
    return image, label_map(raw, recipe.labels.values)


def _volumes(root: Path, meta: NnunetJson, opts: dict[str, Any]
             ) -> tuple[list[Volume], list[FileProblem], dict[str, str]]:
    """-> (3D cases in case order, pairing/header problems, {volume id: split})."""
    found, problems = find_cases(root, meta, opts["channel"])
    volumes = []
    for case, image, label in found:
        try:
            ishape, zooms = read_header(image)
            lshape, _ = read_header(label)
        except FileProblem as problem:
            problems.append(problem)
            continue
        if len(ishape) != 3 or ishape != lshape:
            problems.append(FileProblem(label, f"expected a 3D label the shape of its image, got "
                                               f"{lshape} and {image.name} {ishape}"))
            continue
        volumes.append(Volume(safe_id(case), image, label, tuple(zooms[:3])))
    split_of = assign_splits([v.id for v in volumes], opts["seed"], opts["fractions"])
    return volumes, problems, split_of


def _build_3d(root: Path, meta: NnunetJson, options: dict[str, Any]) -> NnunetSlices:
    opts = resolve_options("nnunet", options, DEFAULTS)
    classes = _classes(opts["labels"], meta)
    config = slice_config("nnunet", meta.name, meta.channels, meta.labels, opts, classes)
    return slice_dataset(NnunetSlices, root, config, _volumes(root, meta, opts), opts)  # type: ignore[return-value]


def _build_2d(root: Path, meta: NnunetJson, options: dict[str, Any]) -> NnunetImages:
    opts = resolve_options("nnunet", options, {"channel": 0, "labels": None})
    rgb = _rgb(root, meta)
    channel = opts["channel"]
    if not isinstance(channel, int) or not 0 <= channel < (1 if rgb else len(meta.channels)):
        known = "0 (R, G, B are one file)" if rgb else f"0..{len(meta.channels) - 1}"
        raise DatasetError(f"nnunet: channel must be {known}, got {channel!r}")
    classes = _classes(opts["labels"], meta)
    found, problems = find_cases(root, meta, channel)
    channels = 3 if rgb else 1
    recipe = image_recipe(channels, channel, classes, class_names(classes, meta.labels))
    if not opts["skip_bad"]:
        raise_first(problems)
        skipped: list[dict[str, str]] = []
    else:
        skipped = [p.record() for p in problems]
        found, bad = screen(found, lambda f: f[1:], lambda f: decode_pair(f[1:], recipe, meta),
                            salt=f"nnunet:{channels}:{channel}")
        skipped += bad
    if not found:
        raise DatasetError(f"nnunet: no usable cases in {root}" + skipped_reasons(skipped))
    ids = [safe_id(case) for case, _, _ in found]
    split_of = assign_splits(ids, opts["seed"], opts["fractions"])
    samples = [SampleInfo(i, split_of[i], i, {"case": case, "file": str(image.relative_to(root))})
               for i, (case, image, _) in zip(ids, found, strict=True)]
    stored = fingerprint_options({**opts, "labels": stored_labels(classes)})
    dataset = NnunetImages(samples, [(image, label) for _, image, label in found], meta, classes,
                           channels, stored)
    dataset.skipped = skipped
    return dataset


SUMMARY = ("nnU-Net v2 raw: dataset.json + imagesTr/<case>_0000 + labelsTr/ (.nii.gz sliced to 2D, "
           "or .png); every label a class by default; split by case")


def build_nnunet(root: Path | None, **options: Any) -> NnunetSlices | NnunetImages:
    root = locate("nnunet", require_root("nnunet", root, EXPECTED), ("dataset.json", "imagesTr"),
                  EXPECTED)
    meta = read_nnunet_json(root)
    return _build_2d(root, meta, options) if meta.is_2d else _build_3d(root, meta, options)
