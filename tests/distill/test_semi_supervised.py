"""Semi-supervised training (distill.unlabelled_batch): the train split's images left out of the
labelled set join every batch and train on the teachers' signals alone. Their masks never reach a
loss, the labelled draw is the one a run without them sees, and probes still fit on labelled
items only."""

import numpy as np
import torch

import featcache.distill.adapt as adapt
from featcache.data.base import Sample
from featcache.distill.build import epoch_batches
from featcache.distill.trainer import Trainer, train
from tests.conftest import BlobDataset
from tests.distill.conftest import make_manifest

SEMI = {"output": True, "probe_steps": 3, "unlabelled_batch": 2}
FEW = {"epochs": 2, "train_fraction": 0.5, "num_workers": 0}


def _trained_weights(manifest):
    trainer = Trainer(manifest)
    try:
        trainer.train()
        return {k: v.clone() for k, v in trainer.model.student.state_dict().items()}, trainer.data
    finally:
        trainer.close()


def test_unlabelled_images_are_the_left_out_training_images(cached_store, tmp_path):
    trainer = Trainer(make_manifest(cached_store, tmp_path / "run", distill=SEMI, training=FEW))
    data = trainer.data
    trainer.close()
    labelled = {i for _, i, _ in data.train_items}
    unlabelled = {i for _, i, _ in data.unlabelled_items}
    train_split = set(data.sources[0].dataset.split_indices("train"))
    assert labelled and unlabelled and not labelled & unlabelled
    assert labelled | unlabelled == train_split  # never a validation or test image
    n = len(data.train_set)
    for batch in epoch_batches(data, 4, 0):
        positions = [k % n for k in batch]
        assert sum(p >= len(data.train_items) for p in positions) == 2  # two unlabelled per batch
    items = [data.train_set[k] for k in range(n)]
    assert [it["has_mask"] for it in items] == ([True] * len(data.train_items)
                                              + [False] * len(data.unlabelled_items))
    assert all(float(it["mask"].sum()) == 0 and it["label"] == -1 for it in items if not it["has_mask"])


def test_the_labelled_draw_is_the_same_with_or_without_unlabelled_images(cached_store, tmp_path):
    plain = Trainer(make_manifest(cached_store, tmp_path / "a", distill={"output": True}, training=FEW))
    semi = Trainer(make_manifest(cached_store, tmp_path / "b", distill=SEMI, training=FEW))
    try:
        n_plain, n_semi = len(plain.data.train_set), len(semi.data.train_set)
        labelled = len(plain.data.train_items)
        a = [[k % n_plain for k in b] for b in epoch_batches(plain.data, 4, 0)]
        b = [[k % n_semi for k in b if k % n_semi < labelled] for b in epoch_batches(semi.data, 4, 0)]
        assert a == b and (plain.data.epochs, plain.data.steps_per_epoch) == (semi.data.epochs,
                                                                               semi.data.steps_per_epoch)
    finally:
        plain.close()
        semi.close()


def test_the_masks_of_unlabelled_images_never_reach_a_loss(cached_store, tmp_path, monkeypatch):
    manifest = make_manifest(cached_store, tmp_path / "run", distill=SEMI, training=FEW)
    honest, data = _trained_weights(manifest)
    left_out = {i for _, i, _ in data.unlabelled_items}
    real = BlobDataset._load

    def scrambled(self, index):
        sample = real(self, index)
        if index in left_out:  # what a wrong mask would do if anything read it
            return Sample(sample.id, sample.image, 1 - sample.mask)
        return sample

    monkeypatch.setattr(BlobDataset, "_load", scrambled)
    again, _ = _trained_weights(make_manifest(cached_store, tmp_path / "run2", distill=SEMI, training=FEW))
    assert honest.keys() == again.keys()
    assert all(torch.equal(honest[k], again[k]) for k in honest)


def test_probes_fit_on_labelled_items_only_beside_unlabelled_ones(cached_store, tmp_path, monkeypatch):
    seen = []
    real = adapt.fit_probes
    monkeypatch.setattr(adapt, "fit_probes", lambda probes, targets, batches, steps, **kw: (
        seen.append(batches), real(probes, targets, batches, steps, **kw))[1])
    manifest = make_manifest(cached_store, tmp_path / "run", distill=SEMI, training=FEW)
    _, data = _trained_weights(manifest)
    used = {int(i) for b in seen[0] for i in b["index"]}
    assert used == {i for _, i, _ in data.train_items}
    assert all(b["has_mask"] is None for b in seen[0])  # None: every item in the batch is labelled


def test_semi_supervised_training_trains_every_term_and_kl_works(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run", distill={**SEMI, "output_loss": "kl"},
                             training=FEW)
    result = train(manifest)
    assert set(result.loss_weights) == {"seg", "feat", "recon", "out"}
    assert np.isfinite(result.best_val_dice)
