"""A full disk during extract: one line naming the store and what to do; what was committed
stays valid and a re-run after freeing space resumes."""

import errno

import pytest
import zarr.storage

from featcache.errors import StoreError
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore, verify_entry
from featcache.store.backends import LocalBackend
from tests.conftest import BlobDataset


def test_enospc_is_one_line_and_the_rerun_resumes(tmp_path, tiny_teacher, monkeypatch):
    real_set, real_put_parts = zarr.storage.LocalStore.set, LocalBackend.put_parts
    writes = {"n": 0}

    def full_disk(key):
        writes["n"] += 1
        if writes["n"] > 40:  # the disk fills up mid-extraction
            raise OSError(errno.ENOSPC, "No space left on device", key)

    async def filling_up(self, key, value, *args, **kwargs):
        full_disk(key)
        return await real_set(self, key, value, *args, **kwargs)

    def filling_up_parts(self, key, parts):  # level shards are put directly (shardwrite.py)
        full_disk(key)
        return real_put_parts(self, key, parts)

    store = FeatureStore(tmp_path / "store")
    monkeypatch.setattr(zarr.storage.LocalStore, "set", filling_up)
    monkeypatch.setattr(LocalBackend, "put_parts", filling_up_parts)
    with pytest.raises(StoreError) as info:
        extract(BlobDataset(), tiny_teacher, store, ExtractSettings(shard_size=2, batch_size=2))
    message = str(info.value)
    assert "\n" not in message and str(store.url) in message, message
    assert "out of disk space; free space and re-run the same extract to resume" in message
    (key,) = store.keys()
    assert 0 < store.open(key, allow_incomplete=True).committed_fraction < 1  # failed mid-way
    monkeypatch.setattr(zarr.storage.LocalStore, "set", real_set)
    monkeypatch.setattr(LocalBackend, "put_parts", real_put_parts)
    extract(BlobDataset(), tiny_teacher, store, ExtractSettings(shard_size=2, batch_size=2))
    assert store.entries() == [key]
    assert verify_entry(store.open(key), store.backend).ok
