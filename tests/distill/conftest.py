import pytest

from featcache.data.registry import DATASETS
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.manifest import manifest_from_dict
from featcache.store import FeatureStore
from tests.conftest import BlobDataset, TinyTeacher

TINY_STUDENT = {"encoder": "mobilenetv3_small_050", "encoder_weights": None,
                "decoder_channels": [32, 16, 16, 8, 8], "image_size": 32}


@pytest.fixture
def blob_registry(monkeypatch):
    from featcache.registry import Entry

    monkeypatch.setitem(DATASETS, "blobs",
                        Entry(lambda root, **o: BlobDataset(**o), "test blobs"))


@pytest.fixture
def cached_store(tmp_path, blob_registry):
    """A store with two tiny teachers extracted over the blob dataset (2 views)."""
    store = FeatureStore(tmp_path / "store")
    data = BlobDataset()
    for seed, name in [(0, "tiny"), (1, "tiny2")]:
        extract(data, TinyTeacher(seed=seed, name=name), store, ExtractSettings(views=2, shard_size=4))
    return store


def make_manifest(store, run_dir, **sections):
    data = {
        "store": store.url, "run_dir": str(run_dir),
        "datasets": [{"name": "blobs"}],
        "teachers": [{"name": "tiny", "levels": {"fine": "dec3"}},
                     {"name": "tiny2", "levels": {"fine": "dec3", "coarse": "enc3"}}],
        "student": dict(TINY_STUDENT),
        "training": {"epochs": 2, "batch_size": 4, "seed": 0, "lr": 3e-3},
    }
    for k, v in sections.items():
        data.setdefault(k, {}).update(v) if isinstance(v, dict) else data.__setitem__(k, v)
    return manifest_from_dict(data, "test")
