"""A direct reader for level arrays in local stores: one sample's chunks straight from its shard file.

zarr's general read path costs ~2-3 ms of overhead per 4 MB sample (async hops, shard-index reads
on every call, buffer copies). Level arrays have one fixed, documented encoding (FORMAT.md):
sharding_indexed, index at the end = (offset, nbytes) uint64 pairs + crc32c, inner chunks
bytes(little) -> blosc or zstd (or nothing) -> crc32c. For exactly that encoding we read the index once
per shard, then pread each (sample, view) chunk, check its crc32c, and decompress it straight
into the output array. Any other encoding (or remote
store) uses zarr. Checksums are checked exactly as zarr does; a mismatch raises ValueError.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import google_crc32c
import numpy as np
from numcodecs import Blosc, Zstd, blosc

_EMPTY = np.uint64(2**64 - 1)
# Both decoders read their parameters from the chunk's own header (blosc: typesize, shuffle,
# compressor; zstd: frame header), so one instance each decodes any configuration.
_DECODERS = {"blosc": Blosc(), "zstd": Zstd()}
_INNER = (["bytes", "blosc", "crc32c"], ["bytes", "zstd", "crc32c"], ["bytes", "crc32c"])


def single_threaded_decoding() -> None:
    """Make blosc decode on the calling process's thread alone. For loader worker processes: by
    default blosc splits each chunk over as many threads as there are cores, which there means
    more runnable threads than cores, beside a training process that uses them all."""
    blosc.set_nthreads(1)


def expected_codecs(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The sharding configuration if `meta` is exactly featcache's level encoding, else None."""
    codecs = meta.get("codecs") or []
    if len(codecs) != 1 or codecs[0].get("name") != "sharding_indexed":
        return None
    conf = codecs[0]["configuration"]
    inner = [c["name"] for c in conf["codecs"]]
    index = [c["name"] for c in conf["index_codecs"]]
    if inner not in _INNER or index != ["bytes", "crc32c"]:
        return None
    endians = [c.get("configuration", {}).get("endian", "little") for c in
               conf["codecs"][:1] + conf["index_codecs"][:1]]
    if conf.get("index_location", "end") != "end" or any(e != "little" for e in endians):
        return None
    enc = meta.get("chunk_key_encoding", {})
    if enc.get("name") != "default" or enc.get("configuration", {}).get("separator", "/") != "/":
        return None
    return conf


class LevelFastPath:
    """Reads (V, C, H, W) or (C, H, W) of one sample from a local sharded level array."""

    def __init__(self, folder: str, meta: dict[str, Any], conf: dict[str, Any]) -> None:
        self.folder = folder
        self.shape = tuple(meta["shape"])  # (N, V, C, H, W)
        self.shard_shape = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
        self.dtype = np.dtype(meta["data_type"]).newbyteorder("<")
        self.per_shard = self.shard_shape[0] * self.shard_shape[1]
        inner = [c["name"] for c in conf["codecs"]]
        self.codec = inner[1] if len(inner) == 3 else None  # "blosc", "zstd" or None
        self.compressed = self.codec is not None
        self._index: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_array(cls, folder: str, array: Any) -> LevelFastPath | None:
        meta = array.metadata.to_dict()
        conf = expected_codecs(meta)
        if conf is None or tuple(conf["chunk_shape"])[:2] != (1, 1):
            return None
        return cls(folder, meta, conf)

    def _path(self, shard: int) -> str:
        return os.path.join(self.folder, "c", str(shard), "0", "0", "0", "0")

    def _shard_index(self, shard: int, fh: Any) -> np.ndarray:
        """(s * V, 2) uint64 offsets and sizes; read and checked once, then cached (shards of
        committed samples never change)."""
        index = self._index.get(shard)
        if index is not None:
            return index
        size = self.per_shard * 16 + 4
        fh.seek(-size, os.SEEK_END)
        raw = fh.read(size)
        if len(raw) != size or google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            raise ValueError(f"shard {shard} index checksum mismatch")
        index = np.frombuffer(raw[:-4], dtype="<u8").reshape(-1, 2)
        with self._lock:
            self._index[shard] = index
        return index

    def _chunk(self, fh: Any, index: np.ndarray, slot: int, out: np.ndarray) -> int:
        """Decode chunk `slot` of an open shard into `out` (C, H, W), checking its crc32c; returns
        that crc32c (the reader compares it with the entry's checksum record)."""
        offset, nbytes = index[slot]
        if offset == _EMPTY and nbytes == _EMPTY:
            # every chunk is written (write_empty_chunks), so an empty slot means lost data:
            # zarr would return the fill value instead
            raise ValueError(f"chunk {slot} of the shard is missing")
        target = memoryview(out.reshape(-1).view(np.uint8))
        if self.compressed:
            raw = os.pread(fh.fileno(), int(nbytes), int(offset))
            body, crc = memoryview(raw)[:-4], raw[-4:]
        else:  # read straight into the output array: no copy at all
            if nbytes != out.nbytes + 4:
                raise ValueError(f"chunk at byte {offset} has {nbytes} bytes, expected {out.nbytes + 4}")
            crc_buf = bytearray(4)
            got = os.preadv(fh.fileno(), [target, crc_buf], int(offset))
            raw, body, crc = b"", target, bytes(crc_buf[: max(0, got - out.nbytes)])
        if len(crc) != 4 or (self.compressed and len(raw) != nbytes):
            raise ValueError(f"chunk at byte {offset} is truncated")
        stored_crc = int.from_bytes(crc, "little")
        if google_crc32c.value(np.frombuffer(body, np.uint8)) != stored_crc:
            raise ValueError("Stored and computed checksum do not match")
        if self.codec == "blosc":  # a smaller decoded size would leave part of `out` unwritten
            size = int.from_bytes(body[4:8], "little")  # blosc header: uncompressed nbytes (uint32)
            if len(body) < 16 or size != out.nbytes:
                raise ValueError(f"chunk at byte {offset} decodes to {size} bytes, expected {out.nbytes}")
        if self.compressed:
            _DECODERS[self.codec].decode(body, out=target)
        return stored_crc

    def read(self, index: int, view: int | None = None) -> np.ndarray:
        return self.read_checked(index, view)[0]

    def read_checked(self, index: int, view: int | None = None) -> tuple[np.ndarray, list[int]]:
        """read(), plus the crc32c of each view's chunk as stored in the shard."""
        shard, local = divmod(index, self.shard_shape[0])
        views = range(self.shape[1]) if view is None else [view]
        try:
            fh = open(self._path(shard), "rb")
        except FileNotFoundError:  # readers only read committed shards: a missing one was lost
            raise ValueError(f"shard file c/{shard}/0/0/0/0 is missing") from None
        out = np.empty((len(views), *self.shape[2:]), dtype=self.dtype)
        with fh:
            shard_index = self._shard_index(shard, fh)
            crcs = [self._chunk(fh, shard_index, local * self.shard_shape[1] + v, out[k])
                    for k, v in enumerate(views)]
        return (out if view is None else out[0]), crcs
