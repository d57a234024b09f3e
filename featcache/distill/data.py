"""Training data from the cache alone: images and masks from the dataset, teacher features from
the store, with the exact stored view replayed on image and mask.

An item is what is cheap to move between processes: the student's input (the image with its
stored view, at the student's size, not yet augmented), the mask as uint8, and for each teacher
whose features are not resident in the training process (resident.py) its stored maps as they
are stored (float16 for fp16 entries) with the box recorded for the view. The training process
finishes whole batches (batches.py): the teacher maps normalised and resampled onto every tap's
loss grid, the photometric augmentation, on the GPU when there is one.

Item indices carry the epoch: index k of a dataset of n items is item k % n in epoch k // n
(see `Trainer.epoch_batches`), which seeds the augmentation per (run seed, epoch, item) and keeps
a run reproducible whatever the number of loader workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from featcache.data.base import SegmentationDataset
from featcache.data.photometric import Photometric
from featcache.data.views import ViewParams, apply_view, sample_view
from featcache.distill.resample import normaliser
from featcache.distill.targets import Target, loss_grid
from featcache.errors import ConfigError, CorruptEntryError, DatasetError, StoreError
from featcache.manifest import Manifest, TeacherSpec
from featcache.store import EntryReader, FeatureStore
from featcache.store.reader import REPAIR
from featcache.student import student_input


@dataclass
class Source:
    """One dataset with the store entries of every teacher for it."""

    index: int
    dataset: SegmentationDataset
    entries: dict[str, EntryReader]  # teacher label (alias or registry name) -> entry
    views: int  # stored views (or, without a store, the views `sample_view` replays)


def _missing_levels(reader: EntryReader, spec: TeacherSpec) -> list[str]:
    return [lv for lv in spec.levels if lv not in reader.levels]


def resolve_entry(store: FeatureStore, spec: TeacherSpec, dataset: SegmentationDataset,
                  fingerprint: str) -> EntryReader:
    """The manifest's entry key, or with `auto` the one complete entry for teacher + dataset."""
    if spec.entry != "auto":
        reader = store.open(spec.entry)
        found = reader.meta.get("dataset", {}).get("fingerprint")
        if found != fingerprint:
            raise StoreError(f"entry {spec.entry} was made from different data than dataset "
                             f"{dataset.name} (fingerprint {str(found)[:12]} vs {fingerprint[:12]}); "
                             "re-extract, or fix the manifest's dataset root and options")
        missing = _missing_levels(reader, spec)
        if missing:
            raise StoreError(f"entry {spec.entry} (teacher {spec.label}) has no level(s) "
                             f"{', '.join(missing)}; it has {', '.join(reader.levels)}: fix "
                             f"teachers.{spec.label}.levels or re-extract with --levels")
        return reader
    matches, partial, lacking = [], [], []
    for key in store.entries():
        reader = store.open(key, allow_incomplete=True)
        meta = reader.meta
        if (meta.get("teacher", {}).get("name") != spec.name
                or meta.get("dataset", {}).get("fingerprint") != fingerprint):
            continue
        if _missing_levels(reader, spec):
            lacking.append(reader)
        else:
            (matches if reader.complete else partial).append(reader)
    if len(matches) > 1 and spec.arch is not None:
        # Two models under one registry name (DINOv2 and RETFound through timm): the manifest's
        # arch tells them apart. Only then: a stored arch may carry a suffix (`vit_b-custom(...)`).
        matches = [r for r in matches if r.meta["teacher"].get("arch") == spec.arch] or matches
    if len(matches) > 1:
        # An entry of the whole dataset serves every split; one extracted with --split train (a
        # benchmark's, say) only some: beside it, the whole one is the entry meant.
        whole = [r for r in matches if len(r.ids) == len(dataset)]
        matches = whole if len(whole) == 1 else matches
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        keys = ", ".join(r.key for r in matches)
        raise ConfigError(f"teacher {spec.label}: several entries fit dataset {dataset.name} ({keys}); "
                          "set `entry:` in the manifest to one of them")
    damaged = store.damaged_like(dataset.name, spec.name)
    if not partial and damaged:  # what could be the entry is damaged: say so, not "extract first"
        key, why = next(iter(damaged.items()))
        raise CorruptEntryError(f"store {store.url} has no readable entry for teacher {spec.label} on "
                                f"dataset {dataset.name}; entry {key} may be it and is damaged: {why}")
    if partial:
        hint = store.incomplete_hint(partial[0])
    elif lacking:
        hint = (f"entry {lacking[0].key} lacks level(s) {', '.join(_missing_levels(lacking[0], spec))} "
                f"(it has {', '.join(lacking[0].levels)}); fix teachers.{spec.label}.levels or re-extract "
                f"with --levels {','.join(spec.levels)}")
    else:
        hint = _extract_first(spec, dataset)
    raise StoreError(f"store {store.url} has no complete entry for teacher {spec.label} on dataset "
                     f"{dataset.name}: {hint}")


def _extract_first(spec: TeacherSpec, dataset: SegmentationDataset) -> str:
    """The hint for a teacher the store has no entry of: the extract to run, when featcache knows
    the teacher; an unknown name is a typo in the manifest, not something to extract."""
    from featcache.teachers.registry import TEACHERS  # names only: no teacher code is imported

    if spec.name not in TEACHERS:
        raise ConfigError(f"teacher {spec.name!r} is no teacher featcache knows (it knows "
                          f"{', '.join(sorted(TEACHERS))}) and the store has no entry of it; fix "
                          "teachers[].name (`featcache teachers list`, `featcache ls`)")
    return (f"run `featcache extract --teacher {spec.name} --dataset {dataset.name}` first"
            f" with level(s) {', '.join(spec.levels)}")


def _check_samples(source: Source, indices: list[int], split: str) -> None:
    """Every sample used for training must be in every entry (an entry extracted with --split
    train lacks the validation samples): fail before training rather than mid-epoch."""
    for name, reader in source.entries.items():
        known = set(reader.ids)
        missing = [source.dataset.samples[i].id for i in indices
                   if source.dataset.samples[i].id not in known]
        if missing:
            _lacking(source, name, reader, missing, split)


def _lacking(source: Source, name: str, reader: EntryReader, missing: list[str], split: str) -> None:
    """Why an entry of this dataset's fingerprint lacks samples: extracted for another split, or
    (extracted for this one, or naming ids the dataset does not have) its sample_ids were edited."""
    extracted = (reader.meta.get("dataset") or {}).get("split", "all")
    foreign = sorted(set(reader.ids) - {s.id for s in source.dataset.samples})
    if extracted in ("all", split) or foreign:
        named = f" and names {foreign[0]!r}, which the dataset does not have" if foreign else ""
        raise CorruptEntryError(f"entry {reader.key} (teacher {name}) was extracted with --split "
                                f"{extracted}, yet its sample_ids lack {missing[0]!r}{named}: its "
                                f"metadata was edited or damaged; {REPAIR}")
    raise StoreError(f"entry {reader.key} (teacher {name}) lacks {len(missing)} {split} "
                     f"sample(s) of dataset {source.dataset.name}, e.g. {missing[0]!r}; it was "
                     f"extracted with --split {extracted}: extract with --split all")


def _check_views(source: Source, indices: list[int]) -> None:
    """Every teacher must have stored the same views for a sample, or replay would be wrong."""
    readers = list(source.entries.items())
    for name, reader in readers[1:]:
        first_name, first = readers[0]
        for i in indices[:: max(1, len(indices) // 32)]:
            sid = source.dataset.samples[i].id
            a = first.view_params(first.index_of(sid))[: source.views]
            b = reader.view_params(reader.index_of(sid))[: source.views]
            if not np.allclose(a, b, equal_nan=True):
                raise StoreError(f"teachers {first_name} and {name} stored different views for sample "
                                 f"{sid}; extract both with the same --views and view seed")


def build_targets(manifest: Manifest, sources: list[Source], stages: dict[str, tuple[int, int]]
                  ) -> list[Target]:
    targets = []
    for spec in manifest.teachers:
        for level, stage in spec.taps():
            if stage not in stages:
                raise ConfigError(f"teachers.{spec.label}.levels.{level}: unknown student stage "
                                  f"{stage!r}; the student has {', '.join(stages)}")
            grids = {(s.entries[spec.label].levels[level].channels,
                      s.entries[spec.label].levels[level].height,
                      s.entries[spec.label].levels[level].width) for s in sources}
            if len(grids) > 1:
                raise StoreError(f"teacher {spec.label} level {level} has different shapes across "
                                 f"datasets: {sorted(grids)}")
            c, h, w = grids.pop()
            grid = loss_grid((h, w), manifest.student.image_size, stages[stage][1],
                             manifest.distill.feature_grid)
            targets.append(Target(spec.label, level, c, (h, w), stage, grid))
    return targets


class DistillItems(Dataset):
    """Items are (source index, sample index, view); returns the cheap part of a training item
    (see the module docstring); `batches.Finish` makes a batch of them what a step consumes.

    augment: photometric augmentation of the student input (training), None for none; seed: the
    run's seed, which with the epoch and item seeds each augmentation draw. labelled: how many of
    the items (the first ones) are labelled (None: all); the others are unlabelled images of
    semi-supervised training: their mask is all zeros and "has_mask" False, the real one unused."""

    def __init__(self, sources: list[Source], items: list[tuple[int, int, int]],
                 targets: list[Target], image_size: int, channels: int, normalisation: str,
                 with_teachers: bool, augment: Photometric | None = None, seed: int = 0,
                 labelled: int | None = None) -> None:
        self.sources, self.items, self.targets = sources, items, targets
        self.labelled = len(items) if labelled is None else labelled
        self.image_size, self.channels = image_size, channels
        self.with_teachers = with_teachers
        self.augment, self.seed = augment, seed
        # (teacher, level) -> the targets (student stages) it feeds: read once, resampled per stage.
        self.taps: dict[tuple[str, str], list[Target]] = {}
        for t in targets:
            self.taps.setdefault((t.teacher, t.level), []).append(t)
        self.norm = {}
        if with_teachers:
            for s in sources:
                for teacher, level in self.taps:
                    self.norm[(s.index, teacher, level)] = normaliser(s.entries[teacher], level,
                                                                      normalisation)
        # Teachers whose targets the training process holds (resident.py sets both); their maps
        # are not read per item. `resident` stays in the training process: it never pickles.
        self.resident_teachers: frozenset[str] = frozenset()
        self.resident: Any = None

    def __len__(self) -> int:
        return len(self.items)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled into DataLoader worker processes (spawn/forkserver): readers hold locks and
        caches that do not pickle, so they travel as their zarr group + key and are reopened.
        Resident targets stay behind: workers never read them."""
        state = dict(self.__dict__)
        state["sources"] = [Source(s.index, s.dataset, {}, s.views) for s in self.sources]
        state["_readers"] = [{n: (r.group, r.key) for n, r in s.entries.items()} for s in self.sources]
        state["resident"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        readers = state.pop("_readers")
        for source, handles in zip(state["sources"], readers, strict=True):
            source.entries = {n: EntryReader(group, key) for n, (group, key) in handles.items()}
        self.__dict__.update(state)

    def _view(self, source: Source, sample_id: str, view: int) -> ViewParams:
        """The view's parameters: as stored (without a store, as extraction would store them with
        the default view seed)."""
        if not source.entries:
            return sample_view(sample_id, view) if view else ViewParams()
        first = next(iter(source.entries.values()))
        return ViewParams.from_array(first.view_params(first.index_of(sample_id))[view])

    def locate(self, k: int) -> tuple[int, int, tuple[int, int, int]]:
        """An epoch-carrying index -> (epoch, item position, (source, sample index, view))."""
        epoch, k = divmod(k, len(self.items))
        return epoch, k, self.items[k]

    def streamed_teachers(self) -> list[str]:
        """The teachers whose maps items carry (those not resident in the training process)."""
        teachers = dict.fromkeys(teacher for teacher, _ in self.taps)
        return [t for t in teachers if t not in self.resident_teachers]

    def stored(self, k: int, teachers: list[str]) -> dict[str, Any]:
        """Item k's stored maps of `teachers`, read through the store's verified path: "f:T/LEVEL"
        as stored (float16 for fp16 entries: what the store holds, half the bytes of float32)
        and "b:T", the box of the image on T's grid for the item's view."""
        _, _, (src_i, index, view) = self.locate(k)
        source = self.sources[src_i]
        sample_id = source.dataset.samples[index].id
        out: dict[str, Any] = {"dataset": src_i}
        for teacher in teachers:
            reader = source.entries[teacher]
            i = reader.index_of(sample_id)
            out[f"b:{teacher}"] = torch.from_numpy(reader.frames(i)[view])
            half = reader.precision.dtype == "float16"  # float16 values survive float32 exactly
            for (name, level) in self.taps:
                if name == teacher:
                    feature = torch.from_numpy(reader.read(i, level, view))
                    out[f"f:{teacher}/{level}"] = feature.half() if half else feature
        return out

    def __getitem__(self, k: int) -> dict[str, Any]:
        epoch, k, (src_i, index, view) = self.locate(k)
        source = self.sources[src_i]
        sample = source.dataset.load(index)
        has_mask = k < self.labelled
        given = sample.mask if has_mask else np.zeros_like(sample.mask)
        image, mask = apply_view(sample.image, given, self._view(source, sample.id, view))
        m = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))[None, None]
        item: dict[str, Any] = {
            "image": student_input(image, self.image_size, self.channels),
            "mask": F.interpolate(m, size=(self.image_size,) * 2, mode="nearest")[0],
            "label": sample.label if has_mask else -1, "dataset": src_i, "index": index,
            "has_mask": has_mask, "epoch": epoch, "item": k}
        if self.with_teachers:
            item.update(self.stored(k, self.streamed_teachers()))
        return item


def training_items(source: Source, split: str, views: int | str, fraction: float,
                   seed: int, left_out: bool = False) -> list[tuple[int, int, int]]:
    """The items (source, sample, view) of `split`, a `fraction` of its samples drawn with `seed`
    (the labelled set of a low-data run); left_out: the samples that draw leaves out instead (the
    unlabelled images of semi-supervised training)."""
    indices = source.dataset.split_indices(split)
    if not indices:
        raise DatasetError(f"{source.dataset.name}: split {split!r} has no samples")
    if fraction < 1.0:
        rng = np.random.default_rng(seed)
        keep = max(1, round(fraction * len(indices)))
        kept = set(rng.choice(indices, size=keep, replace=False).tolist())
        indices = sorted(i for i in indices if (i in kept) != left_out)
    elif left_out:
        return []
    if not indices:
        return []
    n_views = source.views if views == "all" else min(int(views), source.views)
    if source.entries:
        _check_samples(source, indices, split)
        _check_views(source, indices)
    return [(source.index, i, v) for i in indices for v in range(n_views)]
