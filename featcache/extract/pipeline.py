"""The shard engine: claimed shards in, committed shards (and their statistics) out.

Pipelining, all bounded: DataLoader workers decode, augment and preprocess the next batches while
the teacher runs the current one; writer threads (one per core by default) encode, compress,
checksum and commit finished shards, and compute their statistics, while the teacher already works
on the next. At most one more finished shard than there are writer threads waits, and at most two
shards are being filled, so peak memory depends on batch and shard sizes and the thread count,
never on the dataset size. Shards are separate objects, so writer threads never touch the same
object; claims are thread-safe (claims.py).

Shards are claimed one at a time from the store (EntryWriter.next_shard), so any number of
processes may run this engine on the same entry. A batch never spans two shards: a shard's bytes
depend only on its own samples, whoever extracts it (the claims protocol relies on it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch.utils.data import DataLoader, Dataset

from featcache.data.base import SegmentationDataset
from featcache.data.views import PARAM_NAMES, apply_view, sample_view
from featcache.errors import DatasetError, FeatcacheError
from featcache.events import ImagesExtracted, ProgressFn, ShardsCommitted
from featcache.extract.stats import ChannelStats
from featcache.store import EntryLayout, EntryWriter
from featcache.teachers.base import Teacher, prepare_tensor


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_writer_threads() -> int:
    """One writer thread per core this process may run on: at accelerator speed the commit path
    (statistics, fp16 encoding, compression, crc32c) is what limits extraction, and it scales."""
    return _cores()


def default_loader_workers(batches: int) -> int:
    """Loader processes for an extraction of `batches` batches: half the cores beyond the main
    process's, at least one and at most 8 (the writer threads need the rest), so image decoding
    and resizing leave the teacher's loop (on two cores one worker raised a zero-cost teacher's
    rate from 4.8 to 6.7 img/s, docs/measurements.md); none for fewer than 8 batches, where
    starting a process costs more than it frees."""
    if batches < 8:
        return 0
    return min(8, max(1, (_cores() - 1) // 2))


@dataclass
class ShardRun:
    """What one engine run committed: shards, feature bytes, and their statistics per level."""

    shards: list[int] = field(default_factory=list)
    feature_bytes: int = 0
    stats: dict[str, ChannelStats] = field(default_factory=dict)
    items: int = 0

    def add(self, shard: int, written: int, stats: dict[str, ChannelStats]) -> None:
        self.shards.append(shard)
        self.feature_bytes += written
        self._merge_stats(stats)

    def merge(self, other: ShardRun) -> None:
        self.shards += other.shards
        self.feature_bytes += other.feature_bytes
        self.items += other.items
        self._merge_stats(other.stats)

    def _merge_stats(self, stats: dict[str, ChannelStats]) -> None:
        for name, acc in stats.items():
            if name in self.stats:
                self.stats[name].merge(acc)
            else:
                self.stats[name] = acc


class _ViewItems(Dataset):
    """(sample index, view) -> prepared teacher input, box and view parameters; with `on_device`,
    the decoded view instead ("pixels", (H, W, C): uint8 when that holds it exactly, as for 8-bit
    files, else float32), for the teacher's device to resize and normalise (device_inputs).

    A dataset error becomes an {"error": message} item instead of an exception, so it reaches the
    main process as one line naming the file even from DataLoader worker processes.
    """

    def __init__(self, dataset: SegmentationDataset, teacher: Teacher, view_seed: int,
                 on_device: bool = False) -> None:
        self.dataset, self.teacher, self.view_seed = dataset, teacher, view_seed
        self.on_device = on_device

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, Any]:
        index, view = item
        try:
            sample = self.dataset.load(index)
        except FeatcacheError as exc:
            return {"error": str(exc)}
        params = sample_view(sample.id, view, self.view_seed)
        image, _ = apply_view(sample.image, None, params)
        item = {"params": torch.from_numpy(params.to_array()), "index": index, "view": view}
        if self.on_device:
            return {**item, "pixels": _pixels(image)}
        x, box = self.teacher.prepare(image)
        return {**item, "x": x, "box": torch.tensor(box)}


def _pixels(image: np.ndarray) -> torch.Tensor:
    """float32 (H, W, C) in [0, 1] -> uint8 when q / 255 gives back exactly these values (a quarter
    of the bytes to pin and upload), else the float32 image itself."""
    q = np.rint(image * 255.0).clip(0, 255).astype(np.uint8)
    if np.array_equal(q.astype(np.float32) / np.float32(255), image):
        return torch.from_numpy(q)
    return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack the items' tensors; decoded views of any size stay a list (resized on the device)."""
    for item in items:
        if "error" in item:
            return item
    pixels = [item.pop("pixels") for item in items if "pixels" in item]
    batch = torch.utils.data.default_collate(items)
    if pixels:
        batch["pixels"] = pixels
    return batch


def device_inputs(pixels: list[torch.Tensor], teacher: Teacher) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded views (H, W, C) uint8 or float32, pinned on the host -> the teacher's input batch
    (B, C', S, S) and boxes (B, 4), resized and normalised on the teacher's device (prepare_tensor:
    the same operations as the CPU path, so on the CPU the same values)."""
    device, xs, boxes = teacher.device, [], []
    for p in pixels:
        t = p.to(device, non_blocking=True).permute(2, 0, 1)
        t = t.to(torch.float32) / 255 if t.dtype == torch.uint8 else t
        x, box = prepare_tensor(t, teacher.preprocess)
        xs.append(x)
        boxes.append(box)
    return torch.stack(xs), torch.tensor(boxes)


class _ShardBatches:
    """Batch sampler: claims shards lazily and yields their (sample index, view) items in batches.

    It runs in the main process (DataLoader iterates samplers there), so claims are taken by the
    process that commits. `shards` fixes the list (already claimed by the caller) instead.
    """

    def __init__(self, writer: EntryWriter, indices: list[int], batch_size: int,
                 shards: list[int] | None) -> None:
        self.writer, self.indices, self.batch_size, self.shards = writer, indices, batch_size, shards

    def _next_shards(self) -> Iterator[int]:
        if self.shards is not None:
            yield from self.shards
            return
        while (shard := self.writer.next_shard()) is not None:
            yield shard

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        layout = self.writer.layout
        for shard in self._next_shards():
            items = [(self.indices[pos], v) for pos in range(*layout.shard_range(shard))
                     for v in range(layout.views)]
            for k in range(0, len(items), self.batch_size):
                yield items[k:k + self.batch_size]


def run_shards(dataset: SegmentationDataset, teacher: Teacher, writer: EntryWriter, indices: list[int],
               names: list[str], *, view_seed: int = 0, batch_size: int = 8, loader_workers: int = -1,
               compute_dtype: str = "float32", shards: list[int] | None = None,
               progress: ProgressFn | None = None, writer_threads: int = 0,
               on_device: bool | None = None) -> ShardRun:
    """Extract and commit shards until none is left to claim (or exactly `shards`, already claimed).

    indices[pos] is the dataset index of entry position pos. Claims still held when this returns or
    raises (an interrupted shard) are released, so the shard is free for the next run at once.
    loader_workers -1: default_loader_workers(batches to do); writer_threads 0: one per core.
    on_device None: resize and normalise on the teacher's device when it is CUDA (device_inputs).
    Features stay on the teacher's device until their shard is encoded there (writer threads).
    """
    layout = writer.layout
    committed = writer.committed()  # read once: on an object store each read is a request
    todo = len(shards) if shards is not None else int((~committed).sum())
    workers = loader_workers if loader_workers >= 0 else default_loader_workers(
        todo * layout.shard_size * layout.views // batch_size)
    on_device = _prepare_on_device(teacher, on_device)
    loader = DataLoader(_ViewItems(dataset, teacher, view_seed, on_device), num_workers=workers,
                        batch_sampler=_ShardBatches(writer, indices, batch_size, shards),
                        collate_fn=_collate, persistent_workers=False,
                        pin_memory=teacher.device.type == "cuda")
    position = {index: pos for pos, index in enumerate(indices)}
    run, pending, futures = ShardRun(), {}, []
    threads = writer_threads or default_writer_threads()
    total = layout.num_samples * layout.views
    first = done = layout.views * sum(len(range(*layout.shard_range(k))) for k in np.flatnonzero(committed))
    renewed, base, main_threads = time.monotonic(), int(committed.sum()), torch.get_num_threads()
    try:
        # one BLAS thread per statistics product: the writer threads are the parallelism, and a
        # multi-threaded BLAS beside them (or beside any busy process) ran the products 5x slower
        with threadpool_limits(1, user_api="blas"), \
                ThreadPoolExecutor(max_workers=threads, thread_name_prefix="featcache-writer",
                                   initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for batch in loader:
                if "error" in batch:
                    raise DatasetError(batch["error"])
                x, boxes = device_inputs(batch["pixels"], teacher) if on_device else (
                    batch["x"], batch["box"])
                out = teacher.extract(x, names, compute_dtype, host=False)
                for shard in _place(batch, out, boxes, layout, position, pending, teacher.device):
                    futures.append((shard, pool.submit(_commit, writer, shard, pending.pop(shard))))
                done += len(batch["index"])
                if progress:
                    progress(ImagesExtracted(done, total))
                while len(futures) > threads:  # one more waits: every thread stays busy
                    _collect(run, *futures.pop(0), progress, base, layout)
                renewed = _renew(writer, renewed)
            for shard, future in futures:
                _collect(run, shard, future, progress, base, layout)
    finally:  # an interrupted shard must not stay claimed by a live process
        # torch.set_num_threads is per thread but also sets the default of threads started later:
        # the writer threads' 1 must not become that
        torch.set_num_threads(main_threads)
        for shard in list(writer.claims.held):
            writer.release(shard)
    run.items = done - first  # items extracted by this call
    return run


def _prepare_on_device(teacher: Teacher, asked: bool | None) -> bool:
    """Resize on the device only for teachers with the standard prepare (an override may do more)."""
    standard = type(teacher).prepare is Teacher.prepare
    if asked is None:
        return standard and teacher.device.type == "cuda"
    return asked and standard


def _place(batch: dict[str, Any], out: dict[str, torch.Tensor], boxes: torch.Tensor, layout: EntryLayout,
           position: dict[int, int], pending: dict[int, dict[str, Any]], device: torch.device) -> list[int]:
    """Copy a batch's features (device to device), boxes and view parameters into their shards'
    buffers; returns the shards this batch completed."""
    complete = []
    for j in range(len(batch["index"])):
        pos, view = position[int(batch["index"][j])], int(batch["view"][j])
        shard = pos // layout.shard_size
        if shard not in pending:
            pending[shard] = _new_buffer(layout, shard, list(out), device)
        buf = pending[shard]
        row = pos - layout.shard_range(shard)[0]
        for n, level in out.items():
            _copy_into(buf["features"][n][row, view], level[j])
        buf["frames"][row, view] = boxes[j].numpy()
        buf["params"][row, view] = batch["params"][j].numpy()
        buf["left"] -= 1
        if buf["left"] == 0:
            complete.append(shard)
    return complete


def _copy_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    """dst[...] = src. On the CPU a one-thread copy (numpy's): torch splits a copy of a few MB
    over its intra-op threads, which beside the busy writer threads (or any busy process) wait on
    each other; for 64 LiteMedSAM images at zero teacher cost the main thread's copies took
    2.1-2.3 s that way, 0.4-0.65 s on one thread (docs/measurements.md)."""
    if (dst.device.type == src.device.type == "cpu" and dst.dtype == src.dtype == torch.float32
            and not src.requires_grad):
        np.copyto(dst.numpy(), src.numpy())
    else:
        dst.copy_(src)


def _collect(run: ShardRun, shard: int, future: Future, progress: ProgressFn | None, base: int,
             layout: EntryLayout) -> None:
    written, stats = future.result()
    run.add(shard, written, stats)
    if progress:  # shards committed so far, as this process knows them
        progress(ShardsCommitted(min(base + len(run.shards), layout.num_shards), layout.num_shards))


def _renew(writer: EntryWriter, last: float) -> float:
    """Renew held claims every third of their TTL, so a slow shard is not taken over."""
    now = time.monotonic()
    if now - last < writer.claims.ttl_s / 3:
        return last
    for shard in list(writer.claims.held):
        writer.renew(shard)
    writer.claims.renew_entry()
    return now


def _new_buffer(layout: EntryLayout, shard: int, names: list[str],
                device: torch.device | str = "cpu") -> dict[str, Any]:
    """One shard's features (n, V, C, H, W) float32 on `device` (every row is filled before the
    shard is committed), frames (n, V, 4) and view parameters on the host."""
    start, stop = layout.shard_range(shard)
    n, v = stop - start, layout.views
    lv = {lvl.name: lvl for lvl in layout.levels}
    return {
        "features": {name: torch.empty((n, v, lv[name].channels, lv[name].height, lv[name].width),
                                       device=device) for name in names},
        "frames": np.zeros((n, v, 4), np.float32),
        "params": np.zeros((n, v, len(PARAM_NAMES)), np.float32),
        "left": n * v,
    }


def _commit(writer: EntryWriter, shard: int, buf: dict[str, Any]) -> tuple[int, dict[str, ChannelStats]]:
    """Write the shard (checked and encoded on the features' device, then data, then its commit
    marker); statistics of the values as stored, computed there too."""
    with torch.inference_mode():
        written = writer.write_shard(shard, buf["features"], buf["frames"], buf["params"], consume=True)
        return written.nbytes, shard_stats(written.values)


def shard_stats(values: dict[str, Any]) -> dict[str, ChannelStats]:
    """Statistics of what a reader will get back (ShardWritten.values: decode(encode(x)), on the
    features' device), so they equal statistics recomputed from the store: one update per shard,
    as finalize_entry's read-back does it."""
    stats = {}
    for name, data in values.items():
        acc = ChannelStats(data.shape[-3])
        acc.update(data)
        stats[name] = acc
    return stats
