"""Benchmark distillation from the cache against the two alternatives, in one run:

  (a) student only: supervised training, no teacher at all (the floor: what the student costs);
  (b) cached distillation: the featcache trainer reading teacher features from the store;
  (b') the same with the paper's heads: Conv3x3 projectors and the loss on the teacher's grid
      (distill.projector: conv3x3, distill.feature_grid: teacher), to show what they cost;
  (c) online distillation: the teacher (real LiteMedSAM) runs on every batch inside the training
      loop, as the paper's code does; features are normalised and warped exactly as in (b).

Same student, batch size, image size, loader workers, optimizer and model (projectors, gates,
return decoder) in (b) and (c). Each mode runs --warmup steps, then --steps timed steps; a step's
time runs from the end of the previous step (so waiting for data counts) and steps/s is
1 / median step time. Extraction into a temporary store happens first and is not timed.
Only this benchmark imports teacher code; the trainer never does.

    python pipelines/bench_distill.py                   # a few minutes on 2 CPU cores
    python pipelines/bench_distill.py --image-size 256 --batch-size 16 --steps 20   # on a GPU
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from featcache.data.registry import build_dataset
from featcache.data.views import ViewParams, apply_view
from featcache.distill.data import DistillItems, normaliser, warp_to_student_frame
from featcache.distill.loaders import make_loader
from featcache.distill.manifest import manifest_from_dict
from featcache.distill.trainer import Trainer
from featcache.extract.runner import extract
from featcache.store import FeatureStore
from featcache.teachers.base import Teacher, prepare_image
from featcache.teachers.registry import build_teacher

LEVEL = "embedding"
PAPER_HEADS = {"projector": "conv3x3", "feature_grid": "teacher"}


def _manifest(args, store: str, run_dir: Path, distill: dict, train_fraction: float):
    return manifest_from_dict({
        "store": store, "run_dir": str(run_dir),
        # Only train slices are extracted; the benchmark never validates, so val reuses them.
        "datasets": [{"name": "demo", "options": {"num_slices": args.slices}, "val_split": "train"}],
        "teachers": [{"name": "litemedsam", "levels": {LEVEL: args.stage}}],
        "student": {"image_size": args.image_size},
        "distill": distill,
        "training": {"epochs": 1000, "batch_size": args.batch_size, "seed": 0, "views": 1,
                     "train_fraction": train_fraction, "num_workers": args.workers,
                     "device": args.device},
    }, "bench")


class OnlineItems(Dataset):
    """Student input and mask as in (b), plus the teacher's own input and the image's box on it:
    what a training loop with the teacher inside needs (teacher preprocessing runs in workers)."""

    def __init__(self, items: DistillItems, teacher: Teacher) -> None:
        self.items, self.preprocess = items, teacher.preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict[str, Any]:
        out = self.items[k]
        src, index, _ = self.items.items[k]
        sample = self.items.sources[src].dataset.load(index)
        image, _ = apply_view(sample.image, sample.mask, ViewParams())  # view 0 = the image itself
        x, box = prepare_image(image, self.preprocess)
        return {**out, "teacher_input": x, "box": torch.tensor(box, dtype=torch.float32)}


def _online_batches(trainer: Trainer, teacher: Teacher, workers: int) -> Iterator[dict[str, Any]]:
    """Batches in the same order as (b), with teacher features computed now, on the batch."""
    target = trainer.targets[0]
    reader = trainer.sources[0].entries[target.teacher]
    mean, inv_std = (torch.from_numpy(a) for a in normaliser(reader, LEVEL, "standardize"))
    st = trainer.manifest.student
    plain = DistillItems(trainer.sources, trainer.train_items, [], st.image_size, st.in_channels,
                         "none", False)
    online = OnlineItems(plain, teacher)
    tr = trainer.manifest.training
    loader = make_loader(online, tr.batch_size, workers, tr.prefetch_factor, trainer.device,
                         trainer.sampler, trainer.drop_last)
    for epoch in range(10**6):
        trainer.sampler.set_epoch(epoch)
        for batch in loader:
            feats = teacher.extract(batch.pop("teacher_input"), [LEVEL])[LEVEL]  # (B, C, h, w)
            feats = (feats - mean[:, None, None]) * inv_std[:, None, None]
            boxes = batch.pop("box")
            warped = [warp_to_student_frame(f, box.numpy()) for f, box in zip(feats, boxes, strict=True)]
            batch[f"t:{target.key}"] = torch.stack([f for f, _ in warped])
            batch[f"v:{target.key}"] = torch.stack([v for _, v in warped])
            yield batch


def _cached_batches(trainer: Trainer) -> Iterator[dict[str, Any]]:
    for epoch in range(10**6):
        yield from trainer._train_loader(epoch)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _time(step: Callable[[dict[str, Any]], Any], batches: Iterator[dict[str, Any]], warmup: int,
          steps: int) -> tuple[float, float]:
    """(steps/s = 1 / median time per step with the data wait included, median data wait in s).

    The data wait is the time the training loop spent in next(batches): reading the cache for
    (b), and the teacher forward pass for (c)."""
    times, waits = [], []
    last = time.perf_counter()
    for k in range(warmup + steps):
        batch = next(batches)
        got = time.perf_counter()
        step(batch)
        now = time.perf_counter()
        if k >= warmup:
            times.append(now - last)
            waits.append(got - last)
        _log(f"    step {k + 1}/{warmup + steps}: {now - last:.2f} s (waited {got - last:.2f} s)")
        last = now
    return 1.0 / statistics.median(times), statistics.median(waits)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-distill-"))
    try:
        run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(tmp: Path) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--slices", type=int, default=24, help="demo slices (about 70%% are train)")
    p.add_argument("--train", type=int, default=16, help="training slices used")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--stage", default="dec3", help="student stage matched to the LiteMedSAM embedding")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--workers", default="auto", help="loader workers for every mode (auto or a count)")
    p.add_argument("--device", default="auto")
    p.add_argument("--store", default=None, help="store with the demo extraction (default: temporary)")
    args = p.parse_args()
    args.workers = args.workers if args.workers == "auto" else int(args.workers)
    torch.manual_seed(0)
    store = FeatureStore(args.store or tmp / "store")
    dataset = build_dataset("demo", None, num_slices=args.slices)
    teacher = build_teacher("litemedsam", None, None)
    t0 = time.perf_counter()
    extract(dataset, teacher, store, levels=[LEVEL], views=1, split="train")
    extract_s = time.perf_counter() - t0
    _log(f"extracted in {extract_s:.1f} s")
    n_train = len(dataset.split_indices("train"))
    fraction = min(1.0, args.train / n_train)

    results: dict[str, float] = {}
    student_only = Trainer(_manifest(args, store.url, tmp / "a", {"enabled": False}, fraction))
    _log("(a) student only")
    results["a"] = _time(student_only._step, _cached_batches(student_only), args.warmup, args.steps)
    student_only.close()
    cached = Trainer(_manifest(args, store.url, tmp / "b", {}, fraction))
    _log("(b) cached distillation")
    results["b"] = _time(cached._step, _cached_batches(cached), args.warmup, args.steps)
    cached.close()
    paper = Trainer(_manifest(args, store.url, tmp / "b'", PAPER_HEADS, fraction))
    _log("(b') cached distillation, the paper's heads")
    results["b'"] = _time(paper._step, _cached_batches(paper), args.warmup, args.steps)
    paper.close()
    online = Trainer(_manifest(args, store.url, tmp / "c", {}, fraction))
    teacher.to(online.device)
    _log("(c) online distillation")
    results["c"] = _time(online._step, _online_batches(online, teacher, online.workers), args.warmup,
                         args.steps)
    online.close()

    params = sum(p.numel() for p in cached.model.student.parameters()) / 1e6
    print(f"featcache distillation benchmark: demo, {len(cached.train_items)} train slices, image "
          f"{args.image_size}, batch {args.batch_size}, student {params:.2f}M params, "
          f"device {cached.device}, "
          f"{cached.workers} loader worker(s), torch threads "
          f"{torch.get_num_threads()}, {args.warmup} warm-up + {args.steps} timed steps per mode")
    print(f"(extraction of {n_train} train slices with litemedsam, untimed setup: {extract_s:.1f} s)")
    names = {"a": "student only (supervised)", "b": "distillation from the cache",
             "b'": "the same, paper's heads", "c": "online, teacher in the loop"}
    for m, name in names.items():
        rate, wait = results[m]
        print(f"  {'(' + m + ')':5s}{name:30s} {rate:7.3f} steps/s   median wait for the batch {wait:6.3f} s")
    ra, rb, rp, rc = (results[m][0] for m in ("a", "b", "b'", "c"))
    print(f"  (b)/(a) = {rb / ra:.2f}  (target >= 0.9; the gap is the projectors, gates and return decoder "
          "computing, not the cache: see the wait column)")
    print(f"  (b')/(a) = {rp / ra:.2f}  (the paper's Conv3x3 projectors, loss on the teacher's grid)")
    print(f"  (b)/(c) = {rb / rc:.2f}  (speed-up of caching over online distillation)")
    print("  timings are medians of few steps; on a shared machine they are noisy")


if __name__ == "__main__":
    main()
