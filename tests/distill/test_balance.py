"""Multi-task balance: output distillation beside a classification dataset (a batch may hold only
classification samples), each dataset validated by its own metric, and a checkpoint rule that
cannot hide a failing task."""

import csv
import math

import pytest
import torch

from featcache.data.registry import build_dataset
from featcache.distill.build import epoch_batches
from featcache.distill.distributed import DistContext
from featcache.distill.loaders import make_loader
from featcache.distill.task_batches import per_dataset_order
from featcache.distill.tasks import Classification, Segmentation, Tasks
from featcache.distill.trainer import Trainer, train
from featcache.distill.validation import ValidationTally, checkpoint_score
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.runs import Run
from featcache.runs.val_log import collapse_warnings
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
    manifest = _two_task_manifest(cached_store, tmp_path, training={"steps": 9, "views": 1, "batch_size": 2},
                                  distill={"output": True, "probe_steps": 2})
    result = train(manifest)  # two epochs of per-dataset batches (batches: auto), the second cut short
    assert {"seg", "cls", "out"} <= set(result.loss_weights)
    last = Run(tmp_path / "run").load_checkpoint("last")
    assert last.training.scheduler["last_epoch"] == 9 and last.epoch == result.epochs - 1 == 1  # exactly
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    val = [r for r in rows if r["split"] == "val"]
    assert len(val) == 2 and {"val_score", "val_dice/blobs", "val_pooled_dice/blobs", "val_accuracy/classes",
                              "val_balanced_accuracy/classes", "val_macro_f1/classes"} <= set(val[0])
    assert set(result.val_scores) == {k for k in val[0] if k.startswith("val_")}
    assert result.best_val_dice == pytest.approx(float(val[result.best_epoch]["val_score"]))
    trainer = Trainer(manifest)
    try:
        # training.batches auto: segmentation beside classification gets per-dataset batches
        of = [s for s, _, _ in trainer.data.train_items]
        batches = list(epoch_batches(trainer.data, 2, 0))
        assert all(len({of[i % len(of)] for i in b}) == 1 for b in batches)
        assert {of[b[0] % len(of)] for b in batches} == {0, 1}
        trainer.resume()  # the probes come back from the checkpoint, as on distill --resume
        train_set = trainer.data.train_set
        rows = [k for k, (source, _, _) in enumerate(trainer.data.train_items) if source == 1][:2]
        batch = next(iter(make_loader(train_set, 2, 0, 1, trainer.device, batches=[rows])))  # finished
        out = trainer.train_step(batch)
        assert torch.isfinite(out["loss"]) and "out" in out["terms"] and "cls" in out["terms"]
        assert "seg" not in out["terms"]
    finally:
        trainer.close()


class _Heads(torch.nn.Module):
    """A stand-in student whose class logits are feats["enc"] pooled (3 classes)."""

    def classify(self, feats, head):
        return feats["enc"].mean((2, 3))[:, :3]


def _onehot_logits(label_map, classes):
    return 20 * torch.nn.functional.one_hot(label_map.long(), classes + 1).permute(0, 3, 1, 2).float()


def test_balance_validation_scores_each_dataset_by_its_own_metric():
    tasks = Tasks([Segmentation(2), Classification("pets", 3)])
    tally = ValidationTally(tasks, ["tissue", "pets"], [("gm", "wm"), ("cat", "dog", "zebra")])
    truth = torch.zeros(3, 4, 4)
    truth[0, :2] = 1  # image 0: class 1 in 8 pixels, class 2 absent
    truth[1, :, :2] = 2  # image 1: class 2 in 8 pixels, class 1 absent
    pred = truth.clone()
    pred[1, :, :1] = 0  # image 1: half of class 2 found (Dice 2*4/(4+8) = 2/3)
    # image 2: empty mask predicted empty: left out of both classes' means, not scored 1
    feats = {"enc": torch.zeros(6, 3, 2, 2)}
    feats["enc"][3:, 0] = 5.0  # the classification rows all predict class 0
    label = torch.tensor([-1, -1, -1, 0, 0, 1])
    dataset = torch.tensor([0, 0, 0, 1, 1, 1])
    logits = torch.cat([_onehot_logits(pred, 2), torch.zeros(3, 3, 4, 4)])
    mask = torch.cat([truth[:, None], torch.zeros(3, 1, 4, 4)])
    tally.add(_Heads(), logits, feats, mask, label, dataset)
    scores = tally.reduce(DistContext())
    seg, cls = scores.datasets
    assert (seg.metric, cls.metric) == ("dice", "accuracy")
    assert seg.values["dice/gm"] == pytest.approx(1.0) and seg.values["dice/wm"] == pytest.approx(2 / 3)
    assert seg.score == pytest.approx((1 + 2 / 3) / 2)  # not (1 + 2/3 + 1 + 1) / 4: empty slices left out
    assert seg.values["pooled_dice"] == pytest.approx((1 + 2 / 3) / 2)
    assert cls.score == pytest.approx(2 / 3)
    assert cls.values["balanced_accuracy"] == pytest.approx(0.5)  # cat 2/2, dog 0/1
    assert cls.values["macro_f1"] == pytest.approx((0.8 + 0.0) / 2)
    assert scores.score == pytest.approx(math.sqrt(seg.score * cls.score))
    row = scores.row()
    assert {"val_score", "val_dice/tissue", "val_pooled_dice/tissue", "val_dice/tissue/wm",
            "val_accuracy/pets", "val_balanced_accuracy/pets"} <= set(row)


def test_balance_checkpoint_score_cannot_hide_a_failing_task():
    """The issue's case: Dice 0 beside accuracy 1 must not beat two tasks that both work."""
    assert checkpoint_score([0.0, 1.0]) < checkpoint_score([0.3, 0.5]) < checkpoint_score([0.4, 0.5])
    assert checkpoint_score([0.7]) == pytest.approx(0.7)  # one dataset: its own score
    # The same ranking as the mean log-score relative to each dataset's best, whatever the bests.
    epochs = [[0.2, 0.9], [0.5, 0.6], [0.45, 0.7]]
    relative = [sum(math.log(s / b) for s, b in zip(e, (0.5, 0.9), strict=True)) for e in epochs]
    assert max(range(3), key=lambda k: checkpoint_score(epochs[k])) == max(range(3), key=relative.__getitem__)


def _rows(seg, cls, balanced):
    return [{"epoch": e, "split": "val", "val_score": 0.0, "val_dice/tissue": s, "val_dice/tissue/gm": s,
             "val_accuracy/pets": c, "val_balanced_accuracy/pets": b}
            for e, (s, c, b) in enumerate(zip(seg, cls, balanced, strict=True))]


def test_balance_collapse_warnings_name_the_task():
    healthy = _rows([0.3, 0.5, 0.6], [0.6, 0.8, 0.9], [0.6, 0.8, 0.9])
    assert collapse_warnings(healthy, 2, {"pets": 1 / 3}) == []
    gave_up = _rows([0.3, 0.02, 0.01], [0.6, 0.9, 0.95], [0.6, 0.9, 0.95])
    said = collapse_warnings(gave_up, 2, {"pets": 1 / 3})
    assert len(said) == 1 and said[0].startswith("tissue: validation Dice 0.010: it finds nothing")
    guessing = _rows([0.5, 0.6, 0.6], [0.7, 0.5, 0.5], [0.7, 0.34, 0.34])
    said = collapse_warnings(guessing, 1, {"pets": 1 / 3})
    assert len(said) == 1 and "pets" in said[0] and "guessing" in said[0] and "kept checkpoint" in said[0]
    fell = _rows([0.6, 0.6, 0.25], [0.8, 0.8, 0.8], [0.8, 0.8, 0.8])
    said = collapse_warnings(fell, 1, {"pets": 1 / 3})  # kept epoch 2 fine, the last one fell
    assert len(said) == 1 and "below half its best" in said[0] and "last epoch (epoch 3)" in said[0]


def test_balance_per_dataset_batches_give_each_step_one_dataset():
    dataset_of = [0] * 6 + [1] * 3  # six items of dataset 0, three of dataset 1
    draw = [0, 6, 1, 7, 2, 8, 3, 4, 5, 6]  # a balanced draw: five of each
    order = per_dataset_order(draw, dataset_of, batch_size=2, steps=5, seed=0, epoch=0)
    blocks = [order[k:k + 2] for k in range(0, len(order), 2)]
    assert len(blocks) == 5 and all(len({dataset_of[i] for i in b}) == 1 for b in blocks)
    assert sorted(dataset_of[b[0]] for b in blocks) in ([0, 0, 0, 1, 1], [0, 0, 1, 1, 1])  # turns as drawn
    firsts = [i for b in blocks if dataset_of[b[0]] == 0 for i in b]
    assert firsts[:5] == [0, 1, 2, 3, 4]  # a dataset's items in draw order
    assert order == per_dataset_order(draw, dataset_of, 2, 5, seed=0, epoch=0)  # resumable
    assert order != per_dataset_order(draw, dataset_of, 2, 5, seed=0, epoch=1)  # turns reshuffled per epoch
    assert per_dataset_order([0, 1, 2], [0, 0, 0], 2, 1, 0, 0) == [0, 1, 2]  # one dataset: unchanged
