"""Multi-task balance: output distillation beside a classification dataset (a batch may hold only
classification samples), each dataset validated by its own metric, and a checkpoint rule that
cannot hide a failing task."""

import torch

from featcache.data.registry import build_dataset
from featcache.distill.loaders import make_loader
from featcache.distill.trainer import Trainer, train
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from tests.conftest import TinyTeacher
from tests.data.synth_layouts import make_classes
from tests.distill.conftest import make_manifest


def _extract(store, dataset):
    for seed, name in [(0, "tiny"), (1, "tiny2")]:
        extract(dataset, TinyTeacher(seed=seed, name=name), store, ExtractSettings(views=1, shard_size=4))


def _two_task_manifest(store, tmp_path, **sections):
    root = make_classes(tmp_path)
    _extract(store, build_dataset("classes", root))
    datasets = [{"name": "blobs"}, {"name": "classes", "root": str(root)}]
    return make_manifest(store, tmp_path / "run", datasets=datasets, **sections)


def test_balance_output_distillation_trains_beside_a_classification_dataset(cached_store, tmp_path):
    """A batch of classification samples alone reaches the output term (it crashed: its rows were
    None, and the class probes pooled a (1, B, C*h*w) view), in a run and on resume."""
    manifest = _two_task_manifest(cached_store, tmp_path, training={"epochs": 2, "views": 1, "batch_size": 2},
                                  distill={"output": True, "probe_steps": 2})
    result = train(manifest)  # two epochs of mixed batches
    assert {"seg", "cls", "out"} <= set(result.loss_weights)
    trainer = Trainer(manifest)
    try:
        trainer.resume()  # the probes come back from the checkpoint, as on distill --resume
        train_set = trainer.data.train_set
        rows = [k for k, (source, _, _) in enumerate(trainer.data.train_items) if source == 1][:2]
        batch = next(iter(make_loader(train_set, 2, 0, 1, trainer.device, batches=[rows])))  # finished
        out = trainer.train_step(batch)
        assert torch.isfinite(out["loss"]) and "out" in out["terms"] and "cls" in out["terms"]
        assert "seg" not in out["terms"]
    finally:
        trainer.close()
