"""Benchmark the feature store against raw per-sample .npy files.

For each precision mode: write and read throughput (MB/s of float32 features) as a ratio to
np.save / np.load of the same float32 arrays, compressed size on disk, and the median latency of
reading one random sample. Every timing is the median of --repeats runs. Reads come from the page
cache for both (the files were just written), so the comparison is CPU cost, not disk speed.
"read" drops each sample after reading it, as the raw loop does; "read_many" builds one
(N, V, C, H, W) batch with the reader's thread pool.

    python pipelines/bench_store.py --samples 64 --channels 256 --size 64
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from featcache.store import EntryLayout, FeatureStore, LevelLayout


def _timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _features(args) -> np.ndarray:
    """(N, V, C, H, W) float32: smooth spatial structure plus noise, like real feature maps."""
    rng = np.random.default_rng(0)
    n, v, c, s = args.samples, args.views, args.channels, args.size
    base = rng.standard_normal((n, v, c, s // 8, s // 8)).astype(np.float32)
    smooth = base.repeat(8, axis=3).repeat(8, axis=4)
    return smooth + 0.3 * rng.standard_normal((n, v, c, s, s)).astype(np.float32)


def _raw(folder: Path, feats: np.ndarray, args) -> dict[str, float]:
    folder.mkdir(parents=True)

    def write():
        for i, x in enumerate(feats):
            np.save(folder / f"{i}.npy", x)

    def read():
        for i in range(len(feats)):
            np.load(folder / f"{i}.npy")

    write_s = _timed(write, args.repeats)
    read_s = _timed(read, args.repeats)
    lat = []
    for i in np.random.default_rng(1).integers(0, len(feats), args.random_reads):
        start = time.perf_counter()
        np.load(folder / f"{i}.npy")
        lat.append(time.perf_counter() - start)
    return {"write_s": write_s, "read_s": read_s, "latency_s": statistics.median(lat),
            "bytes": sum(p.stat().st_size for p in folder.iterdir())}


def _store(folder: Path, feats: np.ndarray, mode: str, args) -> dict[str, float]:
    """mode: a precision, optionally /none for no compression (e.g. fp32/none)."""
    n, v, c, _, s = feats.shape
    precision, _, compression = mode.partition("/")
    layout = EntryLayout(sample_ids=tuple(f"s{i}" for i in range(n)), views=v,
                         levels=(LevelLayout("emb", c, s, s),), shard_size=args.shard, precision=precision,
                         compression=compression or "zstd")
    frames, params = np.zeros((n, v, 4), np.float32), np.zeros((n, v, 1), np.float32)
    store = FeatureStore(folder)

    def write():
        store.remove("bench.x.0") if store.exists("bench.x.0") else None
        writer = store.create_entry("bench.x.0", layout, {})
        for k in range(layout.num_shards):
            a, b = layout.shard_range(k)
            writer.write_shard(k, {"emb": feats[a:b]}, frames[a:b], params[a:b])
        writer.finalize({}, {})

    write_s = _timed(write, args.repeats)
    reader = FeatureStore(folder, read_only=True).open("bench.x.0")
    def read_each():  # like the raw loop: each sample is dropped after reading
        for i in range(n):
            reader.read(i, "emb")

    seq_s = _timed(read_each, args.repeats)
    many_s = _timed(lambda: reader.read_many(range(n), "emb"), args.repeats)
    picks = np.random.default_rng(1).integers(0, n, args.random_reads)
    lat = []
    for i in picks:
        start = time.perf_counter()
        reader.read(int(i), "emb")
        lat.append(time.perf_counter() - start)
    report = reader.meta["precision_report"]["emb"]
    return {"write_s": write_s, "read_s": seq_s, "read_many_s": many_s,
            "latency_s": statistics.median(lat), "bytes": report["bytes_on_disk"],
            "max_rel": report["max_rel_error"], "mean_rel": report["mean_rel_error"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--size", type=int, default=64, help="feature map height = width")
    parser.add_argument("--shard", type=int, default=16)
    parser.add_argument("--precisions", default="fp32,fp16,fp16-br7,int8,fp32/none,fp16/none",
                        help="precision modes; '/none' = no compression (crc32c only)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--random-reads", type=int, default=50)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()

    feats = _features(args)
    mb = feats.nbytes / 1e6
    scratch = Path(tempfile.mkdtemp(dir=args.dir, prefix="bench-store-"))
    try:
        raw = _raw(scratch / "raw", feats, args)
        print(f"{args.samples} samples x {args.views} views x {args.channels}x{args.size}x{args.size} "
              f"float32 = {mb:.1f} MB; medians of {args.repeats} runs")
        print(f"raw .npy: write {mb / raw['write_s']:.0f} MB/s, read {mb / raw['read_s']:.0f} MB/s, "
              f"random sample {raw['latency_s'] * 1e3:.2f} ms, {raw['bytes'] / 1e6:.1f} MB on disk")
        header = ("precision", "write MB/s", "x raw", "read MB/s", "x raw", "read_many MB/s", "x raw",
                  "1-sample ms", "MB on disk", "x smaller", "max rel err", "mean rel err")
        print(" | ".join(header))
        for precision in args.precisions.split(","):
            r = _store(scratch / precision.replace("/", "-"), feats, precision, args)
            print(" | ".join([
                precision, f"{mb / r['write_s']:.0f}", f"{raw['write_s'] / r['write_s']:.2f}",
                f"{mb / r['read_s']:.0f}", f"{raw['read_s'] / r['read_s']:.2f}",
                f"{mb / r['read_many_s']:.0f}", f"{raw['read_s'] / r['read_many_s']:.2f}",
                f"{r['latency_s'] * 1e3:.2f}", f"{r['bytes'] / 1e6:.1f}", f"{raw['bytes'] / r['bytes']:.2f}",
                f"{r['max_rel']:.2e}", f"{r['mean_rel']:.2e}"]))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
