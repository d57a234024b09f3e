"""`bench_extract.py --simulate-teacher MS ...`: extraction at accelerator speed, simulated.

The real pipeline (the `images` dataset decoding PNG files, the teacher's preprocessing in the
loader, shard buffers, fp16 encoding, compression, crc32c, checksum record, statistics, commit
markers) runs with a stand-in teacher: it has the real teacher's preprocessing and levels, and
its forward pass sleeps MS per batch, then returns features of the real shape (for LiteMedSAM,
the real teacher's own features of one image, so they compress as real ones do).

Per MS: images/s and MB/s of fp16 features committed against the ideal (batch / MS), and, in the
same run on the same disk, two limits for the same fp16 bytes: `ndarray.tofile` (no compression,
no checksums) and in-memory compression with the default codec (one thread, and all cores).
Then every stage alone (loader, commit) and a profile of the commit path, to name what limits.
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numcodecs import Blosc
from threadpoolctl import threadpool_limits

from featcache.data.registry import build_dataset
from featcache.extract.pipeline import _collate, _new_buffer, _ViewItems, device_inputs, shard_stats
from featcache.extract.runner import extract, plan_entry
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore
from featcache.teachers.base import Teacher
from featcache.teachers.registry import build_teacher

MB = 1e6


class StandInTeacher(Teacher):
    """A teacher's preprocessing and levels; the forward pass sleeps `ms` per batch and returns
    fixed features of the real shapes."""

    def __init__(self, real: Teacher, features: dict[str, torch.Tensor], ms: float) -> None:
        self.name, self.arch = real.name, f"{real.arch}-standin"
        self.preprocess, self.available_levels = real.preprocess, real.available_levels
        self.default_levels = real.default_levels
        self.weights_sha256, self.weights_source = f"standin{ms:g}".ljust(64, "0"), "stand-in"
        self.model = torch.nn.Linear(1, 1)
        self.features, self.ms = features, ms

    def to(self, device: str | torch.device) -> StandInTeacher:
        self.model.to(device)
        self.features = {n: f.to(device) for n, f in self.features.items()}
        return self

    def _forward_levels(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        time.sleep(self.ms / 1000)
        return {n: self.features[n].expand(x.shape[0], *self.features[n].shape[1:]) for n in names}


def write_images(folder: Path, count: int, size: int) -> None:
    """`count` RGB PNGs of size x size: smooth fields plus noise (decode cost of a real photo)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for k in range(count):
        path = folder / f"img{k:04d}.png"
        if path.exists():
            continue
        base = np.stack([np.sin(6 * yy + k), np.cos(5 * xx - k), np.sin(4 * (xx + yy))], -1)
        pixels = (base + 1) * 100 + rng.integers(0, 50, (size, size, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path)


def real_cost(args, folder: Path) -> tuple[Teacher, dict[str, torch.Tensor], float | None]:
    """The real teacher, features (1, C, H, W) per level, and ms per batch of its real forward
    pass on this CPU (one image, times the batch size). LiteMedSAM: its own features of one image.
    Others (random weights here): features of a normal spread, and the forward pass is timed only
    when the sweep needs it (no MS given)."""
    options = {"random_init": True} if args.teacher != "litemedsam" else {}
    real = build_teacher(args.teacher, None, None, **options)
    specs = real.select_levels(args.levels)
    if args.teacher != "litemedsam" and args.simulate_teacher:
        return real, {s.name: torch.randn(1, s.channels, *s.grid) for s in specs}, None
    x, _ = real.prepare(build_dataset("images", folder).load(0).image)
    names = [s.name for s in specs]
    if args.simulate_teacher:  # MS given: the features only, no timing
        return real, {n: f.contiguous() for n, f in real.extract(x[None], names).items()}, None
    real.extract(x[None], names)  # warm-up
    start = time.perf_counter()
    feats = real.extract(x[None], names)
    ms = (time.perf_counter() - start) * 1000 * args.batch_size
    if args.teacher != "litemedsam":
        feats = {n: torch.randn_like(f) for n, f in feats.items()}
    return real, {n: f.contiguous() for n, f in feats.items()}, ms


def _fp16(features: dict[str, torch.Tensor]) -> list[np.ndarray]:
    return [f[0].numpy().astype(np.float16) for f in features.values()]


def _first(folder: Path, target: Path, n: int):
    """The `images` dataset over the first n images of `folder` (links, no copies)."""
    if not target.exists():
        target.mkdir()
        for path in sorted(folder.iterdir())[:n]:
            (target / path.name).symlink_to(path)
    return build_dataset("images", target)


def raw_write_rate(features: dict[str, torch.Tensor], folder: Path, images: int) -> float:
    """MB/s of `ndarray.tofile` of each image's fp16 level arrays into `folder` (same disk)."""
    arrays = _fp16(features)
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for k in range(images):
        for j, a in enumerate(arrays):
            a.tofile(folder / f"{k}.{j}.bin")
    seconds = time.perf_counter() - start
    shutil.rmtree(folder)
    return images * sum(a.nbytes for a in arrays) / MB / seconds


def compress_rate(features: dict[str, torch.Tensor], images: int, threads: int) -> tuple[float, float]:
    """(MB/s of fp16 input, compression ratio) of the default codec (FORMAT.md: blosc lz4,
    bitshuffle, clevel 5) over each image's level arrays, on `threads` threads, in memory."""
    arrays = _fp16(features)
    codec = Blosc(cname="lz4", clevel=5, shuffle=Blosc.BITSHUFFLE, typesize=2)
    sizes = [len(codec.encode(a)) for a in arrays]

    def one(_: int) -> None:
        for a in arrays:
            codec.encode(a)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(images)))
    seconds = time.perf_counter() - start
    total = sum(a.nbytes for a in arrays)
    return images * total / MB / seconds, total / sum(sizes)


def run_extraction(args, data, teacher: Teacher, root: Path, **settings: Any) -> float:
    """Seconds for one fresh extraction into a store under `root` (removed afterwards)."""
    store = FeatureStore(root)
    chosen = ExtractSettings(batch_size=args.batch_size, shard_size=args.shard_size, **settings)
    start = time.perf_counter()
    result = extract(data, teacher, store, chosen, levels=args.levels)
    seconds = time.perf_counter() - start
    assert result.status == "extracted", result.status
    shutil.rmtree(root)
    return seconds


def loader_rate(data, teacher: Teacher, workers: int, batch: int, on_device: bool = False) -> float:
    """Images/s of the loader alone: PNG decode + the teacher's preprocessing; `on_device`: what
    the CPU does for a CUDA teacher (PNG decode, uint8 views; resizing is left to the device)."""
    items = [(i, 0) for i in range(len(data))]
    batches = [items[k:k + batch] for k in range(0, len(items), batch)]
    loader = torch.utils.data.DataLoader(_ViewItems(data, teacher, 0, on_device), batch_sampler=batches,
                                         num_workers=workers, collate_fn=_collate)
    start = time.perf_counter()
    n = sum(len(b["index"]) for b in loader)
    return n / (time.perf_counter() - start)


def device_resize_rate(data, teacher: Teacher, batch: int) -> float:
    """Images/s of device_inputs (upload, resize, normalise) on the teacher's device alone."""
    pixels = [next(iter(torch.utils.data.DataLoader(_ViewItems(data, teacher, 0, True), batch_sampler=[[
        (i, 0) for i in range(batch)]], collate_fn=_collate)))["pixels"]]
    device_inputs(pixels[0], teacher)  # warm-up
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 2 or n < 2 * batch:
        device_inputs(pixels[0], teacher)
        n += batch
    if teacher.device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def _commit_setup(args, data, teacher: Teacher, root: Path, shards: int, compression: str = "blosc"):
    """A fresh entry's writer and `shards` filled shard buffers of the stand-in's features."""
    settings = ExtractSettings(shard_size=args.shard_size, compression=compression)
    plan = plan_entry(data, teacher, settings, levels=args.levels)
    writer = FeatureStore(root).create_entry(plan.key, plan.layout, plan.attrs)
    bufs = []
    for shard in range(min(shards, plan.layout.num_shards)):
        buf = _new_buffer(plan.layout, shard, plan.names, teacher.device)
        for name in plan.names:
            buf["features"][name][:] = teacher.features[name][0]
        bufs.append((shard, buf))
    images = sum(len(range(*plan.layout.shard_range(s))) for s, _ in bufs)
    return writer, bufs, images


def _commit_one(writer, shard: int, buf) -> None:
    torch.set_num_threads(1)  # as run_shards' writer threads
    with torch.inference_mode():
        written = writer.write_shard(shard, buf["features"], buf["frames"], buf["params"], consume=True)
        shard_stats(written.values)


def commit_rate(args, data, teacher: Teacher, root: Path, threads: int, compression: str) -> float:
    """Images/s of the commit path alone (write_shard + statistics) on `threads` writer threads."""
    main = torch.get_num_threads()
    writer, bufs, images = _commit_setup(args, data, teacher, root, 2 * threads, compression)
    start = time.perf_counter()
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda sb: _commit_one(writer, *sb), bufs))
    seconds = time.perf_counter() - start
    torch.set_num_threads(main)
    shutil.rmtree(root)
    return images / seconds


def commit_profile(args, data, teacher: Teacher, root: Path, shards: int) -> tuple[float, str]:
    """Images/s of the commit path alone (write_shard + statistics, one thread, profiled) and its
    profile: the cumulative time of the calls that matter."""
    writer, bufs, images = _commit_setup(args, data, teacher, root, shards)
    main = torch.get_num_threads()
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    with threadpool_limits(1, user_api="blas"):  # as run_shards runs it
        for shard, buf in bufs:
            _commit_one(writer, shard, buf)
    profiler.disable()
    seconds = time.perf_counter() - start
    torch.set_num_threads(main)
    shutil.rmtree(root)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(
        r"write_shard|shard_stats|encode_level|_check|encode_tensor|decode_tensor|vector_norm|update|"
        r"_gram|add|_checksum_record|_written_chunk_crcs|setitem|set_block_selection|crc_of|"
        r"encode_shard|put_parts|\{method 'write'|\{method 'encode'|_crc32c.value")
    lines = [ln for ln in out.getvalue().splitlines() if "/" in ln or "ncalls" in ln or "{" in ln]
    return images / seconds, "\n".join(lines)


def _setting(text: str) -> dict[str, Any]:
    """"none" -> a compression; "writer_threads=1" -> that ExtractSettings field."""
    if "=" not in text:
        return {"compression": text}
    name, value = text.split("=", 1)
    return {name: int(value)}


def simulate(args) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-extract-sim-", dir=args.tmp))
    try:
        _simulate(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _simulate(args, tmp: Path) -> None:
    folder = tmp / "images"
    write_images(folder, args.images, args.image_px)
    real, features, real_ms = real_cost(args, folder)
    args.levels = list(features)
    data = build_dataset("images", folder)
    per_image = sum(f[0].numel() for f in features.values()) * 2  # fp16 bytes
    shapes = ", ".join(f"{n} {tuple(f.shape[1:])}" for n, f in features.items())
    print(f"stand-in {args.teacher}: levels {shapes}; {per_image / MB:.2f} MB fp16 per image; "
          f"{args.images} PNG images {args.image_px}px; batch {args.batch_size}, shard {args.shard_size}; "
          f"{os.cpu_count()} cores; real forward on this CPU: "
          f"{'not timed' if real_ms is None else f'{real_ms:.0f} ms per batch'}", flush=True)
    results: dict[str, float] = {}
    raw = _limits(features, tmp, args.images, per_image, results)
    _sweep(args, tmp, folder, data, real, features, real_ms, per_image, raw, results)
    _stages(args, tmp, data, real, features, per_image, raw, results)
    for name, value in results.items():  # machine-readable, last: `grep ^RESULT`
        print(f"RESULT {name} {value:.4g}")


def _limits(features, tmp: Path, images: int, per_image: int, results: dict[str, float]) -> float:
    """Raw write and in-memory compression of the same bytes; returns raw MB/s."""
    raw = raw_write_rate(features, tmp / "raw", images)
    one, ratio = compress_rate(features, images, 1)
    cores = os.cpu_count() or 1
    many, _ = compress_rate(features, images, cores)
    print(f"limits, same bytes, same disk: raw tofile {raw:.0f} MB/s ({raw * MB / per_image:.0f} img/s); "
          f"blosc in memory {one:.0f} MB/s on 1 thread, {many:.0f} MB/s on {cores} "
          f"(ratio {ratio:.2f}x)", flush=True)
    results.update(raw_write_mb_s=raw, blosc_1_thread_mb_s=one)
    return raw


def _sweep(args, tmp: Path, folder: Path, data, real, features, real_ms, per_image: int, raw: float,
           results: dict[str, float]) -> None:
    """Full extractions at each MS per batch (at 0: beside the other settings too)."""
    sweep = args.simulate_teacher or [real_ms, real_ms / 8, real_ms / 64, 0.0]
    configs = [("default", {})] + [(c, _setting(c)) for c in args.also]
    print(f"{'ms/batch':>9} {'settings':>16} {'images':>6} {'ideal img/s':>11} {'img/s':>7} {'MB/s':>7} "
          f"{'of ideal':>8} {'of raw':>7}")
    for ms in sweep:
        # enough images for a few seconds of the ideal, whole batches
        n = args.images if ms == 0 else min(args.images, max(2 * args.batch_size, int(
            args.seconds / (ms / 1000) * args.batch_size)))
        subset = _first(folder, tmp / f"images-{n}", n) if n < len(data) else data
        teacher = StandInTeacher(real, features, ms)
        ideal = args.batch_size / (ms / 1000) if ms else float("inf")
        for label, settings in configs if ms == 0 else configs[:1]:  # the others where they show
            runs = [run_extraction(args, subset, teacher, tmp / "store", **settings)
                    for _ in range(args.repeats)]
            rate = n / statistics.median(runs)
            mbs = rate * per_image / MB
            print(f"{ms:9.0f} {label:>16} {n:6d} {ideal:11.1f} {rate:7.1f} {mbs:7.0f} "
                  f"{rate / ideal if ms else 0:8.2f} {mbs / raw:7.3f}", flush=True)
            name = "blosc" if label == "default" else label.replace("=", "_")
            results[f"extract_img_s_{name}_ms{ms:g}"] = rate
            if ms == 0:
                results[f"commit_over_raw_{name}"] = mbs / raw


def _stages(args, tmp: Path, data, real, features, per_image: int, raw: float,
            results: dict[str, float]) -> None:
    """Every stage alone: the loader (CPU path and the CPU part of the device path), the resize
    on this process's device, the commit path on all cores and profiled on one thread."""
    zero = StandInTeacher(real, features, 0.0)
    for on_device, what in ((False, "PNG decode + preprocessing"), (True, "device path: PNG decode, uint8")):
        rates = {w: loader_rate(data, zero, w, args.batch_size, on_device) for w in args.loader_sweep}
        print(f"stages alone: loader ({what}) "
              + ", ".join(f"{w} worker(s) {r:.0f} img/s" for w, r in rates.items()), flush=True)
        for w, r in rates.items():
            results[f"loader{'_device' if on_device else ''}_img_s_w{w}"] = r
    resize = device_resize_rate(data, zero, args.batch_size)
    print(f"device path: upload + resize + normalise on {zero.device.type}: {resize:.0f} img/s", flush=True)
    results[f"device_resize_img_s_{zero.device.type}"] = resize
    cores = os.cpu_count() or 1
    for compression in ("blosc", "none"):
        rate = commit_rate(args, data, zero, tmp / "commit", cores, compression)
        print(f"commit path alone ({compression}, write_shard + statistics, {cores} threads): "
              f"{rate:.0f} img/s ({rate * per_image / MB:.0f} MB/s, {rate * per_image / MB / raw:.2f}x raw)",
              flush=True)
        results[f"commit_alone_over_raw_{compression}"] = rate * per_image / MB / raw
    rate, profile = commit_profile(args, data, zero, tmp / "profile", 4)
    print(f"commit path alone (write_shard + statistics, one thread, profiled): {rate:.0f} img/s "
          f"({rate * per_image / MB:.0f} MB/s); profile (cumulative s):\n{profile}", flush=True)
