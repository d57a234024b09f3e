"""Benchmark the feature store against raw per-sample float32 .npy files, side by side.

Each mode is `precision[/compression]` (compression: blosc, the default, zstd or none). Per mode,
every repeat times the raw side and then the store side back to back, so machine noise hits both;
the table gives medians over --repeats and ratios to raw (x raw > 1: the store is faster).

- write: np.save of every sample / write_shard of every shard + finalize (page cache, no fsync).
- warm read: every sample once, files in the page cache (the files were just read): CPU cost.
- cold read: every raw and store file is flushed and evicted from the page cache with
  os.posix_fadvise(POSIX_FADV_DONTNEED) before each timed pass, on both sides, and the store is
  reopened: what a lab sees from a shared disk or a store larger than RAM. The store reads fewer
  bytes when it compresses.
- read_many: one (N, V, C, H, W) batch through the reader's thread pool (warm), against np.load
  of every sample into a batch of the same shape (warm).
- one sample: median latency of reading one random sample (warm).

    python pipelines/bench_store.py --samples 64 --channels 256 --size 64
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from featcache.store import EntryLayout, FeatureStore, LevelLayout
from featcache.store.precision import decode

MODES = "fp16,fp16/zstd,fp16/none,fp32,fp32/none,fp16-br7,int8"
KEY = "bench.x.0"


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def evict(folder: Path) -> None:
    """Drop every file under `folder` from the page cache (flushed first: dirty pages stay)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _features(args) -> np.ndarray:
    """(N, V, C, H, W) float32: smooth spatial structure plus noise, like real feature maps."""
    rng = np.random.default_rng(0)
    n, v, c, s = args.samples, args.views, args.channels, args.size
    base = rng.standard_normal((n, v, c, s // 8, s // 8)).astype(np.float32)
    smooth = base.repeat(8, axis=3).repeat(8, axis=4)
    return smooth + 0.3 * rng.standard_normal((n, v, c, s, s)).astype(np.float32)


class Raw:
    def __init__(self, folder: Path, feats: np.ndarray) -> None:
        self.folder, self.feats = folder, feats
        folder.mkdir(parents=True)

    def write(self) -> None:
        for i, x in enumerate(self.feats):
            np.save(self.folder / f"{i}.npy", x)

    def read(self) -> None:
        for i in range(len(self.feats)):
            np.load(self.folder / f"{i}.npy")

    def read_batch(self) -> None:  # the raw way to build read_many's (N, V, C, H, W) batch
        out = np.empty(self.feats.shape, np.float32)
        for i in range(len(self.feats)):
            out[i] = np.load(self.folder / f"{i}.npy")

    def one(self, i: int) -> None:
        np.load(self.folder / f"{i}.npy")


class Store:
    def __init__(self, folder: Path, feats: np.ndarray, mode: str, shard: int) -> None:
        n, v, c, _, s = feats.shape
        precision, _, compression = mode.partition("/")
        self.layout = EntryLayout(sample_ids=tuple(f"s{i}" for i in range(n)), views=v,
                                  levels=(LevelLayout("emb", c, s, s),), shard_size=shard,
                                  precision=precision, compression=compression or "blosc")
        self.folder, self.feats, self.store = folder, feats, FeatureStore(folder)
        self.reader = None

    def write(self) -> None:
        if self.store.exists(KEY):
            self.store.remove(KEY)
        writer = self.store.create_entry(KEY, self.layout, {})
        n, v = self.feats.shape[:2]
        frames, params = np.zeros((n, v, 4), np.float32), np.zeros((n, v, 1), np.float32)
        for k in range(self.layout.num_shards):
            a, b = self.layout.shard_range(k)
            writer.write_shard(k, {"emb": self.feats[a:b]}, frames[a:b], params[a:b])
        writer.finalize({}, {})

    def reopen(self) -> None:
        self.reader = FeatureStore(self.folder, read_only=True).open(KEY)

    def read(self) -> None:  # like the raw loop: each sample is dropped after reading
        for i in range(len(self.feats)):
            self.reader.read(i, "emb")

    def read_many(self) -> None:
        self.reader.read_many(range(len(self.feats)), "emb")

    def one(self, i: int) -> None:
        self.reader.read(i, "emb")


def _pairs(raw_fn, store_fn, repeats: int, before=None) -> tuple[float, float]:
    """Median seconds of raw_fn and store_fn, timed alternately; `before` runs untimed first."""
    raw_t, store_t = [], []
    for _ in range(repeats):
        for fn, times in ((raw_fn, raw_t), (store_fn, store_t)):
            if before is not None:
                before()
            times.append(_seconds(fn))
    return statistics.median(raw_t), statistics.median(store_t)


def bench_mode(raw: Raw, folder: Path, mode: str, args) -> dict[str, float]:
    st = Store(folder, raw.feats, mode, args.shard)
    out: dict[str, float] = {}
    out["raw_write"], out["write"] = _pairs(raw.write, st.write, args.repeats)
    st.reopen()
    raw.read()
    st.read()  # warm both
    out["raw_warm"], out["warm"] = _pairs(raw.read, st.read, args.repeats)
    out["raw_many"], out["many"] = _pairs(raw.read_batch, st.read_many, args.repeats)

    def cold() -> None:
        evict(raw.folder)
        evict(folder)
        st.reopen()

    out["raw_cold"], out["cold"] = _pairs(raw.read, st.read, args.repeats, before=cold)
    st.reopen()
    raw.read()
    st.read()  # warm again after the cold passes
    picks = [int(i) for i in np.random.default_rng(1).integers(0, len(raw.feats), args.random_reads)]
    out["raw_one"] = statistics.median(_seconds(lambda i=i: raw.one(i)) for i in picks)
    out["one"] = statistics.median(_seconds(lambda i=i: st.one(i)) for i in picks)
    report = st.reader.meta["precision_report"]["emb"]
    out.update(bytes=report["bytes_on_disk"], max_rel=report["max_rel_error"],
               mean_rel=report["mean_rel_error"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--views", type=int, default=1)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--size", type=int, default=64, help="feature map height = width")
    parser.add_argument("--shard", type=int, default=16)
    parser.add_argument("--modes", default=MODES, help="comma-separated precision[/compression], "
                        "compression blosc (default), zstd or none")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--random-reads", type=int, default=50)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder on the disk to test "
                        "(default: a temp dir); must not be tmpfs, or cold reads are warm")
    args = parser.parse_args()

    feats = _features(args)
    mb = feats.nbytes / 1e6
    decode(np.zeros(1, np.float16), None, None)  # import torch (used to decode) before any timing
    scratch = Path(tempfile.mkdtemp(dir=args.dir, prefix="bench-store-"))
    try:
        raw = Raw(scratch / "raw", feats)
        raw.write()
        raw_bytes = sum(p.stat().st_size for p in raw.folder.iterdir())
        print(f"{args.samples} samples x {args.views} views x {args.channels}x{args.size}x{args.size} "
              f"float32 = {mb:.1f} MB ({raw_bytes / 1e6:.1f} MB of .npy); medians of {args.repeats}; "
              "x raw = raw time / store time, timed alternately")
        header = ("mode", "write x raw", "warm read MB/s (raw)", "x raw", "cold read MB/s (raw)", "x raw",
                  "read_many x raw", "1-sample ms (raw)", "MB on disk", "x smaller", "max / mean rel err")
        print(" | ".join(header))
        results: dict[str, float] = {}
        for mode in args.modes.split(","):
            r = bench_mode(raw, scratch / mode.replace("/", "-"), mode, args)
            print(" | ".join([
                mode if "/" in mode else f"{mode}/blosc",
                f"{r['raw_write'] / r['write']:.2f}",
                f"{mb / r['warm']:.0f} ({mb / r['raw_warm']:.0f})", f"{r['raw_warm'] / r['warm']:.2f}",
                f"{mb / r['cold']:.0f} ({mb / r['raw_cold']:.0f})", f"{r['raw_cold'] / r['cold']:.2f}",
                f"{r['raw_many'] / r['many']:.2f}",
                f"{r['one'] * 1e3:.2f} ({r['raw_one'] * 1e3:.2f})",
                f"{r['bytes'] / 1e6:.1f}", f"{raw_bytes / r['bytes']:.2f}",
                f"{r['max_rel']:.1e} / {r['mean_rel']:.1e}"]), flush=True)
            shutil.rmtree(scratch / mode.replace("/", "-"), ignore_errors=True)
            name = (mode if "/" in mode else f"{mode}/blosc").replace("/", "_").replace("-", "_")
            results.update({f"write_over_raw_{name}": r["raw_write"] / r["write"],
                            f"warm_read_over_raw_{name}": r["raw_warm"] / r["warm"],
                            f"cold_read_over_raw_{name}": r["raw_cold"] / r["cold"],
                            f"smaller_than_raw_{name}": raw_bytes / r["bytes"]})
        for name, value in results.items():  # machine-readable, last: `grep ^RESULT`
            print(f"RESULT {name} {value:.4g}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
