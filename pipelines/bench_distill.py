"""Benchmark distillation from the cache against the two alternatives, in one run:

  (a) student only: supervised training, no teacher at all (the floor: what the student costs);
  (b) cached distillation: the featcache trainer reading teacher features from the store;
  (b') the same with the paper's heads: Conv3x3 projectors and the loss on the teacher's grid
      (distill.projector: conv3x3, distill.feature_grid: teacher), to show what they cost;
  (d) (b) with output distillation (distill.output: task-adapted teacher probes' soft labels);
  (c) online distillation: the teacher (real LiteMedSAM) runs on every batch inside the training
      loop, as the paper's code does; features are normalised and resampled exactly as in (b).

Same student, batch size, image size, loader workers, optimizer, augmentation and model
(projectors, gates, return decoder) in (b) and (c); by default the demo manifest's three LiteMedSAM
taps (--taps one: the embedding at one stage). A step's time runs from the end of the previous
step (so waiting for data counts); steps/s is 1 / median step time. (a), (b), (b') and (d) take turns
for --rounds rounds of --warmup + --steps steps each, so that a shared machine's slow minutes hit all
alike; each ratio is the median of its per-round ratios (the warm-up steps also drain the batches
a loader prefetched while the other modes ran). (c) runs once, --warmup + --steps steps.
Extraction into a temporary store happens first and is not timed. Only this benchmark imports
teacher code; the trainer never does.

    python pipelines/bench_distill.py                   # about 3 minutes on 2 CPU cores
    python pipelines/bench_distill.py --image-size 256 --batch-size 16 --steps 20   # on a GPU

(b) trains from the trainer's loader as a run does: targets resident in memory (the default
training.resident_features: auto), batches finished in the training process.

--simulate-student MS instead (sim_distill.py): the training loader alone, feeding a stand-in
student step that sleeps MS: the per-sample loader featcache had before issue 35, the batched one
(stored maps from the workers, finished in the training process) and the resident one, against a
bare np.load of the same features, per loader worker count, in interleaved rounds.

    python pipelines/bench_distill.py --simulate-student 0 --image-size 256 --batch-size 16

--against REF adds commit REF's own loader (sim_baseline.py), run by REF's bench in the same
invocation: `--against ed17505` is the loader featcache had when issue 35 was filed.
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
from featcache.distill.batches import Finish
from featcache.distill.build import epoch_batches
from featcache.distill.data import DistillItems
from featcache.distill.loaders import make_loader
from featcache.distill.resample import normaliser, teacher_targets
from featcache.distill.trainer import Trainer, prepare
from featcache.events import ignore
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.manifest import manifest_from_dict
from featcache.store import FeatureStore
from featcache.teachers.base import Teacher, prepare_image
from featcache.teachers.registry import build_teacher

# The demo manifest's taps (manifests/demo.yaml); --taps one: the embedding at dec3 alone.
TAPS = {"demo": {"stage2": "enc3", "embedding": ["enc4", "dec3"]}, "one": {"embedding": "dec3"}}
PAPER_HEADS = {"projector": "conv3x3", "feature_grid": "teacher"}


def _manifest(args, store: str, run_dir: Path, distill: dict, train_fraction: float, entry: str = "auto"):
    return manifest_from_dict({
        "store": store, "run_dir": str(run_dir),
        # Only train slices are extracted; the benchmark never validates, so val reuses them.
        "datasets": [{"name": "demo", "options": {"num_slices": args.slices}, "val_split": "train"}],
        # The entry extracted here, by key: a --store that also holds the demo's entry (all
        # splits) has two that fit, and `auto` would refuse to choose.
        "teachers": [{"name": "litemedsam", "levels": TAPS[args.taps], "entry": entry}],
        "student": {"image_size": args.image_size},
        "distill": distill,
        "training": {"epochs": 1000, "batch_size": args.batch_size, "seed": 0, "views": 1,
                     "train_fraction": train_fraction, "num_workers": args.workers,
                     "worker_priority": args.worker_priority, "device": args.device},
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
        _, _, (src, index, _) = self.items.locate(k)
        sample = self.items.sources[src].dataset.load(index)
        image, _ = apply_view(sample.image, sample.mask, ViewParams())  # view 0 = the image itself
        x, box = prepare_image(image, self.preprocess)
        return {**out, "teacher_input": x, "box": torch.tensor(box, dtype=torch.float32)}


def _online_batches(trainer: Trainer, teacher: Teacher, workers: int) -> Iterator[dict[str, Any]]:
    """Batches in the same order as (b), with teacher features computed now, on the batch, and
    normalised and resampled as (b)'s are (batched, on the training device)."""
    reader = trainer.data.sources[0].entries[trainer.model.targets[0].teacher]
    levels = list(dict.fromkeys(t.level for t in trainer.model.targets))
    norms = {level: normaliser(reader, level, "standardize") for level in levels}
    st = trainer.manifest.student
    plain = DistillItems(trainer.data.sources, trainer.data.train_items, [], st.image_size, st.in_channels,
                         "none", False, trainer.data.train_set.augment, trainer.manifest.training.seed)
    finish = Finish(plain, trainer.device)  # the image's augmentation and the mask, as (b)'s
    tr = trainer.manifest.training
    for batch in make_loader(OnlineItems(plain, teacher), tr.batch_size, workers, tr.prefetch_factor,
                             trainer.device, batches=epoch_batches(trainer.data, tr.batch_size, 0),
                             low_priority=trainer.data.low_priority_workers):
        x, boxes = batch.pop("teacher_input"), batch.pop("box")
        batch = finish(batch)
        feats = teacher.extract(x, levels, host=False)  # level -> (B, C, h, w) on the device
        for t in trainer.model.targets:
            target, valid = teacher_targets(feats[t.level].float(), norms[t.level], boxes, t.loss_grid)
            batch[f"t:{t.key}"], batch[f"v:{t.key}"] = target.half(), valid
        yield batch


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _time(step: Callable[[dict[str, Any]], Any], batches: Iterator[dict[str, Any]], warmup: int,
          steps: int) -> tuple[list[float], list[float]]:
    """(time per timed step with the data wait included, data wait per timed step), in s.

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
    return times, waits


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-distill-"))
    try:
        run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The demo's 40 slices (28 train, 7 steps per epoch at batch 4), as the demo trains.
    p.add_argument("--slices", type=int, default=40, help="demo slices (about 70%% are train)")
    p.add_argument("--train", type=int, default=28, help="training slices used")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--taps", default="demo", choices=list(TAPS),
                   help="demo: LiteMedSAM stage2 -> enc3, embedding -> enc4 and dec3 (the demo manifest); "
                        "one: the embedding at dec3")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=6,
                   help="timed steps per round (and for (c)); with --simulate-student, batches per turn")
    p.add_argument("--rounds", type=int, default=5,
                   help="turns of (a), (b), (b'), (d); with --simulate-student, of every loader")
    p.add_argument("--workers", default="auto", help="loader workers for every mode (auto or a count)")
    p.add_argument("--worker-priority", default="auto", choices=["auto", "normal", "low"],
                   help="training.worker_priority for every mode (auto = normal; low = nice 19)")
    p.add_argument("--device", default="auto")
    p.add_argument("--skip-online", action="store_true", help="leave out (c), online distillation")
    p.add_argument("--store", default=None, help="store with the demo extraction (default: temporary)")
    sim = p.add_argument_group("simulation (--simulate-student)")
    sim.add_argument("--simulate-student", type=float, default=None, metavar="MS",
                     help="ms of the stand-in student step; measures the loader alone")
    sim.add_argument("--worker-sweep", type=int, nargs="*", default=[0, 1, 2])
    sim.add_argument("--tmp", default=None, help="folder for the simulation's store (default: $TMPDIR)")
    sim.add_argument("--against", default=None, metavar="REF",
                     help="also run commit REF's own loader bench (sim_baseline.py): e.g. ed17505, "
                          "main when issue 35 was filed")
    return p.parse_args()


def run(tmp: Path) -> None:
    args = _args()
    if args.simulate_student is not None:
        from sim_distill import simulate  # beside this script

        simulate(args, _manifest, TAPS[args.taps])
        return
    args.workers = args.workers if args.workers == "auto" else int(args.workers)
    torch.manual_seed(0)
    store = FeatureStore(args.store or tmp / "store")
    dataset = build_dataset("demo", None, num_slices=args.slices)
    teacher = build_teacher("litemedsam", None, None)
    t0 = time.perf_counter()
    entry = extract(dataset, teacher, store, ExtractSettings(split="train"), levels=list(TAPS[args.taps])).key
    extract_s = time.perf_counter() - t0
    _log(f"extracted in {extract_s:.1f} s")
    n_train = len(dataset.split_indices("train"))
    fraction = min(1.0, args.train / n_train)

    # (d): (b) with output distillation (its teacher probes are fitted when the trainer is built,
    # outside the timed steps, as a run fits them once before its first step)
    cached_modes = {"a": {"enabled": False}, "b": {}, "b'": PAPER_HEADS, "d": {"output": True}}
    trainers = {m: Trainer(_manifest(args, store.url, tmp / m, d, fraction, entry))
                for m, d in cached_modes.items()}
    prepare(trainers["d"].manifest, trainers["d"].built, trainers["d"].run, trainers["d"].settings, ignore)
    batches = {m: t._train_batches(0) for m, t in trainers.items()}
    times: dict[str, list[float]] = {m: [] for m in [*cached_modes, "c"]}
    waits: dict[str, list[float]] = {m: [] for m in times}
    per_round: dict[str, list[float]] = {m: [] for m in cached_modes}  # median step time per round
    peak: dict[str, float] = {}  # peak GPU MiB per mode, over its rounds
    for r in range(args.rounds):
        for m, trainer in trainers.items():
            _log(f"round {r + 1}/{args.rounds}: ({m})")
            _reset_peak(trainer.device)
            t, w = _time(trainer.train_step, batches[m], args.warmup, args.steps)
            peak[m] = max(peak.get(m, 0.0), _peak_mib(trainer.device))
            times[m] += t
            waits[m] += w
            per_round[m].append(statistics.median(t))
    for trainer in trainers.values():
        trainer.close()
    cached = trainers["b"]
    if args.skip_online:
        del times["c"], waits["c"]
    else:
        online = Trainer(_manifest(args, store.url, tmp / "c", {}, fraction, entry))
        teacher.to(online.device)
        _log("(c) online distillation")
        _reset_peak(online.device)
        batches = _online_batches(online, teacher, online.data.workers)
        times["c"], waits["c"] = _time(online.train_step, batches, args.warmup, args.steps)
        peak["c"] = _peak_mib(online.device)
        online.close()
    _report(args, cached, times, waits, per_round, peak, extract_s, n_train)


def _report(args, cached, times: dict[str, list[float]], waits: dict[str, list[float]],
            per_round: dict[str, list[float]], peak: dict[str, float], extract_s: float,
            n_train: int) -> None:
    """The benchmark's table, ratios and RESULT lines."""
    params = sum(p.numel() for p in cached.model.student.parameters()) / 1e6
    niced = " at nice 19" if cached.data.workers and cached.data.low_priority_workers else ""
    print(f"featcache distillation benchmark: demo, {len(cached.data.train_items)} train slices, image "
          f"{args.image_size}, batch {args.batch_size}, student {params:.2f}M params, "
          f"device {cached.device}, LiteMedSAM taps: {', '.join(t.key for t in cached.model.targets)}, "
          f"{cached.data.workers} loader worker(s){niced}, "
          f"torch threads "
          f"{torch.get_num_threads()}; (a), (b), (b'), (d): {args.rounds} rounds of {args.warmup} warm-up + "
          f"{args.steps} timed steps; (c): {args.warmup} + {args.steps}")
    print(f"(extraction of {n_train} train slices with litemedsam, untimed setup: {extract_s:.1f} s)")
    names = {"a": "student only (supervised)", "b": "distillation from the cache",
             "b'": "the same, paper's heads", "d": "(b) + output distillation",
             "c": "online, teacher in the loop"}
    rate = {m: 1.0 / statistics.median(t) for m, t in times.items()}
    for m, name in ((m, n) for m, n in names.items() if m in rate):
        print(f"  {'(' + m + ')':5s}{name:30s} {rate[m]:7.3f} steps/s   median wait for the batch "
              f"{statistics.median(waits[m]):6.3f} s")

    def ratio(m: str) -> tuple[float, str]:  # per round: median step time of (a) / that of m
        rounds = [a / x for a, x in zip(per_round["a"], per_round[m], strict=True)]
        return statistics.median(rounds), ", ".join(f"{x:.2f}" for x in rounds)

    (rb, rb_rounds), (rp, rp_rounds), (rd, rd_rounds) = ratio("b"), ratio("b'"), ratio("d")
    print(f"  (b)/(a) = {rb:.2f}  (rounds: {rb_rounds}; target >= 0.9: what the heads and the cache "
          "reader cost beyond the student's own step)")
    print(f"  (b')/(a) = {rp:.2f}  (rounds: {rp_rounds}; the paper's Conv3x3 projectors, loss on the "
          "teacher's grid)")
    print(f"  (d)/(a) = {rd:.2f}  (rounds: {rd_rounds}; target >= 0.9: output distillation's probes and "
          "soft-label term on top of (b))")
    if "c" in rate:
        print(f"  (b)/(c) = {rate['b'] / rate['c']:.2f}  (speed-up of caching over online distillation)")
    print("  medians; on a shared machine single steps are noisy")
    results = {f"steps_s_{m.replace(chr(39), 'p')}": v for m, v in rate.items()}
    results.update(b_over_a=rb, bp_over_a=rp, d_over_a=rd)
    if "c" in rate:
        results["b_over_c"] = rate["b"] / rate["c"]
    if cached.device.type == "cuda":
        results.update({f"peak_gpu_mib_{m.replace(chr(39), 'p')}": v for m, v in peak.items()})
    for name, value in results.items():  # machine-readable, last: `grep ^RESULT`
        print(f"RESULT {name} {value:.4g}")


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


if __name__ == "__main__":
    main()
