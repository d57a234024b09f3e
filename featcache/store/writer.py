"""Writing one entry shard by shard. A shard counts only once its commit marker is written, and
the marker is written after the shard's data, so a killed writer never exposes partial data."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from featcache.errors import StoreError
from featcache.store.layout import EntryLayout

PRECISIONS = {"fp32": "float32", "fp16": "float16"}
FP16_MAX = float(np.finfo(np.float16).max)


def _codecs() -> list[Any]:
    # crc32c after the compressor checksums every inner chunk (the sharding codec alone only
    # checksums the shard index).
    return [ZstdCodec(level=3), Crc32cCodec()]


class EntryWriter:
    def __init__(self, group: zarr.Group, layout: EntryLayout) -> None:
        self.group = group
        self.layout = layout
        self.key = group.basename

    @classmethod
    def create(cls, root: zarr.Group, key: str, layout: EntryLayout,
               attrs: dict[str, Any]) -> EntryWriter:
        if layout.precision not in PRECISIONS:
            raise StoreError(f"unknown precision {layout.precision!r}; use one of "
                             f"{', '.join(PRECISIONS)}")
        n, v, s = layout.num_samples, layout.views, layout.shard_size
        group = root.create_group(key)
        for lv in layout.levels:
            group.create_array(
                f"levels/{lv.name}", shape=(n, v, lv.channels, lv.height, lv.width),
                chunks=(1, 1, lv.channels, lv.height, lv.width),
                shards=(s, v, lv.channels, lv.height, lv.width),
                dtype=PRECISIONS[layout.precision], compressors=_codecs(), fill_value=0,
                dimension_names=("sample", "view", "channel", "y", "x"))
        group.create_array("frames", shape=(n, v, 4), chunks=(s, v, 4), dtype="float32",
                           compressors=_codecs(), fill_value=np.nan,
                           dimension_names=("sample", "view", "box"))
        p = max(1, len(layout.view_param_names))
        group.create_array("view_params", shape=(n, v, p), chunks=(s, v, p), dtype="float32",
                           compressors=_codecs(), fill_value=np.nan,
                           dimension_names=("sample", "view", "param"))
        group.create_array("committed", shape=(layout.num_shards,), chunks=(1,), dtype="uint8",
                           fill_value=0, dimension_names=("shard",))
        group.attrs["featcache"] = {
            **attrs,
            "layout": layout.to_dict(),
            "sample_ids": list(layout.sample_ids),
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "complete": False,
        }
        return cls(group, layout)

    @classmethod
    def reopen(cls, group: zarr.Group, layout: EntryLayout) -> EntryWriter:
        meta = dict(group.attrs.get("featcache", {}))
        if meta.get("layout") != layout.to_dict() or meta.get("sample_ids") != list(layout.sample_ids):
            raise StoreError(f"entry {group.basename} exists with a different layout or sample ids; "
                             "remove it with `featcache rm` or extract into another store")
        return cls(group, layout)

    def missing_shards(self) -> list[int]:
        committed = np.asarray(self.group["committed"][:])
        return [int(k) for k in np.flatnonzero(committed == 0)]

    def write_shard(self, shard: int, features: dict[str, np.ndarray], frames: np.ndarray,
                    view_params: np.ndarray) -> int:
        """Write samples [start, stop) of every level, then mark the shard committed.

        features[level]: float32 (n, V, C, H, W); frames: (n, V, 4); view_params: (n, V, P).
        Returns the number of bytes of feature data written (before compression).
        """
        start, stop = self.layout.shard_range(shard)
        ids = self.layout.sample_ids[start:stop]
        written = 0
        for lv in self.layout.levels:
            data = features.get(lv.name)
            expected = (stop - start, self.layout.views, lv.channels, lv.height, lv.width)
            if data is None or tuple(data.shape) != expected:
                got = None if data is None else tuple(data.shape)
                raise StoreError(f"level {lv.name}: shard {shard} expected shape {expected}, got {got}")
            self._check_finite(data, lv.name, ids)
            array = self.group[f"levels/{lv.name}"]
            array[start:stop] = data.astype(array.dtype, copy=False)
            written += data.size * array.dtype.itemsize
        self.group["frames"][start:stop] = frames
        self.group["view_params"][start:stop] = view_params.reshape(stop - start, self.layout.views, -1)
        self.group["committed"][shard] = 1  # after the data: this is the commit
        return written

    def _check_finite(self, data: np.ndarray, level: str, ids: tuple[str, ...]) -> None:
        limit = FP16_MAX if self.layout.precision == "fp16" else np.inf
        bad = ~np.isfinite(data) | (np.abs(data) > limit)
        if bad.any():
            sample = ids[int(np.argwhere(bad)[0][0])]
            what = "inf/NaN" if not np.isfinite(data).all() else f"values beyond float16 range ({limit:g})"
            hint = "" if what == "inf/NaN" else "; use --precision fp32"
            raise StoreError(f"sample {sample}, level {level}: teacher produced {what}{hint}")

    def finalize(self, stats: dict[str, dict[str, np.ndarray]], extra_attrs: dict[str, Any]) -> None:
        """Store per-level statistics and mark the entry complete (all shards must be committed)."""
        missing = self.missing_shards()
        if missing:
            raise StoreError(f"entry {self.key}: cannot finalize, shards {missing[:5]} not committed")
        for level, values in stats.items():
            for name, value in values.items():
                arr = np.asarray(value, dtype=np.float64)
                self.group.create_array(f"stats/{level}/{name}", shape=arr.shape, dtype="float64",
                                        overwrite=True)[...] = arr
        meta = dict(self.group.attrs["featcache"])
        meta.update(extra_attrs)
        meta["complete"] = True
        meta["completed_utc"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.group.attrs["featcache"] = meta
