"""A teacher's `global` level (C, 1, 1) tapped by the student: the loader delivers the vector as
stored (normalised, valid everywhere), the student stage is pooled onto its one cell, and the
teacher gate weighs it against a spatial teacher at the same stage."""

from __future__ import annotations

import torch

from featcache.distill.trainer import Trainer, train
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore
from featcache.teachers.base import GLOBAL, global_level
from tests.conftest import BlobDataset, TinyTeacher
from tests.distill.conftest import make_manifest


class GlobalTinyTeacher(TinyTeacher):
    """TinyTeacher plus a `global` level: its coarse map averaged over positions, (16, 1, 1)."""

    def __init__(self) -> None:
        super().__init__(seed=2, name="tinyg")
        self.available_levels = {**self.available_levels, GLOBAL: global_level(16, 32)}
        self.default_levels = ("coarse", GLOBAL)

    def _forward_levels(self, x, names):
        out = super()._forward_levels(x, names)
        out[GLOBAL] = out["coarse"].mean(dim=(2, 3), keepdim=True)
        return out


def _store(tmp_path) -> FeatureStore:
    store = FeatureStore(tmp_path / "store")
    data = BlobDataset()
    extract(data, TinyTeacher(), store, ExtractSettings(views=2, shard_size=4))
    extract(data, GlobalTinyTeacher(), store, ExtractSettings(views=2, shard_size=4))
    return store


def test_a_global_tap_trains_and_is_gated(tmp_path, blob_registry):
    store = _store(tmp_path)
    teachers = [{"name": "tiny", "levels": {"fine": "dec3"}},
                {"name": "tinyg", "levels": {GLOBAL: ["enc4", "dec3"]}}]
    manifest = make_manifest(store, tmp_path / "run", teachers=teachers,
                             training={"epochs": 1, "batch_size": 4})
    trainer = Trainer(manifest)
    batch = next(trainer._train_batches(0))
    key = next(k for k in batch if k.startswith("t:") and GLOBAL in k)
    assert batch[key].shape == (4, 16, 1, 1)
    assert torch.equal(batch["v:" + key[2:]], torch.ones(4, 1, 1, 1))
    out = trainer.train_step(batch)
    assert torch.isfinite(out["loss"]).all()
    result = train(make_manifest(store, tmp_path / "run2", teachers=teachers,
                                 training={"epochs": 1, "batch_size": 4}))
    weights = result.gates["blobs/dec3"]
    assert set(weights) == {"tiny", "tinyg"} and abs(sum(weights.values()) - 1) < 1e-5
