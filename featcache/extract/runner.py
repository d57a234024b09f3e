"""The extraction runner: one teacher over one dataset into one store entry.

`plan_entry` decides everything the entry will hold (key, layout, provenance) without running the
teacher; `extract` creates or reopens the entry, runs the shard engine (pipeline.py) on whatever
shards are still missing, waits for shards other writers hold, then writes statistics and the
complete flag. A complete entry is a cache hit (no teacher forward at all); a partial one resumes
only its missing shards. The distributed runner (distributed.py) reuses the same plan and finalize.
"""

from __future__ import annotations

import getpass
import hashlib
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from featcache.data.base import SegmentationDataset
from featcache.data.views import PARAM_NAMES
from featcache.errors import DatasetError, FeatcacheError
from featcache.events import ProgressFn, StatisticsRead
from featcache.extract.adopt import adopt_shards, shard_digests
from featcache.extract.pipeline import ShardRun, run_shards
from featcache.extract.settings import ExtractSettings
from featcache.extract.stats import ChannelStats
from featcache.store import EntryLayout, EntryWriter, FeatureStore, LevelLayout, entry_key
from featcache.store.repair import reopen_damaged
from featcache.teachers.base import Teacher
from featcache.teachers.compute import check_compute_device
from featcache.version import FEATURE_FORMAT_VERSION, __version__

__all__ = ["EntryPlan", "ExtractionResult", "ProgressFn", "extract", "extraction_key",
           "finalize_entry", "plan_entry", "wider_entry_levels"]

_DEFAULTS = ExtractSettings()


@dataclass
class ExtractionResult:
    key: str
    status: str  # "cached", "extracted" or "resumed"
    samples: int
    views: int
    shards_written: int
    seconds: float
    feature_bytes: int
    skipped: int = 0  # samples left out by skip_bad (listed in the entry's provenance)
    workers: int = 1
    repaired: list[int] | None = None  # with repair: the shards re-extracted (None: it verified)

    @property
    def images_per_s(self) -> float:
        n = self.shards_written and self.samples * self.views
        return n / self.seconds if self.seconds > 0 and n else 0.0


@dataclass
class EntryPlan:
    """Everything an entry will hold except features: picklable, so dask workers receive it."""

    key: str
    layout: EntryLayout
    attrs: dict[str, Any]
    names: list[str]
    indices: list[int]  # dataset index of each entry position
    view_seed: int


def extraction_key(dataset: SegmentationDataset, teacher: Teacher, levels: list[str],
                   settings: ExtractSettings) -> tuple[str, str]:
    """(entry key, dataset fingerprint). Everything that changes stored bytes is in the key.
    float32 compute adds nothing to the recipe, so entries keyed before the compute dtype was part
    of it keep their keys (on CUDA those were computed under bfloat16 autocast: `info` says
    "not recorded" for them, tests/extract/test_compute_dtype.py)."""
    dataset_fp = dataset.fingerprint()
    s = settings
    recipe = f"{teacher.fingerprint(levels)}:{s.split}:{s.views}:{s.view_seed}:{s.precision}"
    if s.compute_dtype != "float32":
        recipe += f":compute={s.compute_dtype}"
    return entry_key(dataset.name, dataset_fp, teacher.name,
                     hashlib.sha256(recipe.encode()).hexdigest()), dataset_fp


def plan_entry(dataset: SegmentationDataset, teacher: Teacher, settings: ExtractSettings = _DEFAULTS, *,
               levels: list[str] | None = None) -> EntryPlan:
    """Compression is not part of the entry key: it is lossless, so an entry of the same recipe
    written with another compression is the same cache entry."""
    split, views, view_seed = settings.split, settings.views, settings.view_seed
    specs = teacher.select_levels(levels)
    check_compute_device(settings.compute_dtype, teacher.device)
    names = [s.name for s in specs]
    indices = dataset.split_indices(split)
    if not indices:
        raise DatasetError(f"{dataset.name}: split {split!r} has no samples")
    key, dataset_fp = extraction_key(dataset, teacher, names, settings)
    layout = EntryLayout(
        sample_ids=tuple(dataset.samples[i].id for i in indices), views=views,
        levels=tuple(LevelLayout(s.name, s.channels, *s.grid) for s in specs),
        shard_size=settings.shard_size, precision=settings.precision, view_param_names=PARAM_NAMES,
        compression=settings.compression)
    attrs = {
        "teacher": teacher.provenance(names),
        "dataset": {**dataset.describe(), "fingerprint": dataset_fp, "split": split,
                    "root": str(dataset.options.get("root", "")) or None,
                    "split_of": {s.id: s.split for s in dataset.samples},
                    "skipped": list(getattr(dataset, "skipped", []))},
        "views": {"count": views, "seed": view_seed, "policy": "featcache.data.views.sample_view"},
        "compute": {"dtype": settings.compute_dtype, "device": teacher.device.type},
        "versions": {"featcache": __version__, "torch": torch.__version__,
                     "feature_format": FEATURE_FORMAT_VERSION},
        "host": platform.node(), "user": getpass.getuser(),
    }
    attrs["dataset"]["shard_digests"] = shard_digests(dataset, indices, layout)
    return EntryPlan(key, layout, attrs, names, indices, view_seed)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Statistics computed on one thread, as the writer threads compute them at commit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(threads)


def is_complete(store: FeatureStore, key: str) -> bool:
    return store.exists(key) and store.open(key, allow_incomplete=True).complete


def extract(dataset: SegmentationDataset, teacher: Teacher, store: FeatureStore,
            settings: ExtractSettings = _DEFAULTS, *, levels: list[str] | None = None,
            progress: ProgressFn | None = None,
            wait_poll_s: float = 1.0, adopt: bool = True, repair: bool = False) -> ExtractionResult:
    """Fill the entry for (dataset, teacher, settings); safe to run in several processes at once.

    The teacher runs where it is (settings.device is where run_job puts it), in
    settings.compute_dtype.

    Shards held by other live writers are waited for (polling every `wait_poll_s`) and taken over
    if their claim expires, so every concurrent run returns with a complete entry. With `adopt`,
    committed shards of an unfinished entry of the same recipe whose samples are byte-identical are
    copied instead of extracted (a re-run after fixing one bad file; see adopt.py). With `repair`,
    an existing entry is verified first and the shards that fail are extracted again
    (store/repair.py); its statistics are then recomputed in shard order, as a fresh extraction
    computes them, so the repaired entry's bytes equal a fresh one's.
    """
    plan = plan_entry(dataset, teacher, settings, levels=levels)
    wider = None if store.exists(plan.key) else wider_entry_levels(store, dataset, teacher, settings, plan)
    if wider is not None:  # an entry of the same recipe with more levels holds these: it is the hit
        plan = plan_entry(dataset, teacher, settings, levels=wider)
    views = settings.views
    skipped = len(plan.attrs["dataset"]["skipped"])
    repaired = reopen_damaged(store, plan.key, plan.layout, plan.attrs) if (
        repair and store.exists(plan.key)) else None
    if is_complete(store, plan.key):
        return ExtractionResult(plan.key, "cached" if repaired is None else "repaired", len(plan.indices),
                                views, 0, 0.0, 0, skipped, repaired=repaired)
    writer = store.create_entry(plan.key, plan.layout, plan.attrs)
    writer.hold()  # from here until this returns, `featcache rm` refuses the entry
    try:
        return _fill(store, writer, dataset, teacher, plan, settings, progress, wait_poll_s, adopt,
                     repaired, skipped)
    finally:
        writer.let_go()


def _fill(store: FeatureStore, writer: EntryWriter, dataset: SegmentationDataset, teacher: Teacher,
          plan: EntryPlan, settings: ExtractSettings, progress: ProgressFn | None, wait_poll_s: float,
          adopt: bool, repaired: list[int] | None, skipped: int) -> ExtractionResult:
    """extract()'s work on the open entry: adopt, extract the missing shards, finalize."""
    views = settings.views
    status = "repaired" if repaired is not None else (
        "extracted" if not writer.committed().any() else "resumed")
    start = time.perf_counter()
    run = adopt_shards(store, writer, plan.attrs) if adopt else ShardRun()
    if run.shards and repaired is None:
        status = "resumed"
    try:
        while True:
            part = run_shards(dataset, teacher, writer, plan.indices, plan.names,
                              view_seed=settings.view_seed, batch_size=settings.batch_size,
                              loader_workers=settings.loader_workers, compute_dtype=settings.compute_dtype,
                              progress=progress, writer_threads=settings.writer_threads)
            run.merge(part)
            if not writer.missing_shards():
                break
            time.sleep(wait_poll_s)  # other writers hold the rest: wait for their commits or expiry
            writer.claims.renew_entry()
    except BaseException:
        if repaired is None:  # an entry under repair held data: it stays, to be repaired again
            _drop_if_empty(store, writer)
        raise
    if repaired is not None:  # every shard written counts, also one that had lost its marker
        repaired = sorted(set(repaired) | set(run.shards))
    stats, covered = ({}, set()) if repaired is not None else (run.stats, set(run.shards))
    finalize_once(store, writer, plan, stats, covered, time.perf_counter() - start, progress, wait_poll_s)
    return ExtractionResult(plan.key, status, len(plan.indices), views, len(run.shards),
                            time.perf_counter() - start, run.feature_bytes, skipped, repaired=repaired)


def wider_entry_levels(store: FeatureStore, dataset: SegmentationDataset, teacher: Teacher,
                       settings: ExtractSettings, plan: EntryPlan) -> list[str] | None:
    """The levels of an entry in the store that is this plan's recipe with more levels (a
    complete one first), or None. Its key is recomputed from those levels, so only an entry of
    the same teacher weights, data, split, views and precision can match."""
    found = []
    for key in store.entries():
        reader = store.open(key, allow_incomplete=True)
        if ((reader.meta.get("teacher") or {}).get("name") != teacher.name
                or not set(plan.names) <= set(reader.levels) <= set(teacher.available_levels)):
            continue
        levels = list(reader.levels)
        if extraction_key(dataset, teacher, levels, settings)[0] == key:
            found.append((not reader.complete, key, levels))
    return min(found)[2] if found else None


def _drop_if_empty(store: FeatureStore, writer: EntryWriter) -> None:
    """A failed extraction (every image bad, a teacher error before the first commit) leaves no
    0% entry behind: the entry is removed when nothing in it is committed and no other writer
    holds a live claim (rm refuses then; that writer still fills it)."""
    try:
        if not writer.committed().any():
            writer.let_go()  # its own lease must not stop the removal
            store.remove(writer.key)
    except (FeatcacheError, KeyError, OSError):  # a live claim of another writer, or gone already
        pass


def finalize_once(store: FeatureStore, writer: EntryWriter, plan: EntryPlan,
                  stats: dict[str, ChannelStats], covered: set[int], seconds: float,
                  progress: ProgressFn | None = None, wait_poll_s: float = 1.0) -> None:
    """finalize_entry by exactly one of several concurrent writers; the others wait until the entry
    is complete. The lock is a claim one past the last shard (the same lease protocol)."""
    lock = plan.layout.num_shards
    while not writer.claims.claim(lock):
        if is_complete(store, plan.key):
            return
        time.sleep(wait_poll_s)
        writer.claims.renew_entry()
    try:
        if not is_complete(store, plan.key):
            finalize_entry(store, writer, plan, stats, covered, seconds, progress)
    finally:
        writer.claims.release(lock)


def finalize_entry(store: FeatureStore, writer: EntryWriter, plan: EntryPlan,
                   stats: dict[str, ChannelStats], covered: set[int], seconds: float,
                   progress: ProgressFn | None = None) -> None:
    """Statistics over every committed shard (those in `covered` are already in `stats`; the rest,
    committed by earlier or other runs, are read back), then the complete flag. A shard read back
    gives the same partial sums as at its commit (one update of the whole shard, one thread), and
    partials add exactly: the statistics are the same bytes however the entry was filled."""
    acc = {n: ChannelStats(lv.channels) for n, lv in ((lv.name, lv) for lv in plan.layout.levels)}
    for name, part in stats.items():
        acc[name].merge(part)
    rest = [k for k in range(plan.layout.num_shards) if k not in covered]
    if rest:
        reader = store.open(plan.key, allow_incomplete=True)
        with _one_thread():
            for done, shard in enumerate(rest, 1):
                for name in plan.names:
                    rows = range(*plan.layout.shard_range(shard))
                    acc[name].update(np.stack([reader.read(i, name) for i in rows]))
                if progress:
                    progress(StatisticsRead(done, len(rest)))
    writer.finalize({n: a.result() for n, a in acc.items()},
                    {"extract_seconds": round(seconds, 2)})
