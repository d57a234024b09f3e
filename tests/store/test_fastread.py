"""The direct local read path returns exactly what zarr returns and fails where zarr fails."""

from __future__ import annotations

import numpy as np
import pytest
from storehelpers import KEY, fill

from featcache.errors import CorruptEntryError
from featcache.store import EntryReader, FeatureStore


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_fast_path_matches_zarr(tmp_path, precision):
    store = FeatureStore(tmp_path / "store")
    fill(store, precision=precision, n=5)  # a partial last shard
    fast = store.open(KEY)
    slow = EntryReader(store.root[KEY], KEY, fast_path=False)
    assert fast._fast_path("fine") is not None and slow._fast_path("fine") is None
    for i in range(5):
        for level in ("fine", "coarse"):
            np.testing.assert_array_equal(fast.read(i, level), slow.read(i, level))
            np.testing.assert_array_equal(fast.read(i, level, view=1), slow.read(i, level, view=1))


def test_damaged_shard_index_fails_on_both_paths(tmp_path):
    store = FeatureStore(tmp_path / "store")
    fill(store)
    shard = tmp_path / "store" / KEY / "levels" / "fine" / "c" / "1" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0x01  # inside the shard index, before its crc32c
    shard.write_bytes(bytes(data))
    for reader in (store.open(KEY), EntryReader(store.root[KEY], KEY, fast_path=False)):
        with pytest.raises(CorruptEntryError, match="sample case03 level fine"):
            reader.read(3, "fine")
        assert reader.read(1, "fine").shape == (2, 4, 4, 4)  # other shards unaffected
