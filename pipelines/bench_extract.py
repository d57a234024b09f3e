"""Benchmark the extraction engine against the bare teacher forward loop.

In ONE process and on the SAME preprocessed batches: (a) the bare loop `teacher.extract(x)` over
every batch, (b) the full `extract()` into a fresh store (loader, shard buffers, fp16 encoding,
zstd + crc32c, commit markers, statistics). Decoding and preprocessing are taken out of both: the
dataset serves decoded samples from memory and the teacher's `prepare` returns the precomputed
tensor, so the ratio (b)/(a) is the engine's overhead on top of the forward pass (target <= 1.05).
(a) and (b) alternate; each is the median of --repeats runs.

Peak RSS: the full extraction (real decoding, --loader-workers processes) in a fresh subprocess
for 1x and 4x the number of images (demo num_slices, or samples repeated), reporting the maximum
resident set of the process and of its loader children. Bounded memory means 4x ~= 1x.

    python pipelines/bench_extract.py                       # litemedsam, 6 demo images
    python pipelines/bench_extract.py --images 24 --repeats 3 --batch-size 4 --shard-size 8
    python pipelines/bench_extract.py --teacher timm --arch vit_small_patch16_224 --random-init

--simulate-teacher MS [MS ...]: extraction at accelerator speed instead (sim_extract.py): a
stand-in teacher with the real one's preprocessing and level shapes sleeps MS per batch; the
real pipeline around it; side by side with raw writes and in-memory compression of the same bytes.
No MS value: a sweep from this CPU's real forward cost down to 0.

    python pipelines/bench_extract.py --simulate-teacher --images 192 --batch-size 8 --shard-size 16
    python pipelines/bench_extract.py --simulate-teacher 0 --teacher sam --images 64
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from featcache.data.base import SegmentationDataset
from featcache.data.registry import build_dataset
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore
from featcache.teachers.base import Teacher
from featcache.teachers.registry import build_teacher


class _InMemory(SegmentationDataset):
    """The demo samples decoded once; load() returns the very same arrays every time."""

    def __init__(self, source: SegmentationDataset) -> None:
        super().__init__(source.samples, {**source.options, "bench": "in-memory"})
        self.name, self.channels = source.name, source.channels
        self._samples = [source.load(i) for i in range(len(source))]
        self._digests = [source.content_digest(i) for i in range(len(source))]

    def _load(self, index):
        return self._samples[index]

    def content_digest(self, index):
        return self._digests[index]


class _Prepared(Teacher):
    """Delegates to a teacher; prepare() serves tensors computed once (views=1: same image object)."""

    def __init__(self, teacher: Teacher, images: list) -> None:
        self.inner = teacher
        for attr in ("name", "arch", "preprocess", "available_levels", "default_levels",
                     "weights_sha256", "weights_source", "model"):
            setattr(self, attr, getattr(teacher, attr))
        self.prepared = {id(img): teacher.prepare(img) for img in images}

    def prepare(self, image):
        return self.prepared[id(image)]

    def _forward_levels(self, x, names):
        return self.inner._forward_levels(x, names)


def _build(args) -> tuple[SegmentationDataset, Teacher]:
    options = {"random_init": True} if args.random_init else {}
    teacher = build_teacher(args.teacher, None, args.arch, **options)
    return build_dataset("demo", None, num_slices=args.images), teacher


def time_overhead(args) -> dict:
    torch.manual_seed(0)
    source, teacher = _build(args)
    data = _InMemory(source)
    images = [s.image for s in data._samples]
    fast = _Prepared(teacher, images)
    names = [lv.name for lv in teacher.select_levels(args.levels)]
    xs = torch.stack([fast.prepared[id(img)][0] for img in images])
    batches = list(torch.split(xs, args.batch_size))
    fast.extract(batches[0], names)  # warm-up: first-call allocations are no one's overhead
    settings = ExtractSettings(batch_size=args.batch_size, shard_size=args.shard_size, loader_workers=0)
    bare, full = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            start = time.perf_counter()
            for x in batches:
                fast.extract(x, names)
            bare.append(time.perf_counter() - start)
            store = FeatureStore(Path(tmp) / f"run{r}")
            start = time.perf_counter()
            result = extract(data, fast, store, settings, levels=names)
            full.append(time.perf_counter() - start)
            assert result.status == "extracted"
            print(f"  repeat {r}: bare {bare[-1]:.2f} s, extract {full[-1]:.2f} s", flush=True)
    a, b = statistics.median(bare), statistics.median(full)
    paired = statistics.median(f / r for f, r in zip(full, bare, strict=True))
    return {"images": len(images), "bare_s": a, "extract_s": b, "ratio": b / a, "paired": paired,
            "bare_img_s": len(images) / a, "extract_img_s": len(images) / b}


def _rss_child(args, images: int) -> dict:
    """Run the full extraction in a fresh process; its own and its loader children's peak RSS."""
    code = (
        "import json, resource, sys, tempfile\n"
        "from featcache.data.registry import build_dataset\n"
        "from featcache.extract.runner import extract\n"
        "from featcache.extract.settings import ExtractSettings\n"
        "from featcache.store import FeatureStore\n"
        "from featcache.teachers.registry import build_teacher\n"
        "a = json.loads(sys.argv[1])\n"
        "opts = {'random_init': True} if a['random_init'] else {}\n"
        "t = build_teacher(a['teacher'], None, a['arch'], **opts)\n"
        "d = build_dataset('demo', None, num_slices=a['images'])\n"
        "with tempfile.TemporaryDirectory() as tmp:\n"
        "    s = ExtractSettings(batch_size=a['batch_size'], shard_size=a['shard_size'],\n"
        "                        loader_workers=a['loader_workers'])\n"
        "    extract(d, t, FeatureStore(tmp), s, levels=a['levels'])\n"
        "print(json.dumps({'self_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,\n"
        "                  'loader_mib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))\n")
    spec = {k: getattr(args, k) for k in ("teacher", "arch", "random_init", "levels", "batch_size",
                                          "shard_size", "loader_workers")}
    out = subprocess.run([sys.executable, "-c", code, json.dumps({**spec, "images": images})],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="litemedsam")
    p.add_argument("--arch", default=None)
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--levels", nargs="*", default=None)
    p.add_argument("--images", type=int, default=6, help="demo images (num_slices, at least 6)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--shard-size", type=int, default=2)
    p.add_argument("--loader-workers", type=int, default=1, help="for the RSS runs")
    p.add_argument("--no-rss", action="store_true")
    sim = p.add_argument_group("simulation (--simulate-teacher)")
    sim.add_argument("--simulate-teacher", type=float, nargs="*", default=None, metavar="MS",
                     help="ms per batch of the stand-in teacher (none given: real cost .. 0)")
    sim.add_argument("--image-px", type=int, default=512, help="side of the generated PNG images")
    sim.add_argument("--seconds", type=float, default=6.0, help="ideal duration of a non-zero MS point")
    sim.add_argument("--also", nargs="*", default=["none", "writer_threads=1"],
                     help="settings measured beside the defaults: a compression or FIELD=N (ExtractSettings)")
    sim.add_argument("--loader-sweep", type=int, nargs="*", default=[0, 1, 2])
    sim.add_argument("--tmp", default=None, help="folder for images and stores (default: $TMPDIR)")
    args = p.parse_args()
    if args.simulate_teacher is not None:
        from sim_extract import simulate  # beside this script

        if args.levels is None and args.teacher == "litemedsam":
            args.levels = ["embedding", "stage2"]  # the demo manifest's taps
        simulate(args)
        return
    print(f"torch threads {torch.get_num_threads()}; teacher {args.teacher}; {args.images} images; "
          f"batch {args.batch_size}, shard {args.shard_size}; median of {args.repeats}", flush=True)
    t = time_overhead(args)
    print(f"bare forward loop : {t['bare_s']:.2f} s ({t['bare_img_s']:.2f} img/s)")
    print(f"full extraction   : {t['extract_s']:.2f} s ({t['extract_img_s']:.2f} img/s)")
    print(f"ratio extract/bare: {t['ratio']:.3f} of medians, {t['paired']:.3f} median of paired "
          f"repeats (target <= 1.05)")
    if not args.no_rss:
        for factor in (1, 4):
            r = _rss_child(args, args.images * factor)
            print(f"peak RSS at {factor}x ({args.images * factor} images): process {r['self_mib']:.0f} MiB, "
                  f"largest loader worker {r['loader_mib']:.0f} MiB", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"bench process peak RSS {peak:.0f} MiB")
    # machine-readable, last: `grep ^RESULT`
    print(f"RESULT extract_over_bare {t['paired']:.4g}\nRESULT extract_img_s {t['extract_img_s']:.4g}\n"
          f"RESULT bare_img_s {t['bare_img_s']:.4g}\nRESULT peak_rss_mib {peak:.4g}")


if __name__ == "__main__":
    main()
