import numpy as np
import pytest

from featcache.errors import IncompleteEntryError, StoreError
from featcache.store import EntryLayout, FeatureStore, LevelLayout, entry_key


def _layout(n=5, shard=2):
    return EntryLayout(sample_ids=tuple(f"s{i}" for i in range(n)), views=1,
                       levels=(LevelLayout("emb", 4, 3, 3),), shard_size=shard,
                       view_param_names=("flip",))


def _shard(layout, k, rng):
    start, stop = layout.shard_range(k)
    n = stop - start
    return (rng.standard_normal((n, 1, 4, 3, 3)).astype(np.float32),
            np.tile(np.array([0, 0, 1, 1], np.float32), (n, 1, 1)), np.zeros((n, 1, 1), np.float32))


def test_roundtrip_and_commit(tmp_path):
    store = FeatureStore(tmp_path / "store")
    layout = _layout()
    key = entry_key("demo", "a" * 64, "tiny", "b" * 64)
    writer = store.create_entry(key, layout, {"teacher": {"name": "tiny"}})
    rng = np.random.default_rng(0)
    written = {}
    for k in writer.missing_shards():
        feats, frames, vp = _shard(layout, k, rng)
        writer.write_shard(k, {"emb": feats}, frames, vp)
        written[k] = feats
        if k == 0:
            with pytest.raises(IncompleteEntryError):
                store.open(key)
    writer.finalize({"emb": {"mean": np.zeros(4)}}, {})
    reader = FeatureStore(tmp_path / "store", read_only=True).open(key)
    assert reader.complete and reader.ids == layout.sample_ids
    got = reader.read(3, "emb")
    np.testing.assert_allclose(got, written[1][1].astype(np.float16), rtol=0, atol=0)
    assert reader.dask("emb").shape == (5, 1, 4, 3, 3)


def test_rejects_nan_and_bad_key(tmp_path):
    store = FeatureStore(tmp_path / "store")
    layout = _layout()
    writer = store.create_entry("demo.tiny.0123", layout, {})
    feats, frames, vp = _shard(layout, 0, np.random.default_rng(0))
    feats[1, 0, 0, 0, 0] = np.nan
    with pytest.raises(StoreError, match="sample s1"):
        writer.write_shard(0, {"emb": feats}, frames, vp)
    with pytest.raises(StoreError, match="invalid entry key"):
        store.open("../escape")


def test_an_all_zero_sample_and_shard_are_written_and_verify(tmp_path):
    """Data equal to the fill value is still data: zarr drops such chunks unless told otherwise on
    every write (an int8 `global` level is all zeros), and a dropped chunk reads as lost."""
    from featcache.store import verify_entry

    store = FeatureStore(tmp_path / "store")
    layout = _layout(n=4, shard=2)
    key = entry_key("demo", "a" * 64, "tiny", "b" * 64)
    writer = store.create_entry(key, layout, {"teacher": {"name": "tiny"}})
    feats, frames, vp = _shard(layout, 0, np.random.default_rng(0))
    feats[1] = 0.0  # one all-zero sample beside a non-zero one
    writer.write_shard(0, {"emb": feats}, frames, vp)
    writer.write_shard(1, {"emb": np.zeros_like(feats)}, frames, vp)  # a whole all-zero shard
    writer.finalize({"emb": {"mean": np.zeros(4), "std": np.ones(4)}}, {})
    reader = store.open(key)
    np.testing.assert_array_equal(reader.read(1, "emb"), 0.0)
    np.testing.assert_array_equal(reader.read(3, "emb"), 0.0)
    assert verify_entry(reader, store.backend).ok
