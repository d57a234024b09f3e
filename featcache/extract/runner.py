"""The extraction runner: one teacher over one dataset into one store entry.

Flow per missing shard: a DataLoader decodes, augments and preprocesses samples in worker
processes; the teacher runs on batches; a background thread compresses and writes the finished
shard (data first, then its commit marker) while the teacher already works on the next one.
A complete entry is a cache hit; a partial one resumes only its missing shards.
"""

from __future__ import annotations

import getpass
import hashlib
import platform
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

import featcache
from featcache.data.base import SegmentationDataset
from featcache.data.views import PARAM_NAMES, apply_view, sample_view
from featcache.errors import DatasetError, StoreError
from featcache.extract.stats import ChannelStats
from featcache.store import EntryLayout, FeatureStore, LevelLayout, entry_key
from featcache.teachers.base import Teacher

ProgressFn = Callable[[str, int, int], None]  # (event, done, total)


@dataclass
class ExtractionResult:
    key: str
    status: str  # "cached", "extracted" or "resumed"
    samples: int
    views: int
    shards_written: int
    seconds: float
    feature_bytes: int

    @property
    def images_per_s(self) -> float:
        n = self.shards_written and self.samples * self.views
        return n / self.seconds if self.seconds > 0 and n else 0.0


class _ViewItems(Dataset):
    """(sample index, view) -> prepared teacher input, box and view parameters."""

    def __init__(self, dataset: SegmentationDataset, teacher: Teacher, items: list[tuple[int, int]],
                 view_seed: int) -> None:
        self.dataset, self.teacher, self.items, self.view_seed = dataset, teacher, items, view_seed

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict[str, Any]:
        index, view = self.items[k]
        sample = self.dataset.load(index)
        params = sample_view(sample.id, view, self.view_seed)
        image, _ = apply_view(sample.image, None, params)
        x, box = self.teacher.prepare(image)
        return {"x": x, "box": torch.tensor(box), "params": torch.from_numpy(params.to_array()),
                "index": index, "view": view}


def extraction_key(dataset: SegmentationDataset, teacher: Teacher, levels: list[str], split: str,
                   views: int, view_seed: int, precision: str) -> tuple[str, str]:
    """(entry key, dataset fingerprint). Everything that changes stored bytes is in the key."""
    dataset_fp = dataset.fingerprint()
    recipe = f"{teacher.fingerprint(levels)}:{split}:{views}:{view_seed}:{precision}"
    return entry_key(dataset.name, dataset_fp, teacher.name,
                     hashlib.sha256(recipe.encode()).hexdigest()), dataset_fp


def extract(dataset: SegmentationDataset, teacher: Teacher, store: FeatureStore, *,
            levels: list[str] | None = None, split: str = "all", views: int = 1, view_seed: int = 0,
            precision: str = "fp16", batch_size: int = 8, shard_size: int = 16,
            loader_workers: int = 0, autocast_dtype: torch.dtype | None = None,
            progress: ProgressFn | None = None) -> ExtractionResult:
    if views < 1:
        raise StoreError("--views must be at least 1 (view 0 is the image itself)")
    specs = teacher.select_levels(levels)
    names = [s.name for s in specs]
    indices = dataset.split_indices(split)
    if not indices:
        raise DatasetError(f"{dataset.name}: split {split!r} has no samples")
    key, dataset_fp = extraction_key(dataset, teacher, names, split, views, view_seed, precision)
    layout = EntryLayout(
        sample_ids=tuple(dataset.samples[i].id for i in indices), views=views,
        levels=tuple(LevelLayout(s.name, s.channels, *s.grid) for s in specs),
        shard_size=shard_size, precision=precision, view_param_names=PARAM_NAMES)
    if store.exists(key) and store.open(key, allow_incomplete=True).complete:
        return ExtractionResult(key, "cached", len(indices), views, 0, 0.0, 0)
    attrs = {
        "teacher": teacher.provenance(names),
        "dataset": {**dataset.describe(), "fingerprint": dataset_fp, "split": split,
                    "root": str(dataset.options.get("root", "")) or None,
                    "split_of": {s.id: s.split for s in dataset.samples},
                    "skipped": list(getattr(dataset, "skipped", []))},
        "views": {"count": views, "seed": view_seed, "policy": "featcache.data.views.sample_view"},
        "versions": {"featcache": featcache.__version__, "torch": torch.__version__,
                     "feature_format": featcache.FEATURE_FORMAT_VERSION},
        "host": platform.node(), "user": getpass.getuser(),
    }
    writer = store.create_entry(key, layout, attrs)
    missing = writer.missing_shards()
    status = "extracted" if len(missing) == layout.num_shards else "resumed"
    start_time = time.perf_counter()
    written = _run_shards(dataset, teacher, writer, layout, indices, missing, names, view_seed,
                          batch_size, loader_workers, autocast_dtype, progress)
    stats = _entry_stats(store, key, names, progress)
    writer.finalize(stats, {"extract_seconds": round(time.perf_counter() - start_time, 2)})
    return ExtractionResult(key, status, len(indices), views, len(missing),
                            time.perf_counter() - start_time, written)


def _run_shards(dataset, teacher, writer, layout, indices, missing, names, view_seed, batch_size,
                loader_workers, autocast_dtype, progress) -> int:
    items = [(indices[i], v) for k in missing for i in range(*layout.shard_range(k))
             for v in range(layout.views)]
    loader = DataLoader(_ViewItems(dataset, teacher, items, view_seed), batch_size=batch_size,
                        num_workers=loader_workers, shuffle=False)
    position = {index: pos for pos, index in enumerate(indices)}
    pending: dict[int, dict[str, Any]] = {}
    futures: list[Future] = []
    written = done = 0
    total = len(items)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="featcache-writer") as pool:
        for batch in loader:
            out = teacher.extract(batch["x"], names, autocast_dtype)
            for j in range(len(batch["index"])):
                pos, view = position[int(batch["index"][j])], int(batch["view"][j])
                shard = pos // layout.shard_size
                buf = pending.setdefault(shard, _new_shard_buffer(layout, shard, names))
                row = pos - layout.shard_range(shard)[0]
                for n in names:
                    buf["features"][n][row, view] = out[n][j].numpy()
                buf["frames"][row, view] = batch["box"][j].numpy()
                buf["params"][row, view] = batch["params"][j].numpy()
                buf["left"] -= 1
                if buf["left"] == 0:
                    futures.append(pool.submit(_commit, writer, shard, pending.pop(shard)))
            done += len(batch["index"])
            if progress:
                progress("images", done, total)
            while len(futures) > 2:  # bound memory: at most 2 finished shards wait for the writer
                written += futures.pop(0).result()
        for f in futures:
            written += f.result()
    return written


def _new_shard_buffer(layout: EntryLayout, shard: int, names: list[str]) -> dict[str, Any]:
    start, stop = layout.shard_range(shard)
    n, v = stop - start, layout.views
    lv = {lvl.name: lvl for lvl in layout.levels}
    return {
        "features": {name: np.zeros((n, v, lv[name].channels, lv[name].height, lv[name].width),
                                    np.float32) for name in names},
        "frames": np.zeros((n, v, 4), np.float32),
        "params": np.zeros((n, v, len(PARAM_NAMES)), np.float32),
        "left": n * v,
    }


def _commit(writer, shard: int, buf: dict[str, Any]) -> int:
    return writer.write_shard(shard, buf["features"], buf["frames"], buf["params"])


def _entry_stats(store: FeatureStore, key: str, names: list[str],
                 progress: ProgressFn | None) -> dict[str, dict[str, np.ndarray]]:
    """Statistics from the committed data itself, so resumed and distributed runs agree."""
    reader = store.open(key, allow_incomplete=True)
    acc = {n: ChannelStats(reader.levels[n].channels) for n in names}
    for i in range(len(reader.ids)):
        for n in names:
            acc[n].update(reader.read(i, n))
        if progress:
            progress("stats", i + 1, len(reader.ids))
    return {n: a.result() for n, a in acc.items()}
