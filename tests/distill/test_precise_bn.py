"""Batch norm's statistics recomputed before each validation (training.precise_bn).

What a user relies on: the network that is validated, saved in best.pt / last.pt and served is
the network as trained, normalised by statistics of the training images under the final weights,
not by a moving average left by composed small batches; and a run saved before the setting
existed is never reused as one trained with it."""

import torch
import torch.nn as nn
import yaml

from featcache.distill.precise_bn import recompute_batchnorm
from featcache.distill.trainer import Trainer
from featcache.manifest import same_settings
from featcache.runs import Run
from tests.distill.conftest import make_manifest


def test_statistics_are_the_mean_of_the_batches_statistics():
    net = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False), nn.BatchNorm2d(3), nn.Dropout(0.5)).eval()
    net[1].running_mean.fill_(7.0)  # a stale moving average
    gen = torch.Generator().manual_seed(0)
    batches = [{"image": torch.randn(4, 1, 5, 5, generator=gen) * (k + 1) + k} for k in range(3)]
    assert recompute_batchnorm(net, batches, torch.device("cpu")) == 12
    outs = [net[0](b["image"]) for b in batches]
    mean = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    var = torch.stack([o.var((0, 2, 3), unbiased=True) for o in outs]).mean(0)
    torch.testing.assert_close(net[1].running_mean, mean.detach())
    torch.testing.assert_close(net[1].running_var, var.detach())
    assert net[1].momentum == 0.1 and not net.training  # the layer and the mode as they were


def test_no_batches_leave_the_statistics_alone():
    bn = nn.BatchNorm2d(2)
    bn.running_mean.fill_(3.0)
    assert recompute_batchnorm(bn, [], torch.device("cpu")) == 0
    assert recompute_batchnorm(bn, [{"image": torch.ones(1, 2, 1, 1)}], torch.device("cpu")) == 0
    assert torch.equal(bn.running_mean, torch.full((2,), 3.0))


def test_saved_student_carries_the_statistics_recomputed_under_its_weights(cached_store, tmp_path):
    """last.pt's statistics are those of the training images under last.pt's weights: recomputing
    them again changes nothing."""
    manifest = make_manifest(cached_store, tmp_path / "run", distill={"unlabelled_batch": 2},
                             training={"epochs": 2, "train_fraction": 0.5, "num_workers": 0})
    trainer = Trainer(manifest)
    try:
        assert trainer.data.bn_set is not None
        assert len(trainer.data.bn_set) == len(trainer.data.train_items) + len(trainer.data.unlabelled_items)
        trainer.train()
    finally:
        trainer.close()
    student, _ = Run(tmp_path / "run").load_student("last")
    saved = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}
    again = Trainer(manifest)  # the same bn images, drawn the same way
    try:
        images = torch.stack([again.data.bn_set[i]["image"] for i in range(len(again.data.bn_set))])
        rows = manifest.training.batch_size + again.data.unlabelled_batch  # a training step's rows
        loader = [{"image": chunk} for chunk in images.split(rows)]
        recompute_batchnorm(student, loader, torch.device("cpu"))
    finally:
        again.close()
    for key, value in student.state_dict().items():
        if "running_mean" in key:
            torch.testing.assert_close(value, saved[key], rtol=1e-4, atol=1e-5)


def test_precise_bn_off_keeps_the_moving_averages(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run", training={"precise_bn": 0, "num_workers": 0})
    trainer = Trainer(manifest)
    try:
        assert trainer.data.bn_set is None
    finally:
        trainer.close()


def test_a_run_saved_before_precise_bn_is_not_the_same_settings(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run")
    saved = yaml.safe_load(yaml.safe_dump(manifest.model_dump(mode="json")))
    assert same_settings(saved, manifest)
    del saved["training"]["precise_bn"]  # written by a featcache without the setting
    assert not same_settings(saved, manifest)
    off = make_manifest(cached_store, tmp_path / "run", training={"precise_bn": 0})
    assert same_settings(saved, off)
