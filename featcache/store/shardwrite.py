"""A direct writer for level shards: one shard object encoded here, bytes identical to zarr's.

zarr's write of a sharded array goes through its general machinery per inner chunk (an asyncio
task per chunk, a thread hop per compression, buffer copies, an index encoded through a codec
pipeline): ~25 ms per LiteMedSAM image beside ~5 ms of compression (docs/measurements.md). Level
arrays have one fixed, documented encoding (FORMAT.md; fastread.py reads it): sharding_indexed
with one inner chunk per (sample, view), inner codecs bytes (little endian) -> blosc or zstd (or
nothing) -> crc32c, the index at the end: (offset, nbytes) uint64 pairs in C order of the
chunks, then its crc32c. zarr lays the chunks out in Morton order of their coordinates in the
shard and leaves slots beyond the array's end empty (2**64 - 1, 2**64 - 1). This module writes
exactly that, with the compressor built from the array's own metadata, so a shard it writes is
byte-for-byte the shard zarr writes (tests/store/test_shardwrite.py) and plain zarr reads it.
Arrays with any other encoding return None from `encode_shard` and are written through zarr.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import google_crc32c
import numpy as np
from numcodecs import Blosc, Zstd

from featcache.store.fastread import expected_codecs

_EMPTY = np.uint64(2**64 - 1)
_SHUFFLE = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


@dataclass(frozen=True)
class EncodedShard:
    """A shard object as a list of byte buffers (written one after the other, never joined), the
    crc32c that ends each (sample, view) inner chunk ((rows, V) uint32: the checksum record's
    `chunk:` column) and the total size. Uncompressed, an inner chunk's body is the stored values
    themselves, so `value_crcs` (the record's `levels/<level>` column) is the same array; None
    when compressed."""

    parts: list[Any]
    chunk_crcs: np.ndarray
    nbytes: int
    value_crcs: np.ndarray | None = None


def _compressor(conf: dict[str, Any]) -> Any:
    """The numcodecs encoder of the inner compressor, from the array's stored codec config, as
    zarr builds it (zarr.codecs.blosc / zstd); None for no compression."""
    inner = conf["codecs"]
    if len(inner) == 2:
        return None
    name, cfg = inner[1]["name"], inner[1].get("configuration", {})
    if name == "blosc":
        return Blosc(cname=cfg["cname"], clevel=cfg["clevel"], shuffle=_SHUFFLE[cfg["shuffle"]],
                     blocksize=cfg.get("blocksize", 0), typesize=cfg["typesize"])
    return Zstd(level=cfg.get("level", 0), checksum=cfg.get("checksum", False))


@lru_cache(maxsize=64)
def morton_order(shape: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Coordinates of a grid of `shape` in Morton (Z) order as zarr's sharding codec lays chunks
    out: codes over the smallest power-of-two box, bits interleaved over the dimensions that have
    bits left, out-of-bounds codes skipped."""
    bits = [(s - 1).bit_length() for s in shape]
    coords = np.indices(shape).reshape(len(shape), -1).T
    codes = np.zeros(len(coords), np.int64)
    out_bit = 0
    for bit in range(max(bits, default=0)):
        for dim, nbits in enumerate(bits):
            if bit < nbits:
                codes |= ((coords[:, dim] >> bit) & 1) << out_bit
                out_bit += 1
    return tuple(tuple(int(c) for c in row) for row in coords[np.argsort(codes, kind="stable")])


def level_spec(array: Any) -> tuple[dict[str, Any], tuple[int, ...]] | None:
    """(sharding config, chunks per shard) when `array` has featcache's level encoding with one
    inner chunk per (sample, view) and shards of (shard_size, V, C, H, W); else None."""
    meta = array.metadata.to_dict()
    conf = expected_codecs(meta)
    if conf is None:
        return None
    shape = tuple(meta["shape"])
    shard = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
    inner = tuple(conf["chunk_shape"])
    if len(shape) != 5 or inner[:2] != (1, 1) or inner[2:] != shape[2:] or shard[1:] != shape[1:]:
        return None
    return conf, (shard[0], shard[1], 1, 1, 1)


def encode_shard(array: Any, data: np.ndarray, threads: int = 1) -> EncodedShard | None:
    """Encode `data` (rows, V, C, H, W) in the array's stored dtype as the array's shard object
    for those rows (rows <= shard_size; a shorter last shard leaves the other slots empty, as
    zarr does). None when the array's encoding is not featcache's level encoding (write it
    through zarr). `threads` > 1 compresses chunks on that many threads (blosc and zstd release
    the GIL): the bytes are the same."""
    spec = level_spec(array)
    if spec is None:
        return None
    conf, per_shard = spec
    rows, views = data.shape[:2]
    if rows > per_shard[0] or views != per_shard[1]:
        raise ValueError(f"shard data of shape {data.shape} does not fit shards of {per_shard[:2]}")
    little = np.dtype(array.metadata.to_dict()["data_type"]).newbyteorder("<")
    data = np.ascontiguousarray(data, dtype=little)
    codec = _compressor(conf)
    order = [(r, v) for r, v, *_ in morton_order(per_shard) if r < rows]

    def body(rv: tuple[int, int]) -> Any:
        chunk = data[rv].reshape(-1).view(np.uint8)
        return chunk if codec is None else codec.encode(chunk)

    if threads > 1 and len(order) > 1:
        with ThreadPoolExecutor(min(threads, len(order))) as pool:
            bodies = list(pool.map(body, order))
    else:
        bodies = [body(rv) for rv in order]
    index = np.full((*per_shard, 2), _EMPTY, dtype="<u8")
    crcs = np.zeros((rows, views), np.uint32)
    parts: list[Any] = []
    offset = 0
    for (r, v), chunk in zip(order, bodies, strict=True):
        crc = google_crc32c.value(chunk)
        crcs[r, v] = crc
        trailer = np.uint32(crc).astype("<u4").tobytes()
        parts += [chunk, trailer]
        size = len(chunk) if isinstance(chunk, bytes) else chunk.nbytes
        index[r, v, 0, 0, 0] = (offset, size + 4)
        offset += size + 4
    index_bytes = index.tobytes()
    parts += [index_bytes, np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes()]
    return EncodedShard(parts, crcs, offset + len(index_bytes) + 4, crcs if codec is None else None)
