"""`bench_distill.py --simulate-student MS`: the cache loader at accelerator speed, simulated.

The trainer's real training loader (DistillItems: the image decoded, viewed, augmented and
resized for the student; each tapped teacher level read from the store, checked, decoded,
normalised and resampled onto its head's loss grid; batches collated across worker processes)
feeds a stand-in student step that only sleeps MS. Beside it, per worker count: (raw) the very
same loader with the store's reader swapped for one that reads the same fp16 features from raw
`.npy` files (np.load, to float32: no decompression, no checksums), so the ratio is what the
cache costs the loader; and (bare) a DataLoader that only reads those .npy files, the floor of
any loader. Samples/s of each, the ratio, and per core (workers, or 1 for the main process).

The store is filled by extraction with a stand-in teacher (sim_extract.py): LiteMedSAM's level
shapes and its real features of one slice, so that the entry compresses as a real one does; the
loader's work does not depend on the values.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sim_extract import StandInTeacher
from torch.utils.data import DataLoader, Dataset

from featcache.data.registry import build_dataset
from featcache.distill.build import epoch_batches
from featcache.distill.data import DistillItems, Source
from featcache.distill.loaders import make_loader
from featcache.distill.trainer import Trainer
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import EntryReader, FeatureStore
from featcache.teachers.registry import build_teacher


class NpyReader:
    """The reading methods of an EntryReader that DistillItems uses, over raw .npy copies."""

    def __init__(self, reader: EntryReader, files: list[list[Path]], levels: list[str]) -> None:
        self._index = {sid: i for i, sid in enumerate(reader.ids)}
        self._files = {(i, level): f[j] for i, f in enumerate(files) for j, level in enumerate(levels)}
        self._frames = np.stack([reader.frames(i) for i in range(len(reader.ids))])
        self._params = np.stack([reader.view_params(i) for i in range(len(reader.ids))])

    def index_of(self, sample_id: str) -> int:
        return self._index[sample_id]

    def read(self, index: int, level: str, view: int | None = None) -> np.ndarray:
        data = torch.from_numpy(np.load(self._files[(index, level)])).float().numpy()  # view 0 only
        return data if view is not None else data[None]

    def frames(self, index: int) -> np.ndarray:
        return self._frames[index]

    def view_params(self, index: int) -> np.ndarray:
        return self._params[index]


class NpyItems(DistillItems):
    """The trainer's items with NpyReaders: they pickle into loader workers as they are."""

    @classmethod
    def like(cls, items: DistillItems, files: list[list[Path]], levels: list[str]) -> NpyItems:
        raw = cls.__new__(cls)
        raw.__dict__.update(items.__dict__)
        raw.sources = [Source(s.index, s.dataset, {t: NpyReader(r, files, levels)
                                                   for t, r in s.entries.items()}, s.views)
                       for s in items.sources]
        return raw

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class RawFeatures(Dataset):
    """Item k: every tapped level of sample k from its own fp16 .npy file, as float32 tensors."""

    def __init__(self, files: list[list[Path]]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        return {str(j): torch.from_numpy(np.load(f)).float() for j, f in enumerate(self.files[k])}


def fill_store(args, store: FeatureStore, levels: list[str]) -> list[list[Path]]:
    """Extract the demo's train slices with the stand-in teacher; write the raw .npy copies."""
    data = build_dataset("demo", None, num_slices=args.slices)
    real = build_teacher("litemedsam", None, None)
    x, _ = real.prepare(data.load(0).image)
    teacher = StandInTeacher(real, real.extract(x[None], levels), 0.0)
    result = extract(data, teacher, store, ExtractSettings(views=1, split="train"), levels=levels)
    reader = store.open(result.key)
    raw_dir = Path(store.url) / "raw"
    raw_dir.mkdir()
    files = []
    for i in range(len(reader.ids)):
        files.append([])
        for level in levels:
            path = raw_dir / f"{i}.{level}.npy"
            np.save(path, reader.read(i, level, view=0).astype(np.float16))
            files[-1].append(path)
    return files


def _rate(batches: Iterator[Any], ms: float, warmup: int, steps: int, size: int) -> float:
    """Samples/s over `steps` batches after `warmup`, each followed by a `ms` stand-in step."""
    for _ in range(warmup):
        next(batches)
        time.sleep(ms / 1000)
    start = time.perf_counter()
    for _ in range(steps):
        next(batches)
        time.sleep(ms / 1000)
    return steps * size / (time.perf_counter() - start)


def _raw_batches(files: list[list[Path]], batch: int, workers: int) -> Iterator[Any]:
    extra = {"persistent_workers": True, "prefetch_factor": 2} if workers else {}
    loader = DataLoader(RawFeatures(files), batch_size=batch, shuffle=True, num_workers=workers,
                        drop_last=True, **extra)
    while True:
        yield from loader


def simulate(args, manifest_for, taps: dict[str, Any]) -> None:
    """manifest_for(args, store, run_dir, distill, train_fraction): bench_distill's manifest;
    taps: its level -> student stage(s) of LiteMedSAM."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-distill-sim-", dir=args.tmp))
    try:
        _simulate(args, manifest_for, taps, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _simulate(args, manifest_for, taps: dict[str, Any], tmp: Path) -> None:
    store = FeatureStore(tmp / "store")
    files = fill_store(args, store, list(taps))
    per_sample = sum(np.load(f, mmap_mode="r").nbytes for f in files[0])
    print(f"featcache loader simulation: demo, {len(files)} train slices, student {args.image_size} px, "
          f"batch {args.batch_size}, LiteMedSAM taps {taps}, {per_sample / 1e6:.2f} MB fp16 "
          f"features per sample; stand-in student step {args.simulate_student:g} ms; "
          f"{args.warmup} + {args.steps} batches per point", flush=True)
    print("samples/s delivered:  featcache = the trainer's loader;  raw = the same loader reading .npy "
          "files;  bare = np.load of the features alone")
    print(f"{'workers':>7} {'featcache':>10} {'raw':>8} {'ratio':>6} {'featcache/core':>14} "
          f"{'raw/core':>9} {'bare':>8}")
    results: dict[str, float] = {}
    for workers in args.worker_sweep:
        args.workers = workers
        trainer = Trainer(manifest_for(args, store.url, tmp / f"run{workers}", {}, 1.0))
        ms, size = args.simulate_student, args.batch_size
        cached = _rate(trainer._train_batches(0), ms, args.warmup, args.steps, size)
        raw_items = NpyItems.like(trainer.data.train_set, files, list(taps))
        tr = trainer.manifest.training
        raw_loader = make_loader(raw_items, size, trainer.data.workers, tr.prefetch_factor, trainer.device,
                                 batches=epoch_batches(trainer.data, tr.batch_size, 0),
                             low_priority=trainer.data.low_priority_workers)
        raw = _rate(iter(raw_loader), ms, args.warmup, args.steps, size)
        del raw_loader  # its persistent workers end here
        trainer.close()
        bare = _rate(_raw_batches(files, size, workers), ms, args.warmup, args.steps, size)
        cores = max(1, workers)
        print(f"{workers:7d} {cached:10.1f} {raw:8.1f} {cached / raw:6.2f} {cached / cores:14.1f} "
              f"{raw / cores:9.1f} {bare:8.1f}", flush=True)
        results.update({f"samples_s_featcache_w{workers}": cached, f"samples_s_npy_w{workers}": raw,
                        f"featcache_over_npy_w{workers}": cached / raw, f"samples_s_bare_w{workers}": bare})
    for name, value in results.items():  # machine-readable, last: `grep ^RESULT`
        print(f"RESULT {name} {value:.4g}")
