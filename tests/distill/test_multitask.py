"""One student over several tasks: a classification dataset trains beside a segmentation one from
the cache (a head and a loss, gates and return decoder included), multi-class masks train a
K+1-channel decoder, and the task losses and scores are what they say."""

import csv

import numpy as np
import pytest
import torch

from featcache.data.registry import build_dataset
from featcache.distill.tasks import Classification, Segmentation, Tasks
from featcache.distill.trainer import Trainer, train
from featcache.errors import ConfigError
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.runs import Run
from tests.conftest import TinyTeacher
from tests.data.synth_layouts import make_classes, make_nnunet_png
from tests.distill.conftest import make_manifest


def _extract(store, dataset):
    for seed, name in [(0, "tiny"), (1, "tiny2")]:
        extract(dataset, TinyTeacher(seed=seed, name=name), store, ExtractSettings(views=1, shard_size=4))


def test_segmentation_and_classification_train_one_student(cached_store, tmp_path):
    root = make_classes(tmp_path)
    _extract(cached_store, build_dataset("classes", root))
    manifest = make_manifest(cached_store, tmp_path / "run", training={"epochs": 3, "views": 1},
                             datasets=[{"name": "blobs"}, {"name": "classes", "root": str(root)}])
    result = train(manifest)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    train_rows = [r for r in rows if r["split"] == "train"]
    assert all(r["seg"] and r["cls"] and r["feat"] for r in train_rows)  # both task terms every epoch
    assert {"w_seg", "w_cls", "w_feat", "w_recon"} <= set(rows[0])  # the loss gate weighs all four
    assert {"blobs/dec3", "classes/dec3"} <= set(result.gates)  # teachers are gated for both datasets
    student, checkpoint = Run(tmp_path / "run").load_student("last")
    assert checkpoint.student_config.classifiers == {"classes": 3}
    assert checkpoint.student_config.mask_classes == 1
    x = torch.rand(2, 3, 32, 32)
    assert student(x).shape == (2, 1, 32, 32) and student.predict_classes(x, "classes").shape == (2, 3)
    assert 0 <= result.best_val_dice <= 1


def test_a_binary_run_saves_the_config_it_always_did(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run", training={"epochs": 1})
    train(manifest)
    payload = torch.load(Run(tmp_path / "run").checkpoint_file("best"), weights_only=True)
    assert "mask_classes" not in payload["student_config"] and "classifiers" not in payload["student_config"]


def test_multi_class_masks_train_a_decoder_with_a_channel_per_class(cached_store, tmp_path):
    root = make_nnunet_png(tmp_path, n=8)
    data = build_dataset("nnunet", root)
    assert data.classes == ("road", "car")
    _extract(cached_store, data)
    manifest = make_manifest(cached_store, tmp_path / "run", training={"epochs": 2, "views": 1},
                             datasets=[{"name": "nnunet", "root": str(root)}])
    trainer = Trainer(manifest)
    assert trainer.model.student.mask_channels == 3 and trainer.model.tasks.by_dataset == [Segmentation(2)]
    result = trainer.train()
    trainer.close()
    assert 0 <= result.best_val_dice <= 1
    student, checkpoint = Run(tmp_path / "run").load_student("best")
    assert checkpoint.student_config.mask_classes == 2 and student(torch.rand(1, 3, 32, 32)).shape[1] == 3


def test_segmentation_datasets_must_share_their_labels(cached_store, tmp_path):
    root = make_nnunet_png(tmp_path, n=8)
    _extract(cached_store, build_dataset("nnunet", root))
    manifest = make_manifest(cached_store, tmp_path / "run",
                             datasets=[{"name": "blobs"}, {"name": "nnunet", "root": str(root)}])
    with pytest.raises(ConfigError, match="the segmentation datasets have 1 and 2 classes"):
        Trainer(manifest)


def test_task_losses_and_scores_by_hand():
    seg = Segmentation(2)
    mask = torch.zeros(1, 1, 4, 4)
    mask[0, 0, :2] = 1
    mask[0, 0, 2:, :2] = 2
    perfect = 20 * torch.nn.functional.one_hot(mask[:, 0].long(), 3).permute(0, 3, 1, 2).float()
    assert float(seg.loss(perfect, mask)) < 1e-3 and float(seg.score(perfect, mask)) == 1.0
    wrong = perfect[:, [0, 2, 1]]  # classes 1 and 2 swapped: both Dice 0
    assert float(seg.score(wrong, mask)) == 0.0
    cls = Classification("pets", 3)
    logits = torch.tensor([[5.0, 0, 0], [0, 0, 5.0]])
    assert cls.score(logits, torch.tensor([0, 1])).tolist() == [1.0, 0.0]
    expected = -np.log(np.exp(5) / (np.exp(5) + 2))
    assert float(cls.loss(logits, torch.tensor([0, 0]))[0]) == pytest.approx(expected, rel=1e-5)


def test_a_mixed_batch_gives_each_task_its_samples():
    class Student(torch.nn.Module):
        def classify(self, feats, head):
            return feats["enc"].mean((2, 3))[:, :3]

    tasks = Tasks([Segmentation(), Classification("pets", 3)])
    logits = torch.full((3, 1, 4, 4), 10.0)  # predicts foreground everywhere
    mask = torch.ones(3, 1, 4, 4)
    feats = {"enc": torch.zeros(3, 4, 2, 2)}
    feats["enc"][1, 2] = 5.0  # sample 1 (classification) predicts class 2
    label = torch.tensor([-1, 2, -1])
    dataset = torch.tensor([0, 1, 0])
    losses = tasks.losses(Student(), logits, feats, mask, label, dataset)
    assert set(losses) == {"seg", "cls"}
    scores = tasks.scores(Student(), logits, feats, mask, label, dataset)
    assert scores.tolist() == [1.0, 1.0, 1.0]
    only_seg = tasks.losses(Student(), logits, feats, mask, label, torch.tensor([0, 0, 0]))
    assert set(only_seg) == {"seg"}


def test_unlabelled_rows_of_a_mixed_batch_leave_the_task_terms():
    class Student(torch.nn.Module):
        def classify(self, feats, head):
            return feats["enc"].mean((2, 3))[:, :3]

    tasks = Tasks([Segmentation(), Classification("pets", 3)])
    logits = torch.randn(4, 1, 4, 4)
    mask = (torch.rand(4, 1, 4, 4) > 0.5).float()
    feats = {"enc": torch.randn(4, 4, 2, 2)}
    label = torch.tensor([-1, 2, -1, -1])  # row 3: an unlabelled classification image
    dataset = torch.tensor([0, 1, 0, 1])
    has_mask = torch.tensor([True, True, False, False])
    semi = tasks.losses(Student(), logits, feats, mask, label, dataset, has_mask)
    labelled = tasks.losses(Student(), logits[:2], {"enc": feats["enc"][:2]}, mask[:2], label[:2],
                            dataset[:2])
    assert semi.keys() == labelled.keys() == {"seg", "cls"}
    assert all(torch.allclose(semi[k], labelled[k]) for k in semi)
    none_labelled = torch.tensor([True, False, False, False])
    assert set(tasks.losses(Student(), logits, feats, mask, label, dataset, none_labelled)) == {"seg"}


def test_classification_trains_semi_supervised_beside_segmentation(cached_store, tmp_path):
    root = make_classes(tmp_path)
    _extract(cached_store, build_dataset("classes", root))
    manifest = make_manifest(cached_store, tmp_path / "run",
                             training={"epochs": 2, "views": 1, "train_fraction": 0.5},
                             distill={"output": True, "probe_steps": 2, "unlabelled_batch": 2},
                             datasets=[{"name": "blobs"}, {"name": "classes", "root": str(root)}])
    result = train(manifest)
    assert {"seg", "cls", "out"} <= set(result.loss_weights)
    assert 0 <= result.best_val_dice <= 1


def _cli(*args):
    from typer.testing import CliRunner

    from featcache.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


CLASSIFICATION = {"aptos2019": "make_aptos", "isic2017": "make_isic", "classes": "make_classes"}


@pytest.mark.parametrize("name", sorted(CLASSIFICATION))
def test_segmentation_beside_each_classification_loader_end_to_end(cached_store, tmp_path, name):
    """extract -> distill -> eval -> report -> export, one student over blobs and `name`."""
    import json

    from tests.data import synth_layouts

    root = getattr(synth_layouts, CLASSIFICATION[name])(tmp_path)
    data = build_dataset(name, root)
    _extract(cached_store, data)
    run = tmp_path / "run"
    train(make_manifest(cached_store, run, training={"epochs": 2, "views": 1},
                        datasets=[{"name": "blobs"}, {"name": name, "root": str(root)}]))
    _cli("eval", "--run", run)
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert {g["dataset"] for g in summary["groups"]} == {"blobs"}
    assert name in json.dumps(summary["classification"])
    _cli("report", "--run", run)
    report = (run / "report" / "report.md").read_text()
    assert "confusion" in report.lower()
    assert "Validation per dataset" in report and f"| {name} |" in report and "| blobs |" in report
    onnx_file = tmp_path / "student.onnx"
    said = _cli("export", "--run", run, "--format", "onnx", "--out", onnx_file)
    # every head travels in the exported file: the mask logits, then this dataset's class logits
    import onnx

    from featcache.evaluate.deploy import MASK_OUTPUT, class_output

    outputs = [o.name for o in onnx.load(str(onnx_file)).graph.output]
    assert outputs == [MASK_OUTPUT, class_output(name)] and class_output(name) in said


@pytest.mark.parametrize("layout", ["nnunet", "msd"])
def test_multi_class_volumes_train_evaluate_per_class_and_predict_label_maps(cached_store, tmp_path, layout):
    import json

    from tests.data.synth_layouts import make_msd, make_nnunet

    if layout == "nnunet":
        root, options, classes = make_nnunet(tmp_path, n=6), {}, {"left", "right"}
        volumes = root / "Dataset501_Tiny" / "imagesTr"
    else:
        root, options = make_msd(tmp_path, n=6), {"labels": [1, 2]}
        volumes, classes = root / "imagesTr", None
    data = build_dataset(layout, root, **options)
    assert len(data.classes) == 2
    classes = classes or set(data.classes)
    _extract(cached_store, data)
    run = tmp_path / "run"
    train(make_manifest(cached_store, run, training={"epochs": 2, "views": 1},
                        datasets=[{"name": layout, "root": str(root), "options": options}]))
    _cli("eval", "--run", run)
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert {g.get("class") for g in summary["groups"]} >= classes | {"mean"}
    volume = next(p for p in volumes.glob("*.nii.gz") if not p.name.startswith("."))
    _cli("predict", "--run", run, "--input", volume, "--out", tmp_path / "pred")
    assert list((tmp_path / "pred").rglob("*.nii.gz"))
