"""The direct local read path fails where zarr fails (test_compression.py: it returns the same numbers)."""

from __future__ import annotations

import pytest

from featcache.errors import CorruptEntryError
from featcache.store import EntryReader, FeatureStore
from tests.store.storehelpers import KEY, fill


@pytest.mark.parametrize("compression", ["blosc", "zstd", "none"])
@pytest.mark.parametrize("where", [-10, 20])  # in the shard index / in the first chunk's data
def test_damage_fails_on_both_paths(tmp_path, compression, where):
    store = FeatureStore(tmp_path / "store")
    fill(store, compression=compression)
    shard = tmp_path / "store" / KEY / "levels" / "fine" / "c" / "1" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[where] ^= 0x01
    shard.write_bytes(bytes(data))
    for reader in (store.open(KEY), EntryReader(store.root[KEY], KEY, fast_path=False)):
        with pytest.raises(CorruptEntryError, match="sample case02 level fine"):
            reader.read(2, "fine")
        assert reader.read(1, "fine").shape == (2, 4, 4, 4)  # other shards unaffected


def test_fast_path_returns_writable_arrays(tmp_path):
    store = FeatureStore(tmp_path / "store")
    fill(store, precision="fp32", compression="none")
    out = store.open(KEY).read(0, "fine", view=1)
    out += 1  # torch.from_numpy and in-place normalisation need writable arrays
