"""Tiny deterministic entries for the store tests (no featcache internals beyond the public API)."""

from __future__ import annotations

import numpy as np

from featcache.store import EntryLayout, EntryWriter, FeatureStore, LevelLayout

KEY = "blobs.tiny.0123456789abcdef"
ATTRS = {"teacher": {"name": "tiny", "arch": "tinyconv", "fingerprint": "f" * 64},
         "dataset": {"name": "blobs", "fingerprint": "d" * 64}}


def make_layout(precision: str = "fp16", n: int = 6, shard: int = 2,
                compression: str = "blosc") -> EntryLayout:
    return EntryLayout(sample_ids=tuple(f"case{i:02d}" for i in range(n)), views=2,
                       levels=(LevelLayout("fine", 4, 4, 4), LevelLayout("coarse", 3, 2, 2)),
                       shard_size=shard, precision=precision, view_param_names=("flip", "scale"),
                       compression=compression)


def shard_data(layout: EntryLayout, shard: int):
    """Deterministic per shard, so any writer produces identical bytes for it."""
    start, stop = layout.shard_range(shard)
    rng = np.random.default_rng(1000 + shard)
    n, v = stop - start, layout.views
    feats = {lv.name: (rng.standard_normal((n, v, lv.channels, lv.height, lv.width)) * 3 + 1)
             .astype(np.float32) for lv in layout.levels}
    frames = np.tile(np.array([0, 0, 1, 0.75], np.float32), (n, v, 1))
    params = rng.integers(0, 2, (n, v, 2)).astype(np.float32)
    return feats, frames, params


def expected(layout: EntryLayout, index: int, level: str) -> np.ndarray:
    shard = index // layout.shard_size
    feats, _, _ = shard_data(layout, shard)
    return feats[level][index - shard * layout.shard_size]


def write_all(writer: EntryWriter, use_claims: bool = False) -> None:
    if use_claims:
        while (k := writer.next_shard()) is not None:
            writer.write_shard(k, *shard_data(writer.layout, k))
    else:
        for k in writer.missing_shards():
            writer.write_shard(k, *shard_data(writer.layout, k))


def stats_for(layout: EntryLayout) -> dict:
    return {lv.name: {"mean": np.zeros(lv.channels), "std": np.ones(lv.channels)} for lv in layout.levels}


def fill(store: FeatureStore, key: str = KEY, precision: str = "fp16", **kw) -> None:
    layout = make_layout(precision, **kw)
    writer = store.create_entry(key, layout, ATTRS)
    write_all(writer)
    writer.finalize(stats_for(layout), {"extract_seconds": 1.0})


def snapshot(store: FeatureStore, key: str) -> dict:
    """Everything a user can read from an entry, for identity comparisons."""
    reader = store.open(key)
    out = {"ids": reader.ids, "layout": reader.layout}
    for i in range(len(reader.ids)):
        for level in reader.levels:
            out[(i, level)] = reader.read(i, level)
        out[(i, "frames")] = reader.frames(i)
        out[(i, "params")] = reader.view_params(i)
    for level in reader.levels:
        out[("stats", level)] = reader.stats(level)["mean"]
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))
        else:
            assert a[k] == b[k], k
