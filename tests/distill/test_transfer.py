"""What makes distillation able to transfer: several taps, photometric augmentation that keeps the
cache aligned, a baseline with the same steps and views, feature pretraining on unlabelled data."""

import numpy as np
import pytest
import torch

from featcache.data.photometric import Photometric, augment, draw
from featcache.distill.build import epoch_batches
from featcache.distill.loaders import make_loader
from featcache.distill.trainer import Trainer, train
from featcache.errors import ConfigError
from featcache.events import PretrainStarted, ignore
from featcache.runs import Run
from tests.distill.conftest import make_manifest

TAPS = [{"name": "tiny", "levels": {"fine": ["enc3", "dec3", "dec4"]}},
        {"name": "tiny2", "levels": {"coarse": "enc3"}}]


def test_a_level_tapped_at_several_stages(cached_store, tmp_path):
    trainer = Trainer(make_manifest(cached_store, tmp_path / "run", teachers=TAPS))
    grids = {t.key: t.loss_grid for t in trainer.model.targets}
    # 32 px student: enc3 4x4, dec3 8x8 (both coarser than fine's 16x16), dec4 16x16.
    assert grids == {"tiny/fine@enc3": (4, 4), "tiny/fine@dec3": (8, 8), "tiny/fine@dec4": (16, 16),
                     "tiny2/coarse@enc3": (4, 4)}
    batch = next(trainer._train_batches(0))
    assert batch["t:tiny/fine@enc3"].shape == (4, 8, 4, 4)
    assert batch["t:tiny/fine@dec4"].shape == (4, 8, 16, 16)
    # One stored map, averaged onto each grid: the coarse tap is the mean of the fine one.
    fine = batch["t:tiny/fine@dec3"].float()
    torch.testing.assert_close(batch["t:tiny/fine@enc3"].float(),
                               torch.nn.functional.avg_pool2d(fine, 2), atol=2e-3, rtol=1e-2)
    out = trainer.train_step(batch)
    assert set(out["gates"]) == {"enc3", "dec3", "dec4"} and out["gates"]["enc3"].shape[1] == 2
    trainer.close()


def _finished(trainer, k):
    """Item k (epoch-carrying) as a batch of one, finished as the trainer finishes batches."""
    return next(iter(make_loader(trainer.data.train_set, 1, 0, 1, trainer.device, batches=[[k]])))


def test_photometric_augmentation_changes_intensities_only(cached_store, tmp_path):
    plain = Trainer(make_manifest(cached_store, tmp_path / "a", training={"augment": {"enabled": False}}))
    augmented = Trainer(make_manifest(cached_store, tmp_path / "b", training={"augment": {"p": 1.0}}))
    n = len(plain.data.train_set)
    for k in (0, n + 1):  # epoch 0 and epoch 1
        a, b = _finished(plain, k), _finished(augmented, k)
        assert not torch.equal(a["image"], b["image"]) and a["image"].shape == b["image"].shape
        assert torch.equal(a["mask"], b["mask"])
        for key in a:
            if key.startswith(("t:", "v:")):
                assert torch.equal(a[key], b[key]), key  # the cached features are untouched
    # Reproducible per (seed, epoch, item), different across epochs.
    assert torch.equal(_finished(augmented, 3)["image"], _finished(augmented, 3)["image"])
    assert not torch.equal(_finished(augmented, 3)["image"], _finished(augmented, n + 3)["image"])
    # No geometry change: a vertical edge stays where it was under every operation.
    x = torch.zeros(1, 16, 16)
    x[:, :, 8:] = 1.0
    for seed in range(20):
        y = augment(x[None], [draw(Photometric(p=1.0, noise=0.0), np.random.default_rng(seed), x.shape)])[0]
        assert (y[:, :, 9:] > y[:, :, :7].max()).all()
    plain.close()
    augmented.close()


def test_the_baseline_gets_the_same_steps_views_and_batches(cached_store, tmp_path):
    sections = {"training": {"steps": 7, "views": 2}}
    distilled = Trainer(make_manifest(cached_store, tmp_path / "d", **sections))
    alone = Trainer(make_manifest(cached_store, tmp_path / "s", distill={"enabled": False}, **sections))
    assert not alone.built.with_teachers
    assert alone.data.sources[0].views == distilled.data.sources[0].views == 2
    assert alone.data.train_items == distilled.data.train_items
    assert (alone.data.epochs, alone.data.steps_per_epoch) == (distilled.data.epochs,
                                                               distilled.data.steps_per_epoch)
    assert alone.data.total_steps == distilled.data.total_steps == 7  # honoured exactly
    assert list(epoch_batches(alone.data, 4, 0)) == list(epoch_batches(distilled.data, 4, 0))
    # The stored view 1 and the view the baseline replays are the same picture.
    k = next(i for i, (_, _, v) in enumerate(alone.data.train_items) if v == 1)
    assert torch.equal(alone.data.train_set[k]["mask"], distilled.data.train_set[k]["mask"])
    alone.close()
    distilled.close()


def test_feature_pretraining_runs_once_and_is_reused(cached_store, tmp_path):
    pretrain = {"datasets": [{"name": "blobs", "train_split": "all"}], "steps": 3, "batch_size": 4}
    manifest = make_manifest(cached_store, tmp_path / "run", pretrain=pretrain, training={"epochs": 1})
    events = []
    train(manifest, progress=lambda e: events.append(type(e).__name__))
    assert events.count("PretrainStep") == 3 and Run(tmp_path / "run").pretrained_file.is_file()
    # A second run directory holding the same pretrained weights loads them instead of pretraining.
    again = make_manifest(cached_store, tmp_path / "again", pretrain=pretrain, training={"epochs": 1})
    Run(tmp_path / "again").pretrained_file.parent.mkdir(parents=True)
    Run(tmp_path / "again").pretrained_file.write_bytes(Run(tmp_path / "run").pretrained_file.read_bytes())
    events.clear()
    train(again, progress=lambda e: events.append(type(e).__name__))
    assert "PretrainReused" in events and "PretrainStep" not in events
    # Other pretraining settings: the file does not fit and is replaced.
    changed = make_manifest(cached_store, tmp_path / "again", pretrain={**pretrain, "steps": 2},
                            training={"epochs": 1})
    events.clear()
    train(changed, progress=lambda e: events.append(type(e).__name__), overwrite=True)
    assert events.count("PretrainStep") == 2


def test_pretraining_changes_the_student(cached_store, tmp_path):
    def student_after(pretrain_steps):
        pretrain = {"datasets": [{"name": "blobs", "train_split": "all"}], "steps": pretrain_steps}
        trainer = Trainer(make_manifest(cached_store, tmp_path / f"p{pretrain_steps}", pretrain=pretrain))
        if pretrain_steps:
            from featcache.distill.pretrain import pretrain as run_pretraining
            run_pretraining(trainer.manifest, trainer.built, trainer.run, trainer.settings, ignore)
        weights = trainer.model.student.encoder.conv_stem.weight.detach().clone()
        trainer.close()
        return weights

    assert not torch.equal(student_after(0), student_after(2))


def test_image_size_must_fit_the_student_stride(cached_store, tmp_path):
    with pytest.raises(ConfigError, match="multiple of 32"):
        Trainer(make_manifest(cached_store, tmp_path / "run", student={"image_size": 40}))


def test_two_teachers_of_one_registry_name_work_under_aliases(cached_store, tmp_path):
    """E.g. DINOv2 and RETFound, both through `timm`: entries are told apart by architecture and
    every output uses the alias."""
    from featcache.extract.runner import extract
    from featcache.extract.settings import ExtractSettings
    from tests.conftest import BlobDataset, TinyTeacher

    other = TinyTeacher(seed=5, name="tiny")
    other.arch = "tinyconv-b"  # another model under the same registry name
    extract(BlobDataset(), other, cached_store, ExtractSettings(views=2, shard_size=4))
    teachers = [{"name": "tiny", "alias": "dino", "arch": "tinyconv", "levels": {"fine": "dec3"}},
                {"name": "tiny", "alias": "retfound", "arch": "tinyconv-b", "levels": {"fine": "dec3"}}]
    result = train(make_manifest(cached_store, tmp_path / "run", teachers=teachers, training={"epochs": 1}))
    assert set(result.gates["blobs/dec3"]) == {"dino", "retfound"}
    with pytest.raises(ConfigError, match="appears twice; give each an `alias:`"):
        make_manifest(cached_store, tmp_path / "x", teachers=[dict(t, alias=None) for t in teachers])


def test_unlabelled_images_are_extracted_and_pretrained_on(cached_store, tmp_path):
    """A folder of images without masks: extract caches its features; distill pretrains on it and
    refuses it as labelled data."""
    from PIL import Image

    from featcache.data.registry import build_dataset
    from featcache.extract.runner import extract
    from featcache.extract.settings import ExtractSettings
    from tests.conftest import TinyTeacher

    root = tmp_path / "unlabelled"
    rng = np.random.default_rng(0)
    for k, rel in enumerate(["a.png", "b.png", "ward2/a.png", "ward2/c.jpg", "d.png", "e.png"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((30 + k, 40)) * 255).astype(np.uint8)).save(root / rel)
    pool = build_dataset("images", root)
    assert not pool.labelled and len(pool) == 6 and "ward2_a" in pool.ids and "a" in pool.ids
    for seed, name in [(0, "tiny"), (1, "tiny2")]:
        extract(pool, TinyTeacher(seed=seed, name=name), cached_store, ExtractSettings(views=2, shard_size=4))
    pretrain = {"datasets": [{"name": "images", "root": str(root)}], "steps": 2, "batch_size": 4}
    events = []
    train(make_manifest(cached_store, tmp_path / "run", pretrain=pretrain, training={"epochs": 1}),
          progress=events.append)
    assert [e.images for e in events if isinstance(e, PretrainStarted)] == [12]  # 6 images x 2 views
    with pytest.raises(ConfigError, match="no masks: list it under pretrain.datasets"):
        Trainer(make_manifest(cached_store, tmp_path / "bad",
                              datasets=[{"name": "images", "root": str(root)}]))
