"""Reading a committed entry: per-sample features, statistics, and dask arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from featcache.errors import CorruptEntryError, IncompleteEntryError, StoreError
from featcache.store.layout import EntryLayout, LevelLayout


class EntryReader:
    def __init__(self, group: zarr.Group, key: str) -> None:
        self.group = group
        self.key = key
        meta = group.attrs.get("featcache")
        if not isinstance(meta, dict) or "layout" not in meta:
            raise CorruptEntryError(f"entry {key} has no featcache metadata; it was not written "
                                    "by featcache or its zarr.json is damaged")
        self.meta: dict[str, Any] = meta
        lay = meta["layout"]
        self.layout = EntryLayout(
            sample_ids=tuple(meta["sample_ids"]), views=lay["views"],
            levels=tuple(LevelLayout(**lv) for lv in lay["levels"]), shard_size=lay["shard_size"],
            precision=lay["precision"], view_param_names=tuple(lay["view_param_names"]))
        self._committed = np.asarray(group["committed"][:]).astype(bool)
        self._index = {sid: i for i, sid in enumerate(self.layout.sample_ids)}

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
        if not self._committed[index // self.layout.shard_size]:
            raise IncompleteEntryError(f"entry {self.key}: sample {self.ids[index]} is in an "
                                       "uncommitted shard; re-run extraction to finish it")

    def read(self, index: int, level: str, view: int | None = None) -> np.ndarray:
        """float32 features of one sample: (V, C, H, W), or (C, H, W) for one view."""
        self._check(index)
        if level not in self.levels:
            raise StoreError(f"entry {self.key} has no level {level!r}; it has "
                             f"{', '.join(self.levels)}")
        array = self.group[f"levels/{level}"]
        try:
            data = array[index] if view is None else array[index, view]
        except Exception as exc:  # zarr raises codec-specific errors on a checksum mismatch
            raise CorruptEntryError(f"entry {self.key}: sample {self.ids[index]} level {level} "
                                    f"is corrupt ({type(exc).__name__}: {exc}); re-extract it") from exc
        return np.asarray(data, dtype=np.float32)

    def frames(self, index: int) -> np.ndarray:
        """(V, 4) box of the image on the teacher grid per view: y0, x0, y1, x1 as fractions."""
        self._check(index)
        return np.asarray(self.group["frames"][index], dtype=np.float32)

    def view_params(self, index: int) -> np.ndarray:
        self._check(index)
        return np.asarray(self.group["view_params"][index], dtype=np.float32)

    def stats(self, level: str) -> dict[str, np.ndarray]:
        if f"stats/{level}" not in self.group:
            raise StoreError(f"entry {self.key} has no statistics for level {level}")
        stats_group = self.group[f"stats/{level}"]
        return {name: np.asarray(arr[...]) for name, arr in stats_group.arrays()}

    def dask(self, level: str):  # -> dask.array.Array
        import dask.array as da

        return da.from_zarr(self.group[f"levels/{level}"])
