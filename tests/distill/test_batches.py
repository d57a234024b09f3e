"""The training batch finished in the training process (batches.py), batched, with teacher
targets resident in memory or resampled per batch, is the batch the per-sample loader made:
features, validity, masks and augmentation with the same seed; resident targets are read through
the store's checks and never take more memory than is free."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from featcache.data.base import Sample, SampleInfo, SegmentationDataset, assign_splits
from featcache.data.registry import DATASETS
from featcache.distill import memory, resident
from featcache.distill.trainer import Trainer
from featcache.errors import CorruptEntryError
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore
from tests.conftest import TinyTeacher
from tests.distill import per_sample_reference
from tests.distill.conftest import make_manifest


class WideBlobs(SegmentationDataset):
    """Discs on noise in 28 x 40 images: the teacher pads them, so every box is a real one."""

    name = "wideblobs"
    modality = "synthetic"

    def __init__(self, n: int = 8) -> None:
        split = assign_splits([f"g{i}" for i in range(n)], 0, (0.6, 0.2, 0.2))
        super().__init__([SampleInfo(f"wide{i:02d}", split[f"g{i}"], f"g{i}") for i in range(n)], {"n": n})

    def content_digest(self, index):
        sample = self._load(index)
        return hashlib.sha256(sample.image.tobytes() + sample.mask.tobytes()).hexdigest()

    def _load(self, index):
        rng = np.random.default_rng(index)
        yy, xx = np.mgrid[:28, :40]
        cy, cx = rng.uniform(8, 20), rng.uniform(8, 32)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < 40).astype(np.uint8)
        image = np.clip(0.2 + 0.6 * mask + 0.1 * rng.standard_normal(mask.shape), 0, 1).astype(np.float32)
        return Sample(self.samples[index].id, image[:, :, None], mask)


@pytest.fixture
def wide_store(tmp_path, monkeypatch):
    from featcache.registry import Entry

    monkeypatch.setitem(DATASETS, "wideblobs", Entry(lambda root, **o: WideBlobs(**o), "test"))
    store = FeatureStore(tmp_path / "store")
    extract(WideBlobs(), TinyTeacher(), store, ExtractSettings(views=2, shard_size=4))
    return store


def _manifest(store, run_dir, distill):
    return make_manifest(store, run_dir, datasets=[{"name": "wideblobs"}], distill=distill,
                         teachers=[{"name": "tiny", "levels": {"fine": ["dec3", "enc3"], "coarse": "enc4"}}],
                         training={"augment": {"p": 1.0}, "num_workers": 0, "seed": 3})


@pytest.mark.parametrize(("feature_grid", "normalisation"), [("coarser", "standardize"), ("teacher", "phis")])
def test_a_batch_is_the_per_sample_items(wide_store, tmp_path, feature_grid, normalisation):
    trainer = Trainer(_manifest(wide_store, tmp_path / "run",
                                {"feature_grid": feature_grid, "normalisation": normalisation}))
    items = trainer.data.train_set
    boxes = {tuple(items.sources[0].entries["tiny"].frames(i)[v]) for i in range(8) for v in range(2)}
    assert (0.0, 0.0, 1.0, 1.0) not in boxes  # the teacher padded every view
    batches = trainer._train_batches(0)
    assert items.resident_teachers == {"tiny"}
    for _ in range(trainer.data.steps_per_epoch + 1):  # into epoch 1: the seed carries the epoch
        batch = next(batches)
    keys = [k for k in batch if k.startswith(("t:", "v:"))]
    assert len(keys) == 6
    epoch, n = 1, len(items)
    for row, position in enumerate(batch["item"].tolist()):
        assert batch["epoch"][row] == epoch
        expected = per_sample_reference.item(items, epoch * n + position)
        torch.testing.assert_close(batch["image"][row], expected["image"], atol=1e-6, rtol=1e-6)
        assert torch.equal(batch["mask"][row], expected["mask"])
        for key in keys:
            got, want = batch[key][row].float(), expected[key].float()
            assert got.shape == want.shape, key
            # float16 targets: equal up to the last bit of a rounding of nearly equal float32s
            torch.testing.assert_close(got, want, atol=2e-3, rtol=2e-3, msg=key)
    assert not torch.equal(batch["image"][-1], items[position]["image"])  # augmented (p = 1)
    trainer.close()


def test_resident_and_streamed_targets_are_the_same_batches(cached_store, tmp_path):
    """Whether a teacher's targets are held in memory changes no number (both are the float16
    targets the per-sample loader sent); and a teacher that does not fit is read per step."""
    runs = {}
    for name, setting in [("resident", "auto"), ("streamed", "off")]:
        trainer = Trainer(make_manifest(cached_store, tmp_path / name, training={
            "resident_features": setting, "num_workers": 0}))
        batches = trainer._train_batches(0)
        runs[name] = [next(batches) for _ in range(3)]
        assert trainer.data.train_set.resident_teachers == ({"tiny", "tiny2"} if setting == "auto" else set())
        trainer.close()
    for a, b in zip(runs["resident"], runs["streamed"], strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key])), key


def test_auto_never_holds_more_than_is_free(cached_store, tmp_path, monkeypatch):
    trainer = Trainer(make_manifest(cached_store, tmp_path / "run", training={"num_workers": 0}))
    items = trainer.data.train_set
    need = {t: resident.item_bytes(items, t) * len(items) for t in ("tiny", "tiny2")}
    cpu = torch.device("cpu")
    for free in [1, need["tiny"] * 2, (need["tiny"] + need["tiny2"]) * 2, 10 * 2**30]:
        monkeypatch.setattr(memory, "free_bytes", lambda device, free=free: (free, "RAM"))
        placed = resident.plan(items, "auto", cpu)
        assert sum(need[t] for t in placed) <= free // 2
        fits, used = [], 0
        for t in ("tiny", "tiny2"):  # manifest order, each teacher whole or not at all
            if used + need[t] <= free // 2:
                fits, used = [*fits, t], used + need[t]
        assert list(placed) == fits
        # a size in GiB is a cap, and never above what is free either
        assert sum(need[t] for t in resident.plan(items, 1.0, cpu)) <= min(free, 2**30)
    monkeypatch.setattr(memory, "free_bytes", lambda device: (need["tiny"] * 2 + 1, "RAM"))
    assert list(resident.plan(items, "auto", cpu)) == ["tiny"]
    batch = next(trainer._train_batches(0))  # tiny held, tiny2 read per step: both arrive
    assert items.resident_teachers == {"tiny"} and sum(k.startswith("t:") for k in batch) == 3
    assert not any(k.startswith(("f:", "b:")) for k in batch)
    trainer.close()


def test_a_damaged_entry_fails_by_name_when_made_resident(cached_store, tmp_path):
    trainer = Trainer(make_manifest(cached_store, tmp_path / "run", training={"num_workers": 0}))
    entry = trainer.data.sources[0].entries["tiny2"]
    shard = next(p for p in sorted((Path(cached_store.url) / entry.key / "levels" / "fine").rglob("*"))
                 if p.is_file() and p.name != "zarr.json")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x55
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptEntryError, match=rf"entry {entry.key}: sample blob\d+ level fine is corrupt"):
        trainer._train_batches(0)
    trainer.close()
