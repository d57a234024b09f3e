"""The floor of the extraction commit path, per image, side by side in one run (issue 25).

For one shard of the stand-in teacher's real features (LiteMedSAM: its own features of one PNG,
`embedding` + `stage2`, 3.41 MB fp16 per image), each step alone, one thread, median of
--repeats rounds (every step once per round, interleaved), in ms per image and as a multiple
of (a):

  (a) raw write: `ndarray.tofile` of each image's fp16 level arrays (what bench_extract calls raw:
      the files are deleted right after, so the page cache never has to write them);
      (a2) the same with the files kept, as a store keeps its shards; (a3) with an fsync of
      each file: the disk's own rate, which a store's writes run at once the page cache has
      as many dirty pages as the kernel lets it keep
  (b) fp16 cast only: torch float32 -> float16 of the shard (what encode_tensor does)
  (c) compression only: the store's codec (blosc lz4, clevel 5, bitshuffle, typesize 2) of every
      (sample, view) chunk, in memory
  (d) crc32c only: of the fp16 bytes (the checksum record's column) and of the compressed chunks
      (the codec chain's trailer)
  (e) the store's write of the shard's level arrays through zarr (`array[start:stop] = fp16`),
      into the local store and into a memory:// store (zarr's machinery without the disk)
  (f) the same shard bytes by the direct shard writer (featcache/store/shardwrite.py): encoding
      alone, and encoding + the put, one thread and --threads threads
  (g) the whole write_shard (checks, encoding, error report, level shards, frames, checksum
      record, commit marker) and the shard statistics: what one writer thread does per image

with fp16/blosc and fp16/none. The commit path cannot be faster than (b) + (c) + (d) + (a);
bench_extract's targets are 0.5x raw (blosc) and 0.8x raw (none), i.e. at most 2.0x and 1.25x
(a)'s time per image for everything.

    python pipelines/bench_commit_floor.py --repeats 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from argparse import Namespace
from pathlib import Path
from typing import Any

import google_crc32c
import numpy as np
import torch
from numcodecs import Blosc
from threadpoolctl import threadpool_limits

from featcache.extract.pipeline import shard_stats
from featcache.store import EntryLayout, FeatureStore, LevelLayout, entry_key
from featcache.store.shardwrite import encode_shard

MB = 1e6


def _features(tmp: Path, teacher: str) -> dict[str, torch.Tensor]:
    from sim_extract import real_cost, write_images  # beside this script

    folder = tmp / "images"
    write_images(folder, 1, 512)
    args = Namespace(teacher=teacher, levels=["embedding", "stage2"] if teacher == "litemedsam" else None,
                     simulate_teacher=[0.0], batch_size=8)
    _, feats, _ = real_cost(args, folder)
    return feats


def _round_robin(steps: dict[str, Any], repeats: int, images: int) -> dict[str, tuple[float, float]]:
    """(wall, CPU) median ms per image of each step over `repeats` rounds, one call of every step
    per round (after one warm-up round; a callable a step returns is run after its timing), so
    that what the machine does meanwhile (other processes, the page cache filling up with the
    store's files) falls on every step alike. CPU: this process's user + system time, all its
    threads (zarr's included): what the step costs the cores, whatever else runs beside it."""
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    for r in range(repeats + 1):
        for name, fn in steps.items():
            start, cpu = time.perf_counter(), time.process_time()
            after = fn()
            if r:
                runs[name].append((time.perf_counter() - start, time.process_time() - cpu))
            if callable(after):  # untimed clean-up
                after()
    return {name: (statistics.median(w for w, _ in t) * 1000 / images,
                   statistics.median(c for _, c in t) * 1000 / images) for name, t in runs.items()}


def measure(args) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="commit-floor-", dir=args.tmp))
    try:
        return _measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _measure(args, tmp: Path) -> dict[str, float]:
    torch.set_num_threads(1)
    feats = _features(tmp, args.teacher)
    n = args.shard_size
    x32 = {k: f[0].expand(n, 1, *f.shape[1:]).contiguous() for k, f in feats.items()}  # (n, 1, C, H, W)
    x16 = {k: v.to(torch.float16).numpy() for k, v in x32.items()}
    per_image = sum(a[0].nbytes for a in x16.values())
    print(f"{args.teacher}: levels {', '.join(f'{k} {tuple(v.shape[2:])}' for k, v in x16.items())}; "
          f"{per_image / MB:.2f} MB fp16 per image; shard of {n}; median of {args.repeats} rounds",
          flush=True)
    codec = Blosc(cname="lz4", clevel=5, shuffle=Blosc.BITSHUFFLE, typesize=2)
    chunks = [a[i, 0] for a in x16.values() for i in range(n)]
    compressed = [codec.encode(c) for c in chunks]
    ratio = sum(c.nbytes for c in chunks) / sum(len(c) for c in compressed)
    rounds = iter(range(10**6))

    def raw(keep: bool, sync: bool = False) -> Any:
        folder = tmp / f"raw-{'kept' if keep else 'deleted'}" / str(next(rounds))
        folder.mkdir(parents=True)
        for i in range(n):
            for j, a in enumerate(x16.values()):
                with open(folder / f"{i}.{j}.bin", "wb") as fh:
                    a[i, 0].tofile(fh)
                    if sync:
                        os.fsync(fh.fileno())
        # bench_extract's raw write: the files go (untimed) before the page cache writes them out
        return None if keep else lambda: shutil.rmtree(folder)

    steps: dict[str, Any] = {
        "a_raw_write": lambda: raw(False),
        "a2_raw_write_files_kept": lambda: raw(True),
        "a3_raw_write_fsync": lambda: raw(False, sync=True),
        "b_fp16_cast": lambda: [v.to(torch.float16) for v in x32.values()],
        "c_blosc": lambda: [codec.encode(c) for c in chunks],
        "d_crc32c_fp16": lambda: [google_crc32c.value(c.reshape(-1).view(np.uint8)) for c in chunks],
        "d_crc32c_blosc": lambda: [google_crc32c.value(c) for c in compressed],
    }
    for compression in ("blosc", "none"):
        steps.update(_store_steps(args, tmp, compression, feats, x32, x16))
    out = _round_robin(steps, args.repeats, n)
    _print(out, per_image, ratio)
    return out


def _store_steps(args, tmp: Path, compression: str, feats, x32, x16) -> dict[str, Any]:
    n = args.shard_size
    shards = 2 * (args.repeats + 1)
    levels = tuple(LevelLayout(k, *v.shape[1:]) for k, v in feats.items())
    layout = EntryLayout(sample_ids=tuple(f"s{i:05d}" for i in range(n * shards)), views=1, levels=levels,
                         shard_size=n, compression=compression)
    store = FeatureStore(tmp / f"store-{compression}")
    memory = FeatureStore(f"memory://commit-floor-{uuid.uuid4().hex}")
    steps: dict[str, Any] = {}

    def fresh(tag: str, where: FeatureStore = store):
        key = entry_key(f"floor-{tag}", "f", "standin", "t")
        return where.create_entry(key, layout, {}), iter(range(shards))

    # (e) the level shards through zarr: into the local store, and into memory (no disk)
    for tag, where in (("", store), ("_in_memory", memory)):
        def through_zarr(state=fresh(f"zarr{tag}-{compression}", where)) -> None:
            writer, counter = state
            shard = next(counter)
            for name, a in x16.items():
                writer._array(f"levels/{name}")[shard * n:(shard + 1) * n] = a

        steps[f"e_zarr_levels_{compression}{tag}"] = through_zarr

    # (f) the same shards by the direct writer: encode alone, and encode + one put per level
    writer_state = fresh(f"encode-{compression}")
    steps[f"f_direct_encode_only_{compression}"] = lambda: [
        encode_shard(writer_state[0].group[f"levels/{name}"], a) for name, a in x16.items()]
    for threads in sorted({1, args.threads}):
        def direct(state=fresh(f"direct{threads}-{compression}"), threads=threads) -> None:
            writer, counter = state
            shard = next(counter)
            for name, a in x16.items():
                arr = writer.group[f"levels/{name}"]
                enc = encode_shard(arr, a, threads=threads)
                writer.backend.put_parts(f"{arr.path}/c/{shard}/0/0/0/0", enc.parts)

        steps[f"f_direct_levels_{compression}_t{threads}"] = direct

    # (g) the whole write_shard + statistics, one thread (as a writer thread runs it)
    frames = np.tile(np.array([0, 0, 1, 1], np.float32), (n, 1, 1))
    params = np.full((n, 1, 1), np.nan, np.float32)
    copies = {k: v.clone() for k, v in x32.items()}

    def full(state=fresh(f"full-{compression}")) -> None:
        writer, counter = state
        shard = next(counter)
        for k, v in x32.items():  # write_shard consumes its input: a fresh copy, outside nothing
            copies[k].copy_(v)
        with torch.inference_mode(), threadpool_limits(1, user_api="blas"):
            written = writer.write_shard(shard, copies, frames, params, consume=True)
            shard_stats(written.values)

    steps[f"g_write_shard_stats_{compression}"] = full
    return steps


def _print(out: dict[str, tuple[float, float]], per_image: int, ratio: float) -> None:
    a, a_cpu = out["a_raw_write"]
    print(f"blosc ratio {ratio:.2f}x; (a) raw write {a:.2f} ms/img = {per_image / MB / a * 1000:.0f} MB/s "
          f"(CPU {a_cpu:.2f} ms/img)")
    print(f"{'step':32} {'wall ms/img':>11} {'x (a)':>6} {'MB/s':>6} {'CPU ms/img':>10} {'x (a)':>6}")
    for name, (ms, cpu) in out.items():
        print(f"{name:32} {ms:11.2f} {ms / a:6.2f} {per_image / MB / ms * 1000:6.0f} {cpu:10.2f} "
              f"{cpu / a_cpu:6.2f}")
    for c in ("blosc", "none"):
        parts = ["b_fp16_cast", "d_crc32c_fp16", "a_raw_write"] + (
            ["c_blosc", "d_crc32c_blosc"] if c == "blosc" else [])
        floor, floor_cpu = (sum(out[p][k] for p in parts) for k in (0, 1))
        target = 0.5 if c == "blosc" else 0.8
        print(f"floor {c} ({' + '.join(parts)}): {floor:.2f} ms/img = {a / floor:.2f}x raw rate, "
              f"CPU {floor_cpu:.2f} ms/img = {a_cpu / floor_cpu:.2f}x (target {target}x)")
    for name, (ms, cpu) in out.items():
        print(f"RESULT floor_{name}_over_raw {ms / a:.4g}\nRESULT floor_{name}_cpu_ms {cpu:.4g}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", default="litemedsam")
    p.add_argument("--shard-size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="compression threads of the direct writer's (f)")
    p.add_argument("--tmp", default=None)
    measure(p.parse_args())


if __name__ == "__main__":
    main()
