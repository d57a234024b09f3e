"""`bench_distill.py --simulate-student MS`: the training loader at accelerator speed, simulated.

Each loader feeds a stand-in student step that only sleeps MS, per loader worker count:

  per-sample  the loader before issue 35: each item finished in a worker, one at a time: its
              teacher maps read from the store (checked, decoded), normalised and resampled onto
              every tap's loss grid, its image augmented (the same code as the batched path,
              run on batches of one, as featcache.CachedFeatures does);
  batched     workers hand over the image and the stored float16 maps; the training process
              finishes the whole batch (featcache/distill/batches.py), on the GPU when there is one;
  resident    the targets decoded once into memory (featcache/distill/resident.py, the default
              training.resident_features: auto); workers hand over the image only, a batch's
              targets are a gather;
  bare        a DataLoader that only np.loads the same features from raw .npy files (float16 ->
              float32): the floor of any loader reading them.

The loaders take turns for --rounds rounds (every worker count, every loader, --steps batches
each after a warm-up that drains what it prefetched while the others ran), so that a shared
machine's slow minutes hit all alike; each rate is the median over rounds, each ratio the median of
its per-round ratios. loader_speedup: the best new path (batched or resident) over per-sample at
the worker count where the best new path is fastest (every count is printed); loader_over_npload:
that best new path over the best bare np.load (any worker count) in the same round.

The store is filled by extraction with a stand-in teacher (sim_extract.py): LiteMedSAM's level
shapes and its real features of one slice, so that the entry compresses as a real one does; the
loader's work does not depend on the values.
"""

from __future__ import annotations

import copy
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sim_baseline import baseline_rates
from sim_extract import StandInTeacher
from torch.utils.data import DataLoader, Dataset, default_collate

from featcache.data.registry import build_dataset
from featcache.distill.batches import Finish
from featcache.distill.build import epoch_batches
from featcache.distill.data import DistillItems
from featcache.distill.loaders import make_loader
from featcache.distill.resident import item_bytes, make_resident
from featcache.distill.trainer import Trainer
from featcache.events import ignore
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore
from featcache.teachers.registry import build_teacher

PREFETCH = 2  # batches each worker keeps ready (drained by each turn's warm-up)
NEW = ("batched", "resident")


class PerSample(Dataset):
    """Training items finished one at a time where they are read (a loader worker): the
    per-sample loader of featcache before issue 35."""

    def __init__(self, items: DistillItems) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict[str, Any]:
        one = Finish(self.items, torch.device("cpu"))(default_collate([self.items[k]]))
        return {key: value[0] for key, value in one.items()}


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


def _rate(batches: Iterator[Any], ms: float, warmup: int, steps: int, size: int,
          device: torch.device) -> float:
    """Samples/s over `steps` batches after `warmup`, each followed by a `ms` stand-in step (on a
    GPU the batch's work on the device is waited for, as a step would)."""
    def one() -> None:
        next(batches)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        time.sleep(ms / 1000)

    for _ in range(warmup):
        one()
    start = time.perf_counter()
    for _ in range(steps):
        one()
    return steps * size / (time.perf_counter() - start)


def _forever(loader: DataLoader) -> Iterator[Any]:
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


def _loaders(args, trainer: Trainer, files: list[list[Path]]
             ) -> tuple[dict[tuple[str, int], Iterator[Any]], DistillItems, dict[str, float]]:
    """(mode, workers) -> a batch iterator over all epochs, for every mode and worker count; the
    items with resident targets; and what making them resident cost."""
    streamed = trainer.data.train_set
    held = copy.copy(streamed)
    start = time.perf_counter()
    make_resident(held, "auto", trainer.device, ignore)
    if not held.resident_teachers:
        raise SystemExit("the resident targets do not fit in half the free memory here")
    cost = {"seconds": time.perf_counter() - start,
            "mib": sum(item_bytes(held, t) for t in held.resident_teachers) * len(held) / 2**20}
    size, device, out = args.batch_size, trainer.device, {}
    for w in args.worker_sweep:
        def loader(items: Dataset, w: int = w) -> Iterator[Any]:
            batches = epoch_batches(trainer.data, size, 0)
            return iter(make_loader(items, size, w, PREFETCH, device, batches=batches))

        out[("per-sample", w)] = loader(PerSample(streamed))
        out[("batched", w)] = loader(streamed)
        out[("resident", w)] = loader(held)
        extra = {"persistent_workers": True, "prefetch_factor": PREFETCH} if w else {}
        out[("bare", w)] = _forever(DataLoader(RawFeatures(files), batch_size=size, shuffle=True,
                                               num_workers=w, drop_last=True, **extra))
    return out, held, cost


def _simulate(args, manifest_for, taps: dict[str, Any], tmp: Path) -> None:
    store = FeatureStore(tmp / "store")
    files = fill_store(args, store, list(taps))
    per_sample = sum(np.load(f, mmap_mode="r").nbytes for f in files[0])
    args.workers = 0
    manifest = manifest_for(args, store.url, tmp / "run", {}, 1.0)
    trainer = Trainer(manifest.model_copy(update={"training": manifest.training.model_copy(
        update={"resident_features": "off"})}))
    loaders, held, cost = _loaders(args, trainer, files)
    print(f"featcache loader simulation: demo, {len(files)} train slices, student {args.image_size} px, "
          f"batch {args.batch_size}, LiteMedSAM taps {taps}, {per_sample / 1e6:.2f} MB fp16 features per "
          f"sample; device {trainer.device}; stand-in student step {args.simulate_student:g} ms; "
          f"{args.rounds} rounds of {args.steps} batches per loader after a warm-up of workers x "
          f"{PREFETCH} + 1; resident targets {cost['mib']:.0f} MiB, made in {cost['seconds']:.1f} s",
          flush=True)
    rates: dict[tuple[str, int], list[float]] = {key: [] for key in loaders}
    for r in range(args.rounds):
        for (mode, w), batches in loaders.items():
            rates[(mode, w)].append(_rate(batches, args.simulate_student, w * PREFETCH + 1, args.steps,
                                          args.batch_size, trainer.device))
        done = ", ".join(f"{m} w{w} {v[-1]:.1f}" for (m, w), v in rates.items())
        print(f"  round {r + 1}/{args.rounds} (samples/s): {done}", flush=True)
    del loaders  # persistent workers end here, before a baseline's bench takes the cores
    baseline = baseline_rates(args, args.against) if args.against else {}
    _report(args, rates, baseline)
    _stages(args, held, trainer.device)
    trainer.close()


def _stages(args, held: DistillItems, device: torch.device) -> None:
    """Per-core rates of the resident path's two halves, for projections: a worker's item (the
    image read, viewed and resized, the mask; the targets are resident) and the training process
    finishing a batch of them (gather, augmentation) on `device`. Medians of 3 batches."""
    size, n = args.batch_size, len(held)
    finish = Finish(held, device)

    def timed(work: Any) -> float:
        start = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return size / (time.perf_counter() - start)

    items = statistics.median(timed(lambda: [held[k % n] for k in range(size)]) for _ in range(3))
    batch = default_collate([held[k % n] for k in range(size)])
    finished = statistics.median(timed(lambda: finish(batch)) for _ in range(3))
    print(f"stages alone, one core each: a worker's items (image, view, resize, mask) {items:.0f}/s; "
          f"finishing resident batches on {device} (gather, augmentation) {finished:.0f} samples/s")
    print(f"RESULT items_s_per_worker {items:.4g}")
    print(f"RESULT finish_samples_s {finished:.4g}")


def _report(args, rates: dict[tuple[str, int], list[float]], baseline: dict[int, float]) -> None:
    """The table (medians over rounds), the ratios (medians of per-round ratios), RESULT lines;
    baseline: an older commit's loader per worker count (--against), or empty."""
    med = {key: statistics.median(v) for key, v in rates.items()}
    sweep = args.worker_sweep
    best = {w: max(NEW, key=lambda m, w=w: med[(m, w)]) for w in sweep}  # the best new path per count
    speedup = {w: statistics.median(a / b for a, b in zip(rates[(best[w], w)], rates[("per-sample", w)],
                                                          strict=True)) for w in sweep}
    top = max(sweep, key=lambda w: med[(best[w], w)])
    bare_best = [max(rates[("bare", w)][r] for w in sweep) for r in range(args.rounds)]
    over_npload = statistics.median(a / b for a, b in zip(rates[(best[top], top)], bare_best, strict=True))
    print(f"samples/s delivered, median of {args.rounds} rounds (machine shared: read the ratios):")
    print(f"{'workers':>7} {'per-sample':>10} {'batched':>8} {'resident':>9} {'bare':>8} "
          f"{'best new / per-sample':>22} {'per core: per-sample':>21} {'best new':>9}")
    for w in sweep:
        cores, old, new = max(1, w), med[("per-sample", w)], med[(best[w], w)]
        print(f"{w:7d} {old:10.1f} {med[('batched', w)]:8.1f} {med[('resident', w)]:9.1f} "
              f"{med[('bare', w)]:8.1f} {speedup[w]:17.2f} ({best[w][:3]}) {old / cores:21.1f} "
              f"{new / cores:9.1f}")
    print(f"best new path: {best[top]} at {top} worker(s): {speedup[top]:.2f}x the per-sample loader at the "
          f"same count (target >= 5), {over_npload:.2f}x the best bare np.load of the same features "
          "(target >= 0.8)")
    results = {f"samples_s_{m.replace('-', '_')}_w{w}": v for (m, w), v in med.items()}
    results.update({f"loader_speedup_w{w}": v for w, v in speedup.items()})
    results.update(loader_speedup=speedup[top], loader_over_npload=over_npload)
    if baseline:
        results.update(_against(args, {w: med[(best[w], w)] for w in sweep}, baseline))
    for name, value in results.items():  # machine-readable, last: `grep ^RESULT`
        print(f"RESULT {name} {value:.4g}")


def _against(args, best_new: dict[int, float], baseline: dict[int, float]) -> dict[str, float]:
    """The best new path against --against's loader at each worker count; the headline ratio is
    the smallest over the counts (issue 35's target holds at every count or not at all)."""
    ratio = {w: best_new[w] / baseline[w] for w in args.worker_sweep}
    print(f"against {args.against}'s loader (its own bench, run after the rounds):")
    print(f"{'workers':>7} {args.against[:10]:>10} {'best new':>9} {'ratio':>6}")
    for w in args.worker_sweep:
        print(f"{w:7d} {baseline[w]:10.1f} {best_new[w]:9.1f} {ratio[w]:6.2f}")
    print(f"smallest ratio over worker counts: {min(ratio.values()):.2f}x (target >= 5)")
    out = {f"samples_s_baseline_w{w}": baseline[w] for w in args.worker_sweep}
    out.update({f"loader_speedup_vs_baseline_w{w}": r for w, r in ratio.items()})
    out["loader_speedup_vs_baseline"] = min(ratio.values())
    return out
