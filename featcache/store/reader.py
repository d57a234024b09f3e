"""Reading a committed entry: per-sample features, statistics, and dask arrays."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import zarr

from featcache.errors import CorruptEntryError, IncompleteEntryError, StoreError
from featcache.store.backends import Backend, ZarrSamples, backend_of
from featcache.store.fastread import LevelFastPath
from featcache.store.integrity import CHUNK, crc_of, id_crc
from featcache.store.layout import EntryLayout, LevelLayout
from featcache.store.precision import decode, parse_precision

# what repairs a damaged shard, statistic or array node (extract/runner.py, store/repair.py)
REPAIR = ("repair it: the same `featcache extract` with --repair re-extracts what fails "
          "(`featcache verify` lists every bad sample)")

_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:  # one small shared pool: reads release the GIL in blosc, zstd and file I/O
        _POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="featcache-read")
    return _POOL


class EntryReader:
    """Level samples are read the way the store's backend reads them (Backend.sample_reader:
    straight from the shard file on local folders); fast_path=False reads them through zarr.
    Without a backend (a reader reopened from its zarr group in a loader worker) the one under
    the group's zarr store is used."""

    def __init__(self, group: zarr.Group, key: str, backend: Backend | None = None,
                 fast_path: bool = True) -> None:
        self.group = group
        self.key = key
        self.backend = backend if backend is not None else backend_of(group.store)
        self._samples: dict[str, LevelFastPath | ZarrSamples] = {}
        self._backend_reads = fast_path
        meta = group.attrs.get("featcache")
        if not isinstance(meta, dict) or "layout" not in meta or "sample_ids" not in meta:
            raise CorruptEntryError(f"entry {key} has no featcache metadata; it was not written "
                                    "by featcache or its zarr.json is damaged")
        self.meta: dict[str, Any] = meta
        try:
            self.layout = EntryLayout.from_meta(meta)
            self.precision = parse_precision(self.layout.precision)
            self.version = int(meta.get("format_version", 1))
        except (KeyError, TypeError, ValueError, StoreError) as exc:
            raise CorruptEntryError(f"entry {key}: its featcache metadata is damaged ({type(exc).__name__}: "
                                    f"{exc}); `featcache rm {key}` removes it") from None
        self._arrays: dict[str, Any] = {}
        self._side: dict[tuple[str, int], np.ndarray] = {}  # (array, shard) -> rows of _per_sample
        self._checked: set[tuple[str, int]] = set()  # (array, sample) rows matched with the record
        self._committed = self._read_committed()
        self._index = {sid: i for i, sid in enumerate(self.layout.sample_ids)}
        self._columns: dict[str, int] | None = None  # checksum record columns (format 2)
        # shard -> positions whose recorded id differs from sample_ids (checked once per shard)
        self._id_mismatch: dict[int, list[int]] = {}

    def _read_committed(self) -> np.ndarray:
        # The group and its attributes are written first, the arrays after: another writer may be
        # creating them right now. Such an entry has nothing committed yet; a complete one must
        # have its markers.
        if "committed" not in self.group:
            if self.meta.get("complete"):
                raise CorruptEntryError(f"entry {self.key}: array committed is missing from a complete "
                                        f"entry; `featcache rm {self.key}`, then the same extract")
            return np.zeros(self.layout.num_shards, dtype=bool)
        try:
            committed = np.asarray(self._array("committed")[:])
        except CorruptEntryError:
            raise
        except Exception as exc:  # a checksum error of zarr's codec, an undecodable chunk
            raise CorruptEntryError(f"entry {self.key}: its commit markers (array committed) are damaged "
                                    f"({type(exc).__name__}: {exc}); `featcache rm {self.key}`, then "
                                    "the same `featcache extract`") from None
        if committed.shape != (self.layout.num_shards,):
            raise CorruptEntryError(f"entry {self.key}: array committed has shape {committed.shape}, "
                                    f"expected ({self.layout.num_shards},); `featcache rm {self.key}`, "
                                    "then the same extract")
        return committed.astype(bool)

    @property
    def committed(self) -> np.ndarray:
        """Commit markers per shard (bool, as read when the reader opened)."""
        return self._committed

    def array(self, name: str) -> Any:
        """The entry's zarr array `name` (e.g. "levels/fine", "report/fine"), opened once; a
        missing or damaged node is one CorruptEntryError naming it."""
        return self._array(name)

    def _array(self, name: str) -> Any:
        if name not in self._arrays:  # opening reads zarr.json: do it once per array
            try:
                self._arrays[name] = self.group[name]
            except Exception as exc:  # KeyError (deleted zarr.json), JSON or metadata errors
                why = "is missing" if isinstance(exc, KeyError) else f"has damaged metadata ({exc})"
                raise CorruptEntryError(f"entry {self.key}: array {name} {why}; {REPAIR}") from None
        return self._arrays[name]

    def _sample_reader(self, level: str) -> LevelFastPath | ZarrSamples:
        if level not in self._samples:
            array = self._array(f"levels/{level}")
            backend = self.backend if self._backend_reads else None
            self._samples[level] = (ZarrSamples(array) if backend is None else
                                    backend.sample_reader(f"{self.group.path}/levels/{level}", array))
        return self._samples[level]

    def _level(self, level: str, index: int, view: int | None) -> np.ndarray:
        """Stored (undecoded) level data of one sample, checked against the checksum record."""
        name = f"levels/{level}"
        reader = self._sample_reader(level)
        try:
            data, crcs = reader.read_checked(index, view)
        except Exception as exc:  # checksum mismatch, truncated or unreadable shard, codec errors
            raise CorruptEntryError(f"entry {self.key}: sample {self.ids[index]} level {level} is "
                                    f"corrupt ({type(exc).__name__}: {exc}); {REPAIR}") from exc
        # chunk crc32c already checked by the sample reader: comparing them with the record is free
        record = self._record(index) if crcs is not None else None
        column = self._columns.get(CHUNK + name) if record is not None else None
        if column is None:  # read through zarr, format 1, or no chunk column: compare the values
            self._match_record(index, name, data, view)
            return data
        for v, crc in zip(range(self.layout.views) if view is None else [view], crcs, strict=True):
            self._compare(index, name, crc, int(record[v, column]))
        return data

    @property
    def ids(self) -> tuple[str, ...]:
        return self.layout.sample_ids

    @property
    def levels(self) -> dict[str, LevelLayout]:
        return {lv.name: lv for lv in self.layout.levels}

    @property
    def committed_fraction(self) -> float:
        return float(self._committed.mean()) if len(self._committed) else 1.0

    @property
    def complete(self) -> bool:
        return bool(self.meta.get("complete")) and bool(self._committed.all())

    def index_of(self, sample_id: str) -> int:
        try:
            return self._index[sample_id]
        except KeyError:
            raise StoreError(f"entry {self.key} has no sample {sample_id!r}") from None

    def _check(self, index: int) -> None:
        if not 0 <= index < self.layout.num_samples:
            raise StoreError(f"entry {self.key}: sample index {index} out of range "
                             f"0..{self.layout.num_samples - 1}")
        if not self._committed[index // self.layout.shard_size]:
            raise IncompleteEntryError(f"entry {self.key}: sample {self.ids[index]} is in an "
                                       "uncommitted shard; re-run extraction to finish it")

    def _get(self, name: str, selection: Any, index: int, what: str) -> np.ndarray:
        try:
            return np.asarray(self._array(name)[selection])
        except Exception as exc:  # zarr raises codec-specific errors on a checksum mismatch
            raise CorruptEntryError(f"entry {self.key}: sample {self.ids[index]} {what} is corrupt "
                                    f"({type(exc).__name__}: {exc}); {REPAIR}") from exc

    def read(self, index: int, level: str, view: int | None = None) -> np.ndarray:
        """float32 features of one sample: (V, C, H, W), or (C, H, W) for one view."""
        return self._read(index, level, view, None)

    def _read(self, index: int, level: str, view: int | None, out: np.ndarray | None) -> np.ndarray:
        """read(), decoding into `out` (a C-contiguous float32 slot of the right shape) if given."""
        self._check(index)
        if level not in self.levels:
            raise StoreError(f"entry {self.key} has no level {level!r}; it has "
                             f"{', '.join(self.levels)}")
        if view is not None and not 0 <= view < self.layout.views:
            raise StoreError(f"entry {self.key}: view {view} out of range 0..{self.layout.views - 1}")
        data = self._level(level, index, view)
        if not self.precision.quantized:
            return decode(data, None, None, out)
        scale = self._per_sample(f"levels/{level}__scale", index, f"level {level} scale")
        offset = self._per_sample(f"levels/{level}__offset", index, f"level {level} offset")
        if view is not None:
            scale, offset = scale[view], offset[view]
        return decode(data, scale, offset, out)

    def _per_sample(self, name: str, index: int, what: str) -> np.ndarray:
        """One sample's row (V, ...) of a small per-sample array (frames, view parameters, int8
        scale/offset). One zarr read per shard, then cached: a zarr read per sample cost more
        than decoding the sample's features, and committed shards never change."""
        shard, local = divmod(index, self.layout.shard_size)
        block = self._side.get((name, shard))
        if block is None:
            start, stop = self.layout.shard_range(shard)
            block = self._get(name, slice(start, stop), index, what)
            self._side[(name, shard)] = block
        if name != "checksums" and (name, index) not in self._checked:
            # each row checked once, when first asked for: an error names that sample and only
            # a bad row fails (a row that failed is checked again on the next read)
            self._match_record(index, name, block[local], None)
            self._checked.add((name, index))
        return block[local]

    # -- integrity (integrity.py): what was read is what was committed at this position ------
    def _record(self, index: int) -> np.ndarray | None:
        """The checksum record (V, columns) of a sample, None for entries of format 1."""
        if self.version < 2:
            return None
        if self._columns is None:
            columns = self._array("checksums").attrs.get("columns") or []
            if "sample_id" not in columns:
                raise CorruptEntryError(f"entry {self.key}: array checksums has no column list (damaged "
                                        f"zarr.json); {REPAIR}")
            self._columns = {c: k for k, c in enumerate(columns)}
        shard, local = divmod(index, self.layout.shard_size)
        record = self._per_sample("checksums", index, "checksum record")
        if shard not in self._id_mismatch:  # ties the shard's rows to today's sample ids, once
            start, stop = self.layout.shard_range(shard)
            block = self._side[("checksums", shard)]
            column = self._columns["sample_id"]
            self._id_mismatch[shard] = [start + row for row in range(stop - start)
                                        if id_crc(self.ids[start + row]) != int(block[row, 0, column])]
        if index in self._id_mismatch[shard]:  # an edited sample_ids: this position holds another id
            self._compare(index, "sample id", 0, 1)
        return record

    def _match_record(self, index: int, name: str, data: np.ndarray, view: int | None) -> None:
        """Compare a sample's stored data with its record: `data` is view `view`'s slice, or
        every view stacked when view is None."""
        if self.version < 2:
            if name == "frames" and not np.isfinite(data).all():
                raise CorruptEntryError(f"entry {self.key}: sample {self.ids[index]} frames are missing "
                                        f"(NaN) in a committed shard; {REPAIR}")
            return
        record = self._record(index)
        column = self._columns.get(name) if self._columns else None
        if record is None or column is None:
            return
        pairs = [(view, data)] if view is not None else enumerate(data)
        for v, values in pairs:
            self._compare(index, name, crc_of(values), int(record[v, column]))

    def _compare(self, index: int, what: str, got: int, recorded: int) -> None:
        if got != recorded:
            raise CorruptEntryError(
                f"entry {self.key}: sample {self.ids[index]} (index {index}) {what} does not match the "
                f"checksum recorded at commit (missing, moved or edited data); {REPAIR}")

    def read_many(self, indices: Sequence[int], level: str, view: int | None = None) -> np.ndarray:
        """float32 (len(indices), V, C, H, W) (or without V for one view), read in parallel."""
        indices = [int(i) for i in indices]
        for i in indices:
            self._check(i)
        if not indices:
            lv = self.levels[level]
            tail = (lv.channels, lv.height, lv.width)
            return np.zeros((0, *tail) if view is not None else (0, self.layout.views, *tail), np.float32)
        first = self.read(indices[0], level, view)
        out = np.empty((len(indices), *first.shape), dtype=np.float32)
        out[0] = first

        def fill(k: int) -> None:  # each thread decodes into its own slot: no copy, no stacking
            self._read(indices[k], level, view, out[k])

        list(_pool().map(fill, range(1, len(indices))))
        return out

    def frames(self, index: int) -> np.ndarray:
        """(V, 4) box of the image on the teacher grid per view: y0, x0, y1, x1 as fractions."""
        self._check(index)
        return np.asarray(self._per_sample("frames", index, "frames"), dtype=np.float32)

    def view_params(self, index: int) -> np.ndarray:
        """(V, P) parameters of each view (names in layout.view_param_names)."""
        self._check(index)
        return np.asarray(self._per_sample("view_params", index, "view_params"), dtype=np.float32)

    def stats(self, level: str) -> dict[str, np.ndarray]:
        """Per-level statistics (mean, std, ...), checked against the crc32c recorded at finalize."""
        try:
            present = f"stats/{level}" in self.group
            names = sorted(name for name, _ in self.group[f"stats/{level}"].arrays()) if present else []
        except Exception as exc:  # a damaged zarr.json inside stats/
            raise CorruptEntryError(f"entry {self.key}: statistics of level {level} are damaged "
                                    f"({type(exc).__name__}: {exc}); {REPAIR}") from None
        recorded = self.meta.get("stats_crc32c") or {}
        expected = sorted({k.split("/", 1)[1] for k in recorded if k.split("/", 1)[0] == level})
        if not present:
            raise CorruptEntryError(f"entry {self.key} has no statistics for level {level}; {REPAIR}")
        missing = sorted(set(expected) - set(names))
        if missing:
            raise CorruptEntryError(f"entry {self.key}: statistics {', '.join(missing)} for level {level} "
                                    f"are missing; {REPAIR}")
        unrecorded = sorted(set(names) - set(expected))
        if recorded and unrecorded:  # the statistics are there; their checksum record is not
            raise CorruptEntryError(f"entry {self.key}: statistic(s) {', '.join(unrecorded)} of level "
                                    f"{level} have no checksum in the entry's stats_crc32c (its metadata "
                                    f"was edited), so they cannot be checked; {REPAIR}")
        out = {}
        for name in names:
            what = f"statistic stats/{level}/{name}"
            try:
                value = np.asarray(self._array(f"stats/{level}/{name}")[...])
            except CorruptEntryError:
                raise
            except Exception as exc:  # checksum mismatch in zarr's crc32c codec
                raise CorruptEntryError(f"entry {self.key}: {what} is corrupt ({type(exc).__name__}: "
                                        f"{exc}); {REPAIR}") from None
            key = f"{level}/{name}"
            if (key in recorded and crc_of(value) != recorded[key]) or not np.isfinite(value).all():
                raise CorruptEntryError(f"entry {self.key}: {what} does not match the checksum recorded "
                                        f"at finalize (missing or edited) or is not finite; {REPAIR}")
            out[name] = value
        return out

    def dask(self, level: str):  # -> dask.array.Array, float32 (N, V, C, H, W) for int8 entries
        import dask.array as da

        data = da.from_zarr(self._array(f"levels/{level}"))
        if not self.precision.quantized:
            return data
        scale = da.from_zarr(self._array(f"levels/{level}__scale"))[..., None, None]
        offset = da.from_zarr(self._array(f"levels/{level}__offset"))[..., None, None]
        return (data.astype(np.float32) * scale + offset).astype(np.float32)
