"""A tiny store for the Python API: two conv teachers over the synthetic blob dataset, 2 views."""

import pytest

from featcache.data.registry import DATASETS
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore
from tests.conftest import BlobDataset, TinyTeacher


@pytest.fixture
def blob_registry(monkeypatch):
    from featcache.registry import Entry

    monkeypatch.setitem(DATASETS, "blobs",
                        Entry(lambda root, **o: BlobDataset(**o), "test blobs"))


@pytest.fixture
def api_store(tmp_path, blob_registry) -> FeatureStore:
    store = FeatureStore(tmp_path / "store")
    data = BlobDataset()
    for seed, name in [(0, "tiny"), (1, "tiny2")]:
        extract(data, TinyTeacher(seed=seed, name=name), store, ExtractSettings(views=2, shard_size=4))
    return store
