"""Writing one entry shard by shard. A shard counts only once its commit marker is written, and
the marker is written after the shard's data, so a killed writer never exposes partial data.
Several writers (threads, processes, hosts) may fill one entry: each claims a shard first
(see claims.py); every shard is its own set of backend, so writers never touch the same object
except when a claim expired, and then they write identical bytes (object puts are atomic)."""

from __future__ import annotations

import datetime as dt
import errno
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.errors import ContainsArrayError, ContainsGroupError

from featcache.errors import StoreError
from featcache.store.backends import Backend, LocalBackend
from featcache.store.claims import DEFAULT_TTL_S, Claims
from featcache.store.integrity import CHUNK, FORMAT_VERSION, checksum_columns, chunk_crcs, crc_of, id_crc
from featcache.store.layout import EntryLayout, check_compression
from featcache.store.precision import Precision, parse_precision, summarize
from featcache.store.shardwrite import EncodedShard, encode_shard

if TYPE_CHECKING:  # torch is imported when a shard is written: `featcache ls` needs none
    import torch

    from featcache.store.encoding import EncodedLevel

_DIMS = ("sample", "view", "channel", "y", "x")


def _codecs(compression: str, dtype: str) -> list[Any]:
    """Inner-chunk codecs after `bytes` (FORMAT.md). crc32c after the compressor checksums every
    chunk (the sharding codec alone only checksums the shard index)."""
    if check_compression(compression) == "blosc":  # bitshuffle groups bits by element size: typesize
        return [BloscCodec(typesize=np.dtype(dtype).itemsize, cname="lz4", clevel=5, shuffle="bitshuffle"),
                Crc32cCodec()]
    return [ZstdCodec(level=3), Crc32cCodec()] if compression == "zstd" else [Crc32cCodec()]


def _ensure(group: zarr.Group, name: str, compression: str, **spec: Any) -> None:
    """Create an array unless it exists; identical specs make concurrent creation harmless."""
    if name in group:
        return
    try:
        # write_empty_chunks: an all-zero sample still gets its chunk, so a missing object
        # always means lost data (verify relies on it).
        group.create_array(name, compressors=_codecs(compression, spec["dtype"]),
                           config={"write_empty_chunks": True}, **spec)
    except ContainsArrayError:
        pass


def _ensure_arrays(group: zarr.Group, layout: EntryLayout, precision: Precision,
                   with_checksums: bool = True) -> None:
    n, v, s, c = layout.num_samples, layout.views, layout.shard_size, layout.compression
    for lv in layout.levels:
        full = (lv.channels, lv.height, lv.width)
        _ensure(group, f"levels/{lv.name}", c, shape=(n, v, *full), chunks=(1, 1, *full),
                shards=(s, v, *full), dtype=precision.dtype, fill_value=0, dimension_names=_DIMS)
        if precision.quantized:
            for part in ("scale", "offset"):
                _ensure(group, f"levels/{lv.name}__{part}", c, shape=(n, v, lv.channels),
                        chunks=(s, v, lv.channels), dtype="float32", fill_value=np.nan,
                        dimension_names=("sample", "view", "channel"))
        _ensure(group, f"report/{lv.name}", c, shape=(layout.num_shards, 4), chunks=(1, 4),
                dtype="float64", fill_value=np.nan, dimension_names=("shard", "stat"))
    _ensure(group, "frames", c, shape=(n, v, 4), chunks=(s, v, 4), dtype="float32", fill_value=np.nan,
            dimension_names=("sample", "view", "box"))
    p = max(1, len(layout.view_param_names))
    _ensure(group, "view_params", c, shape=(n, v, p), chunks=(s, v, p), dtype="float32",
            fill_value=np.nan, dimension_names=("sample", "view", "param"))
    if with_checksums:  # format 2: each sample's data tied to its position and id (integrity.py)
        columns = checksum_columns(layout, precision.quantized)
        _ensure(group, "checksums", c, shape=(n, v, len(columns)), chunks=(s, v, len(columns)),
                dtype="uint32", fill_value=0, dimension_names=("sample", "view", "column"),
                attributes={"columns": columns})
    _ensure(group, "committed", c, shape=(layout.num_shards,), chunks=(1,), dtype="uint8", fill_value=0,
            dimension_names=("shard",))
    if "claims" not in group:
        try:  # a real (empty) group, so plain zarr listings of the entry stay clean
            group.create_group("claims", attributes={"featcache": "shard leases; see FORMAT.md"})
        except ContainsGroupError:
            pass


@dataclass(frozen=True)
class ShardWritten:
    """What write_shard committed: feature bytes (stored dtype, before compression) and each
    level's float32 values (n, V, C, H, W) as a reader will decode them, decode(encode(x)), as a
    tensor on the features' device: what the statistics need, without a second encode."""

    nbytes: int
    values: dict[str, torch.Tensor]


class EntryWriter:
    def __init__(self, group: zarr.Group, layout: EntryLayout, backend: Backend | None = None,
                 owner: str | None = None, ttl_s: float = DEFAULT_TTL_S, compress_threads: int = 1) -> None:
        self.group = group
        self.compress_threads = compress_threads  # per level shard (shardwrite.py); writer threads run beside
        self.layout = layout
        self.key = group.basename
        self.precision = parse_precision(layout.precision)
        if backend is None:  # a writer built directly on a local zarr group
            backend = LocalBackend(str(group.store.root))
        self.backend = backend
        self.claims = Claims(backend, group.path, owner=owner, ttl_s=ttl_s)

    @classmethod
    def create(cls, root: zarr.Group, key: str, layout: EntryLayout, attrs: dict[str, Any],
               backend: Backend | None = None, **options: Any) -> EntryWriter:
        precision = parse_precision(layout.precision)
        _codecs(layout.compression, precision.dtype)  # refuse an unknown compression before writing
        meta = {**attrs, "layout": layout.to_dict(), "sample_ids": list(layout.sample_ids),
                "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "complete": False, "format_version": FORMAT_VERSION}
        try:
            # attributes go into the group's zarr.json in the same write that creates it
            group = root.create_group(key, attributes={"featcache": meta})
        except ContainsGroupError:  # another writer created it a moment ago
            return cls.reopen(root[key], layout, backend, **options)
        _ensure_arrays(group, layout, precision)
        return cls(group, layout, backend, **options)

    @classmethod
    def reopen(cls, group: zarr.Group, layout: EntryLayout, backend: Backend | None = None,
               **options: Any) -> EntryWriter:
        """Resume an entry. Compression is lossless and not part of the entry key, so an entry written
        with another compression (e.g. zstd, before blosc was the default) is resumed with its own:
        its arrays already carry their codecs."""
        meta = dict(group.attrs.get("featcache", {}))
        stored = meta.get("layout")
        if (not isinstance(stored, dict) or not layout.same_data(stored)
                or meta.get("sample_ids") != list(layout.sample_ids)):
            raise StoreError(f"entry {group.basename} exists with a different layout or sample ids; "
                             "remove it with `featcache rm` or extract into another store")
        layout = replace(layout, compression=EntryLayout.from_meta(meta).compression)
        # an entry begun before format 2 is finished as it began: without a checksum record
        with_checksums = int(meta.get("format_version", 1)) >= 2
        _ensure_arrays(group, layout, parse_precision(layout.precision), with_checksums)
        return cls(group, layout, backend, **options)

    # -- shards and claims -------------------------------------------------------------------
    def hold(self) -> None:
        """Lease the whole entry while this writer has it open (claims.py): `featcache rm` then
        refuses it, and an `rm --force` makes this writer fail by name instead of writing on."""
        self.claims.hold_entry()

    def let_go(self) -> None:
        self.claims.release_entry()

    def check_present(self) -> None:
        """A StoreError when the entry was removed under this (lease-holding) writer."""
        if self.claims.lease_lost():
            raise self._removed("its writer lease is gone")

    def _removed(self, what: str) -> StoreError:
        return StoreError(f"entry {self.key} was removed while this extract was writing it ({what}; "
                          "`featcache rm --force`?); nothing more was written: re-run the extract to "
                          "write it again")

    def committed(self) -> np.ndarray:
        self.check_present()
        with self._vanished():
            return np.asarray(self.group["committed"][:]).astype(bool)

    def missing_shards(self) -> list[int]:
        return [int(k) for k in np.flatnonzero(~self.committed())]

    def claim(self, shard: int) -> bool:
        """Lease `shard` for this writer (TTL seconds, renewable); False if committed or held."""
        self.layout.shard_range(shard)
        if self.committed()[shard]:
            return False
        return self.claims.claim(shard)

    def renew(self, shard: int) -> bool:
        return self.claims.renew(shard)

    def release(self, shard: int) -> None:
        self.claims.release(shard)

    def next_shard(self) -> int | None:
        """Claim and return the next shard not committed, not claimed by others and not already held
        by this writer; None when there is none."""
        for shard in self.missing_shards():
            if shard in self.claims.held:  # already handed out to this writer
                continue
            if self.claims.claim(shard):
                if self.committed()[shard]:  # committed between our listing and our claim
                    self.claims.release(shard)
                    continue
                return shard
        return None

    # -- writing -----------------------------------------------------------------------------
    def write_shard(self, shard: int, features: dict[str, Any], frames: np.ndarray,
                    view_params: np.ndarray, *, consume: bool = False) -> ShardWritten:
        """Write samples [start, stop) of every level, then mark the shard committed.

        features[level]: float32 (n, V, C, H, W), a numpy array or a torch tensor on any device
        (checked and encoded there, encoding.py; only the stored bytes come to the host);
        frames: (n, V, 4); view_params: (n, V, P). `consume`: the features' memory may be reused
        for the values handed back (the caller no longer needs them).
        Releases this writer's claim on the shard, if it holds one.
        """
        self.backend.check_writable(f"write entry {self.key}")
        self.check_present()
        start, stop = self.layout.shard_range(shard)
        ids = self.layout.sample_ids[start:stop]
        encoded = {lv.name: self._encode_level(shard, lv, features.get(lv.name), ids, consume)
                   for lv in self.layout.levels}  # everything checked before anything is written
        arrays: dict[str, np.ndarray] = {}
        for name, enc in encoded.items():
            arrays[f"levels/{name}"] = enc.stored
            if enc.scale is not None:
                arrays[f"levels/{name}__scale"], arrays[f"levels/{name}__offset"] = enc.scale, enc.offset
        arrays["frames"] = np.asarray(frames, np.float32)
        arrays["view_params"] = np.asarray(view_params, np.float32).reshape(
            stop - start, self.layout.views, -1)
        with disk_errors(self.backend.url), self._vanished():
            shards = {}
            for name, data in arrays.items():
                shards[name] = self._write(name, shard, start, stop, data)
            for name, enc in encoded.items():
                self._array(f"report/{name}")[shard] = enc.report
            if "checksums" in self.group:  # written last before the commit marker, like the data
                self._array("checksums")[start:stop] = self._checksum_record(shard, ids, arrays, shards)
            self.check_present()  # never a commit marker into an entry removed meanwhile
            self._array("committed")[shard] = 1  # after the data: this is the commit
        self.claims.release(shard)
        return ShardWritten(sum(enc.stored.nbytes for enc in encoded.values()),
                            {name: enc.values for name, enc in encoded.items()})

    def _write(self, name: str, shard: int, start: int, stop: int, data: np.ndarray) -> EncodedShard | None:
        """Write rows [start, stop) of array `name`. A level array's shard object is encoded and
        put whole by the direct writer (shardwrite.py: zarr's bytes, without zarr's per-chunk
        machinery); every other array, and a level array of another encoding, through zarr."""
        if name.startswith("levels/") and "__" not in name:
            array = self.group[name]
            enc = encode_shard(array, data, threads=self.compress_threads)
            if enc is not None:
                self.backend.put_parts(f"{array.path}/c/{shard}/0/0/0/0", enc.parts)
                return enc
        self._array(name)[start:stop] = data
        return None

    def _array(self, name: str) -> zarr.Array:
        """An array of the entry, opened to write every chunk. write_empty_chunks is a runtime
        setting that an array opened from the store does not keep: without it zarr drops a
        sample that equals the fill value (an int8 `global` level is all zeros: each value is its
        own offset), and the reader would then find lost data where there was none."""
        return self.group[name].with_config({"write_empty_chunks": True})

    @contextmanager
    def _vanished(self) -> Iterator[None]:
        """`featcache rm --force` of an entry being written: one line, not a KeyError."""
        try:
            yield
        except KeyError as exc:
            raise self._removed(f"{exc} is gone") from None

    def _checksum_record(self, shard: int, ids: tuple[str, ...], arrays: dict[str, np.ndarray],
                         shards: dict[str, EncodedShard | None]) -> np.ndarray:
        """(n, V, columns) crc32c of each sample's id, of its stored slice of every array, and of
        its encoded level chunks as written (those the direct writer put: its own crc32c of the
        bytes it handed to the atomic put; those zarr wrote: read back from the shard backend)."""
        columns = self.group["checksums"].attrs["columns"]
        record = np.zeros((len(ids), self.layout.views, len(columns)), np.uint32)
        for c, column in enumerate(columns):
            enc = shards.get(column.removeprefix(CHUNK))
            if column.startswith(CHUNK):
                record[..., c] = enc.chunk_crcs if enc is not None else self._written_chunk_crcs(
                    column.removeprefix(CHUNK), shard, len(ids))
                continue
            if enc is not None and enc.value_crcs is not None:  # uncompressed: the same bytes
                record[..., c] = enc.value_crcs
                continue
            for i, sample_id in enumerate(ids):
                for v in range(self.layout.views):
                    record[i, v, c] = id_crc(sample_id) if column == "sample_id" else crc_of(
                        arrays[column][i, v])
        return record

    def _written_chunk_crcs(self, array: str, shard: int, rows: int) -> np.ndarray:
        key = f"{self.group.path}/{array}/c/{shard}/0/0/0/0"
        data = self.backend.get(key)
        if data is None:
            raise StoreError(f"entry {self.key}: shard object {key} vanished right after it was written")
        slots = self.layout.shard_size * self.layout.views
        return chunk_crcs(data, rows, self.layout.views, slots)

    def _encode_level(self, shard: int, lv: Any, data: Any, ids: tuple[str, ...],
                      consume: bool) -> EncodedLevel:
        expected = (len(ids), self.layout.views, lv.channels, lv.height, lv.width)
        if data is None or tuple(data.shape) != expected:
            got = None if data is None else tuple(data.shape)
            raise StoreError(f"level {lv.name}: shard {shard} expected shape {expected}, got {got}")
        import torch

        from featcache.store.encoding import encode_level

        return encode_level(torch.as_tensor(data, dtype=torch.float32), self.precision, lv.name, ids,
                            consume=consume)

    # -- finishing ---------------------------------------------------------------------------
    def precision_report(self) -> dict[str, dict[str, Any]]:
        """Per level: bytes on disk, float32 bytes, ratio, max/mean relative error (FORMAT.md)."""
        out = {}
        n, v = self.layout.num_samples, self.layout.views
        for lv in self.layout.levels:
            on_disk = 0
            for suffix in ("", "__scale", "__offset"):
                sizes = self.backend.sizes(f"{self.group.path}/levels/{lv.name}{suffix}")
                on_disk += sum(size for key, size in sizes.items() if not key.endswith("zarr.json"))
            raw = n * v * lv.channels * lv.height * lv.width * 4
            rows = np.asarray(self.group[f"report/{lv.name}"][:])
            out[lv.name] = {"precision": self.precision.name, "bytes_on_disk": int(on_disk),
                            "float32_bytes": int(raw), "ratio": raw / on_disk if on_disk else 0.0,
                            **summarize(rows[~np.isnan(rows).any(axis=1)])}
        return out

    def finalize(self, stats: dict[str, dict[str, np.ndarray]], extra_attrs: dict[str, Any]) -> None:
        """Store per-level statistics and mark the entry complete (all shards must be committed)."""
        self.backend.check_writable(f"finalize entry {self.key}")
        missing = self.missing_shards()  # checks the lease too
        if missing:
            raise StoreError(f"entry {self.key}: cannot finalize, shards {missing[:5]} not committed")
        sums = {}
        with disk_errors(self.backend.url):
            for level, values in stats.items():
                for name, value in values.items():
                    arr = np.asarray(value, dtype=np.float64)
                    self._write_stat(f"stats/{level}/{name}", arr)
                    sums[f"{level}/{name}"] = crc_of(arr)
        meta = dict(self.group.attrs["featcache"])
        meta.update(extra_attrs)
        if int(meta.get("format_version", 1)) >= 2:  # read back against these (integrity.py)
            meta["stats_crc32c"] = sums
        meta["precision_report"] = self.precision_report()
        meta["complete"] = True
        meta["completed_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.check_present()
        with disk_errors(self.backend.url), self._vanished():
            self.group.attrs["featcache"] = meta

    def _write_stat(self, path: str, arr: np.ndarray) -> None:
        # Never overwrite=True: deleting the array would pull it from under a concurrent
        # finalizer. Both compute the same statistics from the same committed data. crc32c like
        # every other array; write_empty_chunks so that a missing chunk always means lost data.
        try:
            target = self.group.create_array(path, shape=arr.shape, dtype="float64",
                                             compressors=_codecs(self.layout.compression, "float64"),
                                             config={"write_empty_chunks": True})
        except ContainsArrayError:
            target = self.group[path]
            if target.shape != arr.shape:
                raise StoreError(f"entry {self.key}: stored statistics {path} have shape "
                                 f"{target.shape}, expected {arr.shape}; re-extract it") from None
        target[...] = arr


@contextmanager
def disk_errors(url: str) -> Iterator[None]:
    """A full disk is one line, not a traceback: what was written stays consistent (a shard
    counts only once committed), so freeing space and re-running resumes."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StoreError(f"store {url} is out of disk space; free space and re-run the same "
                             "extract to resume") from None
        raise
