import csv
from collections import Counter

import pytest

from featcache.data.registry import DATASETS
from featcache.distill.trainer import Trainer
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore
from tests.conftest import BlobDataset, TinyTeacher
from tests.distill.conftest import make_manifest


class BigBlobs(BlobDataset):
    name = "bigblobs"


@pytest.fixture
def two_dataset_store(tmp_path, blob_registry, monkeypatch):
    from featcache.registry import Entry

    monkeypatch.setitem(DATASETS, "bigblobs",
                        Entry(lambda root, **o: BigBlobs(**o), "test blobs, 3x as many"))
    store = FeatureStore(tmp_path / "store")
    for data in (BlobDataset(), BigBlobs(n=30, seed=3)):
        for seed, name in [(0, "tiny"), (1, "tiny2")]:
            extract(data, TinyTeacher(seed=seed, name=name), store, ExtractSettings(views=1, shard_size=8))
    return store


def test_two_datasets_are_sampled_evenly_and_gated_separately(two_dataset_store, tmp_path):
    datasets = [{"name": "blobs"}, {"name": "bigblobs", "options": {"n": 30, "seed": 3}}]
    manifest = make_manifest(two_dataset_store, tmp_path / "run", datasets=datasets,
                             training={"epochs": 1, "num_workers": 0})
    trainer = Trainer(manifest)
    sizes = Counter(s for s, _, _ in trainer.data.train_items)
    assert sizes[1] >= 2.5 * sizes[0]  # bigblobs has ~3x the training images ...
    drawn = Counter()
    for epoch in range(30):
        trainer.data.sampler.set_epoch(epoch)
        drawn.update(trainer.data.train_items[i][0] for i in trainer.data.sampler)
    share = drawn[0] / (drawn[0] + drawn[1])
    assert 0.44 < share < 0.56, drawn  # ... but each dataset gets half of every epoch
    result = trainer.train()
    rows = list(csv.DictReader((tmp_path / "run" / "gates.csv").open()))
    seen = {(r["dataset"], r["stage"], r["teacher"]) for r in rows}
    assert seen == {(d, "dec3", t) for d in ("blobs", "bigblobs") for t in ("tiny", "tiny2")} | {
        (d, "enc3", "tiny2") for d in ("blobs", "bigblobs")}
    for d in ("blobs", "bigblobs"):
        assert sum(float(r["weight"]) for r in rows if r["dataset"] == d and r["stage"] == "dec3") == \
            pytest.approx(1.0)
    assert set(result.gates) == {"blobs/dec3", "blobs/enc3", "bigblobs/dec3", "bigblobs/enc3"}
    assert set(result.loss_weights) == {"seg", "feat", "recon"}
