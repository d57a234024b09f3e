"""`msd`: one Medical Segmentation Decathlon task folder (e.g. Task09_Spleen), sliced to 2D.

Layout: dataset.json (modality, labels), imagesTr/<case>.nii.gz and labelsTr/<case>.nii.gz with the
same names (imagesTs/ has no labels and is ignored; macOS '._' files are ignored).

Options (besides seed, fractions, skip_bad):
- axis (2): slice k is volume[..., k] for axis 2 (volumes.slice_at), in stored voxel order (no
  reorientation).
- channel (0): for 4D multi-modal tasks (BrainTumour, Prostate), which modality to use.
- labels (None): None = binary, any foreground. A label (value or dataset.json name) = binary, that
  structure; a list of them = multi-class, mask value k + 1 for the k-th (`classes` holds their
  names); a list inside the list merges labels into one class ([[1, 2]], the old union of 1 and 2).
- window (None): CT tasks default to (-160, 240) HU; an explicit [lo, hi] applies to any modality.
  MRI (no window) is scaled by the volume's percentiles (default 1, 99) of its non-zero voxels.
- empty_slices ("balanced"): which slices without foreground to keep. "balanced" keeps every
  foreground slice plus as many empty ones from the same volume (all, if fewer), drawn by seed;
  "all" keeps every slice, "none" drops empty ones, a number in [0, 1] keeps that fraction of each
  volume's empty slices (drawn by seed).
Split: by VOLUME (group = case id), so slices of one patient never straddle splits.
"""

from __future__ import annotations

import threading
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from featcache.data.base import Sample, SampleInfo, SegmentationDataset
from featcache.data.digest import digest_files
from featcache.data.files import FileProblem
from featcache.data.loaders.msd_config import (
    MSDConfig,
    Volume,
    discover,
    read_config,
    stored_labels,
)
from featcache.data.options import fingerprint_options, locate, require_root, resolve_options
from featcache.data.readers import Scan
from featcache.data.recipe import Intensity, Labels, Recipe, Slicing
from featcache.data.screen import raise_first, screen, skipped_reasons
from featcache.data.serving import SlicedVolume, class_map
from featcache.data.volumes import check_labels, foreground_slices, nifti_scan, read_volume, slice_at
from featcache.errors import DatasetError

EXPECTED = "an MSD task folder (dataset.json, imagesTr/*.nii.gz, labelsTr/*.nii.gz)"
DEFAULTS: dict[str, Any] = {"axis": 2, "channel": 0, "labels": None, "window": None,
                            "percentiles": (1.0, 99.0), "empty_slices": "balanced"}


class MSDSlices(SegmentationDataset):
    name = "msd"
    modality = "CT / MRI (per dataset.json)"
    channels = 1
    reader = "nifti"  # the registered reader (data/readers.py) its recipe names

    def __init__(self, samples: list[SampleInfo], volumes: dict[str, Volume], config: MSDConfig,
                 options: dict[str, Any]) -> None:
        super().__init__(samples, options)
        self.volumes = volumes
        self.config = config
        self.modality = config.modality
        self.classes = config.class_names
        # Decoded cases kept in memory (least recently used first out). A .nii.gz cannot be read
        # slice by slice, and samples are ordered by case, so 1 suffices for a pass in order; random
        # access (training) wants more: raise `max_cached_volumes` if memory allows.
        self.max_cached_volumes = 1
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, tuple[SlicedVolume, np.ndarray]] = OrderedDict()
        self._recipe = slice_recipe(config, self.reader)

    @property
    def recipe(self) -> Recipe:
        return self._recipe

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for worker processes: the lock and the decoded volumes stay behind.
        state = dict(self.__dict__)
        state["_lock"], state["_cache"] = None, OrderedDict()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _volume(self, vid: str) -> tuple[SlicedVolume, np.ndarray]:
        """(the case's image through the recipe, its label (X, Y, Z)), decoded once while cached."""
        with self._lock:
            if vid in self._cache:
                self._cache.move_to_end(vid)
                return self._cache[vid]
            scan, label = self._decode(vid)
            volume = SlicedVolume(scan, self.recipe)
            entry = (volume, volume.orient(label))
            self._cache[vid] = entry
            while len(self._cache) > max(1, self.max_cached_volumes):
                self._cache.popitem(last=False)
            return entry

    def _decode(self, vid: str) -> tuple[Scan, np.ndarray]:
        """Read one case from its files -> (its image scan, its label (X, Y, Z)); subclasses read
        other formats."""
        return load_volume(self.volumes[vid], self.config)

    def _load(self, index: int) -> Sample:
        info = self.samples[index]
        volume, label = self._volume(info.meta["volume"])
        k = info.meta["slice"]
        return Sample(info.id, volume.plane(k), class_map(label[slice_at(k, volume.axis)], self.recipe))

    def content_digest(self, index: int) -> str:
        info = self.samples[index]
        vol = self.volumes[info.meta["volume"]]
        return digest_files([vol.image, vol.label], salt=f"slice {info.meta['slice']}")


def slice_recipe(config: MSDConfig, reader: str = "nifti") -> Recipe:
    """How `msd` (and the loaders built on it) read a case: the CT window or the percentiles of
    the volume's nonzero voxels, slices along the axis in stored voxel order, the chosen labels."""
    intensity = Intensity("window", *config.window) if config.window is not None else \
        Intensity("percentiles", *config.percentiles, "nonzero")
    return Recipe(reader, channels=1, channel=config.channel, intensity=intensity,
                  slicing=Slicing(axis=config.axis), labels=Labels(config.class_names, config.classes))


def load_volume(vol: Volume, config: MSDConfig) -> tuple[Scan, np.ndarray]:
    """Decode and check one case -> its image scan (the chosen channel), label (X, Y, Z)."""
    image, affine = nifti_scan(vol.image, config.channel)
    label = read_volume(vol.label)
    if image.shape != label.shape:
        raise FileProblem(vol.label, f"label shape {label.shape} differs from image {vol.image.name} "
                                     f"shape {image.shape}")
    check_labels(label, vol.label, set(config.declared_labels))
    return Scan(vol.image, image, affine), label  # nifti_scan refused NaN or inf voxels


def _keep(fg: list[bool], policy: str | float, rng: np.random.Generator) -> list[int]:
    """Slice indices to keep under the empty-slice policy (see module docstring)."""
    full = [k for k, f in enumerate(fg) if f]
    empty = [k for k, f in enumerate(fg) if not f]
    if policy == "all":
        return list(range(len(fg)))
    if policy == "none":
        return full
    n = min(len(full), len(empty)) if policy == "balanced" else round(float(policy) * len(empty))
    chosen = rng.choice(len(empty), size=n, replace=False) if n else []
    return sorted(full + [empty[i] for i in chosen])


def volume_slices(vol: Volume, split: str, config: MSDConfig, seed: int,
                  fg: list[bool] | None = None) -> list[SampleInfo]:
    """The kept slices of one volume (see the empty_slices policy), ids `<case>_s<k>`. `fg` (does
    slice k hold foreground?) is read from the label file when not given."""
    if fg is None:
        fg = foreground_slices(vol.label, config.axis, config.foreground)
    rng = np.random.default_rng([seed, zlib.crc32(vol.id.encode())])
    spacing = [round(s, 6) for a, s in enumerate(vol.spacing[:3]) if a != config.axis]
    return [SampleInfo(f"{vol.id}_s{k:04d}", split, vol.id,
                       {"volume": vol.id, "slice": k, "axis": config.axis, "spacing": spacing,
                        "modality": config.modality, "task": config.task, "foreground": fg[k]})
            for k in _keep(fg, config.empty_slices, rng)]


SUMMARY = ("Medical Segmentation Decathlon task: dataset.json + imagesTr/ + "
           "labelsTr/ (*.nii.gz), 2D slices, split by volume")


def build_msd(root: Path | None, **options: Any) -> MSDSlices:
    opts = resolve_options("msd", options, DEFAULTS)
    root = locate("msd", require_root("msd", root, EXPECTED), ("dataset.json", "imagesTr"), EXPECTED)
    config = read_config(root, opts)
    return slice_dataset(MSDSlices, root, config, discover(root, config, opts), opts)


def slice_dataset(cls: type[MSDSlices], root: Path, config: MSDConfig,
                  found: tuple[list[Volume], list[FileProblem], dict[str, str]],
                  opts: dict[str, Any]) -> MSDSlices:
    """Apply the bad-input policy to discovered (volumes, problems, split of each) and slice them."""
    volumes, problems, split_of = found
    if not opts["skip_bad"]:
        raise_first(problems)
        skipped: list[dict[str, str]] = []
    else:
        skipped = [p.record() for p in problems]
        kept, bad = screen(volumes, lambda v: (v.image, v.label), lambda v: load_volume(v, config),
                           salt=f"{cls.name}:{config.channel}")
        volumes, skipped = kept, skipped + bad
    samples = [s for v in volumes for s in volume_slices(v, split_of[v.id], config, opts["seed"])]
    if not samples:
        raise DatasetError(f"{cls.name}: no slices to use in {root}" + skipped_reasons(skipped))
    stored = fingerprint_options({**opts, "window": config.window,
                                  "labels": stored_labels(config.classes)})
    dataset = cls(samples, {v.id: v for v in volumes}, config, stored)
    dataset.skipped = skipped
    return dataset
