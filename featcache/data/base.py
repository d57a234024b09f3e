"""What every dataset loader produces.

A dataset is a list of `SampleInfo` (id, split, metadata; cheap, known up front) plus `load(index)`
that decodes one sample. Images are float32 (H, W, C) in [0, 1] with C in {1, 3}; masks are uint8
(H, W) label maps: 0 is background, 1..len(classes) the dataset's foreground classes ({0, 1} for
the binary datasets, the default). Ids are unique and path-safe: they become keys in the feature
store.

A dataset's `task` is "segmentation" or "classification". For classification, `classes` names the
image classes (label index = position), each sample carries its class index in `Sample.label` and
in `SampleInfo.meta["label"]` (known without decoding, for stratified splits and probes), and its
mask is all zeros, so that extraction and the cache treat both kinds alike.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featcache.data.recipe import Labels, Recipe
from featcache.errors import DatasetError

SPLITS = ("train", "val", "test")
TASKS = ("segmentation", "classification")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_sample_id(sample_id: str) -> str:
    """Reject ids that could escape a directory or break a store key."""
    if not _SAFE_ID.match(sample_id) or ".." in sample_id:
        raise DatasetError(
            f"sample id {sample_id!r} is not path-safe; use letters, digits, '.', '_' and '-'"
        )
    return sample_id


def safe_id(text: str) -> str:
    """Turn a file stem such as 'benign (12)' into a path-safe id ('benign_12').

    A name with non-ASCII characters keeps its ASCII part and gains a short hash of the whole
    (NFC) name: '日本' and '画像' would otherwise both become 'sample', 'café' and 'cafë' both
    'caf'. The hash makes such ids distinct and stable across machines (macOS stores names
    decomposed, Linux usually composed). ASCII names keep the ids they always had."""
    text = unicodedata.normalize("NFC", text)
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")
    if text.isascii():
        return cleaned or "sample"
    tag = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    return f"{cleaned[:180].rstrip('._-')}_{tag}" if cleaned else f"u{tag}"


def _duplicate_ids(name: str, samples: list[SampleInfo]) -> DatasetError | None:
    """An error naming the files behind the first id that two samples share, None if none."""
    seen: dict[str, SampleInfo] = {}
    for s in samples:
        if s.id in seen:
            first, second = (x.meta.get("file", x.id) for x in (seen[s.id], s))
            if first == second:  # one file listed twice (a CSV row repeated)
                return DatasetError(f"{name}: {first!r} is listed twice (sample id {s.id!r}); remove "
                                    "the repeated row")
            return DatasetError(f"{name}: {first!r} and {second!r} both become sample id {s.id!r}; "
                                "rename one of them")
        seen[s.id] = s
    return None


@dataclass(frozen=True)
class SampleInfo:
    id: str
    split: str
    group: str = ""  # patient or volume id: splits never separate a group
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sample:
    id: str
    image: np.ndarray  # float32 (H, W, C) in [0, 1]
    mask: np.ndarray  # uint8 (H, W) label map, 0..len(classes); all zeros for classification
    meta: dict[str, Any] = field(default_factory=dict)
    label: int = -1  # class index for classification samples; -1 for segmentation ones

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] not in (1, 3):
            raise DatasetError(f"sample {self.id}: image must be (H, W, 1|3), got {self.image.shape}")
        if self.mask.shape != self.image.shape[:2]:
            raise DatasetError(
                f"sample {self.id}: mask {self.mask.shape} does not match image {self.image.shape[:2]}"
            )


class SegmentationDataset(ABC):
    """Base class for loaders. Subclasses fill `self.samples` and implement `_load`."""

    name: str = ""
    modality: str = ""
    channels: int = 1
    labelled: bool = True  # False: images only (all-zero masks), for feature pretraining
    task: str = "segmentation"  # or "classification" (see the module docstring)
    # Segmentation: the foreground classes, mask value k + 1 for classes[k]. Classification: the
    # image classes, label k for classes[k]. Loaders whose classes depend on options set it per
    # instance.
    classes: tuple[str, ...] = ("foreground",)
    graded: bool = False  # classification labels are ordered grades (kappa is the metric to use)

    def __init__(self, samples: list[SampleInfo], options: dict[str, Any] | None = None) -> None:
        for s in samples:
            check_sample_id(s.id)
        duplicate = _duplicate_ids(self.name, samples)
        if duplicate is not None:
            raise duplicate
        if not samples:
            raise DatasetError(f"{self.name}: no samples found")
        self.samples = samples
        self.options = dict(options or {})
        self._index = {s.id: i for i, s in enumerate(samples)}
        # Files left out under skip_bad=True ({"path", "reason"}) and honest remarks about the
        # layout (e.g. a release without test labels). Never dropped silently: `check` prints both.
        self.skipped: list[dict[str, str]] = []
        self.notes: list[str] = []

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def recipe(self) -> Recipe:
        """How one of the dataset's files becomes the student's input and a prediction goes back
        (data/recipe.py): here a 2D image file read with the dataset's channels; loaders of other
        formats declare their own."""
        mask_mode = str(self.options.get("mask_mode", "auto"))
        return Recipe("image", channels=self.channels, labels=Labels(tuple(self.classes), None, mask_mode),
                      task=self.task)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def index_of(self, sample_id: str) -> int:
        try:
            return self._index[sample_id]
        except KeyError:
            raise DatasetError(f"{self.name}: no sample with id {sample_id!r}") from None

    def split_indices(self, split: str) -> list[int]:
        if split == "all":
            return list(range(len(self.samples)))
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; use one of all, {', '.join(SPLITS)}")
        return [i for i, s in enumerate(self.samples) if s.split == split]

    def load(self, index: int) -> Sample:
        sample = self._load(index)
        sample.meta = {**self.samples[index].meta, **sample.meta}
        if sample.image.dtype.kind == "f" and not np.isfinite(sample.image).all():
            # a dataset error, named before a teacher or a student blames itself for NaN
            source = sample.meta.get("file") or sample.meta.get("volume") or sample.id
            raise DatasetError(f"{self.name}: sample {sample.id} ({source}) holds non-finite pixel "
                               "values (NaN or inf); fix the file or leave it out (skip_bad)")
        return sample

    @abstractmethod
    def _load(self, index: int) -> Sample: ...

    def validate_extra(self, index: int) -> None:
        """Decode files a sample has besides its image and mask (e.g. DRIVE's field-of-view mask),
        raising DatasetError if one is bad. `datasets check` calls it; the default has none."""
        return None

    @abstractmethod
    def content_digest(self, index: int) -> str:
        """A hash of the sample's source content (file bytes or array bytes)."""

    def fingerprint(self) -> str:
        """sha256 over the dataset name, options, and every (id, split, content digest)."""
        h = hashlib.sha256()
        h.update(json.dumps({"name": self.name, "options": self.options}, sort_keys=True).encode())
        for i, s in enumerate(self.samples):
            h.update(f"{s.id}\0{s.split}\0{self.content_digest(i)}\n".encode())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        counts = {sp: len(self.split_indices(sp)) for sp in SPLITS}
        return {"name": self.name, "modality": self.modality, "channels": self.channels,
                "task": self.task, "classes": list(self.classes), "graded": self.graded,
                "samples": len(self), "splits": counts, "options": self.options,
                "skipped": len(self.skipped), "notes": list(self.notes)}


def to_float_image(array: np.ndarray, source: str) -> np.ndarray:
    """uint8/uint16/float array (H, W[, C]) -> float32 (H, W, C) in [0, 1]."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise DatasetError(f"{source}: expected a 2D image, got shape {array.shape}")
    if array.shape[2] == 4:  # drop alpha
        array = array[:, :, :3]
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    out = array.astype(np.float32)
    bad = out.size - int(np.count_nonzero(np.isfinite(out)))
    if bad:  # min/max would be NaN and the image silently all zeros
        raise DatasetError(f"{source}: holds {bad} non-finite pixel value(s) (NaN or inf); replace them "
                           "or leave the file out")
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / (hi - lo) if hi > lo else np.zeros_like(out)


def assign_splits(groups: list[str], seed: int, fractions: tuple[float, float, float]) -> dict[str, str]:
    """Deterministic group -> split assignment (train/val/test) by seed; groups are never divided."""
    unique = sorted(set(groups))
    rng = np.random.default_rng(seed)
    order = [unique[i] for i in rng.permutation(len(unique))]
    n = len(order)
    # At least one group per requested (non-zero) split once there are enough groups.
    n_val = (max(1, round(fractions[1] * n)) if n >= 3 else 0) if fractions[1] > 0 else 0
    n_test = (max(1, round(fractions[2] * n)) if n >= 3 else 0) if fractions[2] > 0 else 0
    n_train = n - n_val - n_test
    result = {}
    for k, g in enumerate(order):
        result[g] = "train" if k < n_train else ("val" if k < n_train + n_val else "test")
    return result


def assign_splits_by_stratum(groups: list[str], strata: list[str], seed: int,
                             fractions: tuple[float, float, float]) -> dict[str, str]:
    """assign_splits within each stratum (e.g. BUSI's benign/malignant/normal), so every split keeps
    the class balance. A group must belong to one stratum."""
    result: dict[str, str] = {}
    for stratum in sorted(set(strata)):
        members = [g for g, s in zip(groups, strata, strict=True) if s == stratum]
        result.update(assign_splits(members, seed, fractions))
    return result
