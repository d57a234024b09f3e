"""featcache from Python: a shared store's entries, a torch Dataset of images, masks and aligned
teacher features, and a trained student as a predictor. Thin wrappers over the objects the CLI
uses (FeatureStore, EntryReader, DistillItems, Predictor); each exposes the one it wraps.
`import featcache` does not import this module (torch) until one of these names is used.

    import featcache
    store = featcache.open_store("./featcache-store")
    entry = store.find(teacher="litemedsam", dataset="demo")[0]
    data = featcache.CachedFeatures([entry], split="train", image_size=128)
    model = featcache.load_student("runs/demo")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import default_collate

from featcache.data.base import SegmentationDataset
from featcache.data.registry import build_dataset
from featcache.distill.batches import Finish
from featcache.distill.data import DistillItems, Source, training_items
from featcache.distill.targets import Target
from featcache.errors import ConfigError, StoreError
from featcache.evaluate.predictor import Predictor
from featcache.store import EntryReader, FeatureStore

__all__ = ["CachedFeatures", "Entry", "Store", "load_student", "open_store"]

_HIDDEN_META = ("layout", "sample_ids")  # bulky and already exposed as attributes


@dataclass
class Entry:
    """One store entry: a teacher's features over one dataset. `reader` is the store's EntryReader."""

    reader: EntryReader

    @property
    def key(self) -> str:
        return self.reader.key

    @property
    def teacher(self) -> str:
        return str(self.reader.meta.get("teacher", {}).get("name", ""))

    @property
    def dataset(self) -> str:
        return str(self.reader.meta.get("dataset", {}).get("name", ""))

    @property
    def samples(self) -> tuple[str, ...]:
        """Sample ids in store order; `features` takes an id or its position here."""
        return self.reader.ids

    @property
    def levels(self) -> dict[str, tuple[int, int, int]]:
        """Level name -> (channels, height, width) of its feature maps."""
        return {name: (lv.channels, lv.height, lv.width) for name, lv in self.reader.levels.items()}

    @property
    def views(self) -> int:
        return self.reader.layout.views

    @property
    def complete(self) -> bool:
        return self.reader.complete

    @property
    def provenance(self) -> dict[str, Any]:
        """Who made it from what: teacher (weights sha256, architecture, preprocessing), dataset
        (fingerprint, options, split), views, versions, host and user."""
        return {k: v for k, v in self.reader.meta.items() if k not in _HIDDEN_META}

    def _index(self, sample: int | str) -> int:
        return self.reader.index_of(sample) if isinstance(sample, str) else int(sample)

    def features(self, level: str, sample: int | str, view: int = 0) -> np.ndarray:
        """float32 (C, H, W) as stored: the teacher's map of `sample` (id or index) for one view."""
        return self.reader.read(self._index(sample), level, view)

    def frame(self, sample: int | str, view: int = 0) -> np.ndarray:
        """float32 (4,): where the image lies on the teacher's grid, (y0, x0, y1, x1) as fractions."""
        return self.reader.frames(self._index(sample))[view]

    def stats(self, level: str) -> dict[str, np.ndarray]:
        """Per-channel statistics computed at extraction (mean, std, …) for normalising."""
        return self.reader.stats(level)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in self.levels.items())
        return f"Entry({self.key}: {self.teacher} on {self.dataset}, {len(self.samples)} samples, {shapes})"


@dataclass
class Store:
    """A feature store opened for reading. `store` is the FeatureStore the CLI uses."""

    store: FeatureStore

    @property
    def url(self) -> str:
        return str(self.store.url)

    def entry(self, key: str, allow_incomplete: bool = False) -> Entry:
        return Entry(self.store.open(key, allow_incomplete=allow_incomplete))

    def entries(self, allow_incomplete: bool = False) -> list[Entry]:
        found = [Entry(self.store.open(k, allow_incomplete=True)) for k in self.store.entries()]
        return [e for e in found if allow_incomplete or e.complete]

    def find(self, teacher: str | None = None, dataset: str | None = None) -> list[Entry]:
        """Complete entries, optionally of one teacher and/or one dataset."""
        return [e for e in self.entries() if teacher in (None, e.teacher) and dataset in (None, e.dataset)]

    def __repr__(self) -> str:
        return f"Store({self.url}, {len(self.store.entries())} entries)"


def open_store(url: str | Path | None = None) -> Store:
    """Open a store read-only: a folder, file://, memory:// or s3:// URL; None = $FEATCACHE_STORE or
    ./featcache-store, as the CLI does."""
    return Store(FeatureStore(url, read_only=True))


def load_student(run: str | Path, checkpoint: str = "best", threshold: float = 0.5) -> Predictor:
    """A trained run's student as the Predictor `featcache predict` uses: `predict(path)` reads an
    image or volume file with the input recipe of the dataset it is like (as training read it) and
    returns float32 foreground probabilities on the file's grid; `predict(image)` takes a numpy
    (H, W) or (H, W, C) image (uint8, uint16 or float) and returns (H, W); `predict_mask` the bool
    mask at `threshold`; `.recipes` the run's recipes; `.student` is the nn.Module."""
    return Predictor.from_run(Path(run), checkpoint, threshold)


def _group_by_dataset(entries: Sequence[Entry]) -> list[list[Entry]]:
    """Entries of the same dataset content (fingerprint) become one source, one entry per teacher."""
    groups: dict[str, list[Entry]] = {}
    for e in entries:
        fp = str(e.reader.meta.get("dataset", {}).get("fingerprint", e.key))
        group = groups.setdefault(fp, [])
        if any(other.teacher == e.teacher for other in group):
            raise ConfigError(f"entries {group[0].key} and {e.key} are both teacher {e.teacher} on the same "
                              "data; pass one of them")
        group.append(e)
    return list(groups.values())


def _dataset_for(group: list[Entry], roots: dict[str, str | Path] | str | Path | None) -> SegmentationDataset:
    meta = group[0].reader.meta.get("dataset", {})
    name = str(meta.get("name", ""))
    root = roots.get(name) if isinstance(roots, dict) else roots
    root = root if root is not None else meta.get("root")
    options = {k: v for k, v in (meta.get("options") or {}).items() if k != "root"}
    dataset = build_dataset(name, root, **options)
    if dataset.fingerprint() != meta.get("fingerprint"):
        raise StoreError(f"entry {group[0].key} was made from different data than dataset {name} at "
                         f"{root}; pass the root it was extracted from (roots={{'{name}': PATH}})")
    return dataset


class CachedFeatures(DistillItems):
    """A torch Dataset over one or more entries: per (sample, stored view) the image and mask with
    that view applied, and every teacher level resampled onto the image's frame.

    item -> {"image": float32 (C, S, S) in [0, 1], "mask": float32 (1, S, S), "dataset": int,
             "index": int, "features": {"teacher/level": float32 (C_t, h, w)},
             "valid": {"teacher/level": float32 (1, h, w)}: the fraction of each cell the teacher saw}

    Entries of one dataset (several teachers) are read together; entries of several datasets are
    concatenated. `roots` is the dataset folder (or {dataset name: folder}); the demo needs none.
    `grid` is (h, w) for every level (default: each teacher's own grid; a coarser one is
    area-averaged). `normalisation`: "standardize" with the stored statistics, "phis" or "none".
    It is the training loader's own Dataset (DistillItems) with friendlier keys, each item finished
    alone where it is read, by the code the trainer finishes its batches with: wrap it in a torch
    DataLoader with workers as usual.
    """

    def __init__(self, entries: Entry | Sequence[Entry],
                 roots: dict[str, str | Path] | str | Path | None = None, split: str = "train",
                 image_size: int = 256, levels: Sequence[str] | None = None,
                 grid: tuple[int, int] | None = None, normalisation: str = "standardize",
                 views: int | str = "all") -> None:
        entries = [entries] if isinstance(entries, Entry) else list(entries)
        if not entries:
            raise ConfigError("CachedFeatures needs at least one entry (store.find(...) returned none?)")
        sources, targets = [], {}
        for i, group in enumerate(_group_by_dataset(entries)):
            sources.append(Source(i, _dataset_for(group, roots), {e.teacher: e.reader for e in group},
                                  min(e.views for e in group)))
            for e in group:
                for t in _targets(e, levels, grid):
                    if targets.setdefault(_name(t), t) != t:
                        raise StoreError(f"teacher {e.teacher} level {t.level} has different shapes across "
                                         f"datasets: {targets[_name(t)].grid} vs {t.grid}")
        if len({frozenset(s.entries) for s in sources}) > 1:
            raise ConfigError("every dataset needs an entry of every teacher, or the batches would differ")
        items = [it for s in sources for it in training_items(s, split, views, 1.0, 0)]
        channels = max(int(s.dataset.channels) for s in sources)
        super().__init__(sources=sources, items=items, targets=list(targets.values()), image_size=image_size,
                         channels=channels, normalisation=normalisation, with_teachers=True)

    def __getitem__(self, k: int) -> dict[str, Any]:
        # One item finished as the trainer finishes a batch of them (batches.Finish), on the CPU.
        raw = super().__getitem__(k)
        batch = Finish(self, torch.device("cpu"))(default_collate([raw]))
        item = {key: value[0] if isinstance(raw.get(key), torch.Tensor) or key.startswith(("t:", "v:"))
                else raw[key] for key, value in batch.items() if key not in ("epoch", "item")}
        # The trainer's keys also name the student stage a target feeds; here there is none.
        features = {_name(t): item.pop(f"t:{t.key}").float() for t in self.targets}
        valid = {_name(t): item.pop(f"v:{t.key}") for t in self.targets}
        return {**item, "features": features, "valid": valid}


def _name(target: Target) -> str:
    return f"{target.teacher}/{target.level}"


def _targets(entry: Entry, levels: Sequence[str] | None, grid: tuple[int, int] | None) -> list[Target]:
    out = []
    for level in levels or list(entry.levels):
        if level not in entry.levels:
            raise StoreError(f"entry {entry.key} has no level {level!r}; it has {', '.join(entry.levels)}")
        c, h, w = entry.levels[level]
        out.append(Target(teacher=entry.teacher, level=level, channels=c, grid=(h, w),
                          loss_grid=tuple(grid) if grid else (h, w)))
    return out
