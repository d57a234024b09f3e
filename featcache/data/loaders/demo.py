"""`demo`: slices of the MNI152 2009 T1 template with a real tissue mask.

Axial by default; `planes: [coronal, sagittal]` gives the other two orientations (for testing
orientation transfer, or as a pool of unlabelled images for feature pretraining). The template is
read through the dataset's recipe (`recipe()`), so `featcache predict` serves a T1 NIfTI exactly
as the demo trains: the same intensity scaling, turned the same way by its header.
`target: gm_left` is the grey matter of the left hemisphere alone: the tissue looks the same on
both sides, so a per-pixel probe on a teacher's features cannot tell the target from its mirror
image, and only context (where in the head a cell lies) decides: a benchmark where the task-adapted
probes of output distillation are weak.

nilearn ships the template and its grey-matter, white-matter and brain masks inside its wheel, so
this dataset needs no download and no root. The default target, grey matter, is a thin folded
structure: much harder than the brain outline. All slices come from ONE subject template, so the
split separates slices, not patients: adjacent slices are kept together in blocks of `block`
slices to limit leakage, and the README says so.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from featcache.data.base import Sample, SampleInfo, SegmentationDataset, assign_splits
from featcache.data.readers import Scan
from featcache.data.recipe import Intensity, Recipe, Slicing
from featcache.data.serving import SlicedVolume
from featcache.data.volumes import slice_at
from featcache.errors import DatasetError

TARGETS = ("gm", "wm", "brain", "gm_left")
# Plane -> (stored axis the slice is taken along, id letter, the two in-plane axes, the axis codes
# the RAS template is turned to: slice axis last, anterior (axial) or superior (coronal, sagittal)
# at the top, as viewers show them).
PLANES = {"axial": (2, "z", (0, 1), "PRS"), "coronal": (1, "y", (0, 2), "IRA"),
          "sagittal": (0, "x", (1, 2), "IAR")}
TEMPLATE = Path("MNI152_T1_1mm (nilearn)")  # what errors and the recipe call the template


def recipe(plane: str = "axial") -> Recipe:
    """How the demo reads a T1 volume: the 1st-99th percentile of its positive voxels -> [0, 1],
    slices along the plane's axis shown as viewers show them (a RAS template's axial slice: rows
    to posterior, columns to the right)."""
    return Recipe("nifti", channels=1, intensity=Intensity("percentiles", 1.0, 99.0, "positive"),
                  slicing=Slicing(axis=2, orientation=PLANES[plane][3]))


@lru_cache(maxsize=4)
def _template(target: str) -> tuple[Scan, np.ndarray, tuple[float, ...]]:
    """The template as a scan, the binary target mask on its grid, and its voxel size (mm)."""
    from nilearn import datasets as nd  # the only nilearn import; loads files from its wheel

    template = nd.load_mni152_template(resolution=1)
    tissue = target.split("_")[0]
    loader = {"gm": nd.load_mni152_gm_mask, "wm": nd.load_mni152_wm_mask,
              "brain": nd.load_mni152_brain_mask}[tissue]
    mask = (np.asarray(loader(resolution=1).dataobj) > 0).astype(np.uint8)
    if target.endswith("_left"):  # world x < 0 (RAS: the subject's left), from the affine
        x = template.affine[0, 0] * np.arange(mask.shape[0]) + template.affine[0, 3]
        mask = mask * (x < 0).astype(np.uint8)[:, None, None]
    spacing = tuple(float(z) for z in template.header.get_zooms()[:3])
    scan = Scan(TEMPLATE, np.asanyarray(template.dataobj), np.asarray(template.affine, np.float64))
    return scan, mask, spacing


@lru_cache(maxsize=8)
def _volume(target: str, plane: str) -> tuple[SlicedVolume, np.ndarray]:
    """The template through the plane's recipe, and the mask turned the same way."""
    scan, mask, _ = _template(target)
    volume = SlicedVolume(scan, recipe(plane))
    return volume, volume.orient(mask)


class MNI152Slices(SegmentationDataset):
    name = "demo"
    modality = "MRI (T1, MNI152 2009 template)"
    channels = 1

    def __init__(self, num_slices: int = 40, target: str = "gm", seed: int = 0,
                 fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), block: int = 3,
                 planes: tuple[str, ...] | list[str] = ("axial",)) -> None:
        if target not in TARGETS:
            raise DatasetError(f"demo: unknown target {target!r}; use one of {', '.join(TARGETS)}")
        if num_slices < 6:
            raise DatasetError("demo: num_slices must be at least 6 (train, val and test need slices)")
        unknown = [p for p in planes if p not in PLANES]
        if unknown or not planes:
            raise DatasetError(f"demo: planes {list(planes)}: use one or more of {', '.join(PLANES)}")
        _, mask, spacing = _template(target)
        samples: list[SampleInfo] = []
        for plane in dict.fromkeys(planes):
            axis, letter, in_plane, _ = PLANES[plane]
            # Slices with a meaningful amount of target, spread evenly along the axis.
            area = mask.sum(axis=tuple(a for a in range(3) if a != axis))
            candidates = np.flatnonzero(area >= 0.1 * area.max())
            if len(candidates) < num_slices:
                raise DatasetError(f"demo: only {len(candidates)} {plane} slices have target; "
                                   "lower num_slices")
            picks = candidates[np.linspace(0, len(candidates) - 1, num_slices).round().astype(int)]
            prefix = "" if plane == "axial" else f"{plane}_"
            groups = [f"{prefix}block{k // block}" for k in range(num_slices)]
            split_of = assign_splits(groups, seed, tuple(fractions))
            samples += [
                SampleInfo(id=f"mni152_{letter}{int(k):03d}", split=split_of[g], group=g,
                           meta={"plane": plane, "slice": int(k), "target": target,
                                 "spacing": [spacing[in_plane[0]], spacing[in_plane[1]]]})
                for k, g in zip(picks, groups, strict=True)
            ]
        options = {"num_slices": num_slices, "target": target, "seed": seed,
                   "fractions": list(fractions), "block": block}
        if list(planes) != ["axial"]:  # entries extracted before planes existed keep their key
            options["planes"] = list(dict.fromkeys(planes))
        super().__init__(samples, options)
        self._target = target

    @property
    def recipe(self) -> Recipe:
        """The first plane's recipe (a run trained on several planes is served its first)."""
        return recipe(self.samples[0].meta["plane"])

    def _arrays(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        meta = self.samples[index].meta
        volume, mask = _volume(self._target, meta["plane"])
        return volume.plane(meta["slice"]), np.ascontiguousarray(mask[slice_at(meta["slice"], 2)])

    def _load(self, index: int) -> Sample:
        image, mask = self._arrays(index)
        return Sample(self.samples[index].id, image, mask)

    def content_digest(self, index: int) -> str:
        image, mask = self._arrays(index)
        return hashlib.sha256(image.tobytes() + mask.tobytes()).hexdigest()


SUMMARY = ("MNI152 T1 template axial slices with grey-matter masks "
           "(embedded via nilearn; no root needed)")


def build_demo(root: Path | None = None, **options) -> MNI152Slices:
    if root is not None:
        raise DatasetError("demo: the demo dataset is embedded; leave root unset", fields=("root",))
    return MNI152Slices(**options)
