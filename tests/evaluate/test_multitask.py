"""Eval, predict, report and export of runs with classification heads and multi-class masks.

The runs are faked as tests/evaluate/conftest.py does: a hand-built tiny student saved through
`Run.save_checkpoint`, with a manifest naming synthetic APTOS (graded, 5 classes) and nnU-Net (2D,
classes road and car) layouts. Metrics are cross-checked against values computed here by hand.
"""

from __future__ import annotations

import csv
import json
from itertools import product
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from featcache.cli import app
from featcache.data.registry import build_dataset
from featcache.evaluate.predict import predict_paths
from featcache.evaluate.predictor import Predictor
from featcache.evaluate.report import build_report
from featcache.evaluate.run_eval import evaluate_run
from featcache.runs import Checkpoint, Run
from featcache.student import Student
from tests.data.synth_layouts import make_aptos, make_nnunet_png
from tests.evaluate.conftest import TINY

runner = CliRunner()


def _headed_run(tmp: Path, datasets: list[dict], mask_classes: int, classifiers: dict[str, int]) -> Path:
    torch.manual_seed(0)
    config = TINY.model_copy(update={"in_channels": 3, "mask_classes": mask_classes,
                                     "classifiers": classifiers})
    student = Student(config).eval()
    with torch.no_grad():  # spread the untrained heads' outputs so predictions differ per image
        for head in student.classifiers.values():
            head.weight.normal_(0, 3.0)
        student.head.weight.normal_(0, 3.0)
    run = tmp / "run"
    Run(run).save_checkpoint("best", Checkpoint(
        epoch=1, student_config=student.config.model_copy(update={"image_size": 64}),
        student=student.state_dict(), saved_manifest={"datasets": datasets}))
    with (run / "metrics.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "split", "loss", "seg", "cls", "lr", "seconds", "w_seg", "w_cls", "val_dice"])
        for e in range(3):
            w.writerow([e, "train", 2.0 / (e + 1), 1.0 / (e + 1), 1e-3 / (e + 1), 1e-3, 22.0, 1.1, 0.9, ""])
            w.writerow([e, "val", "", "", "", "", "", "", "", 0.2 * e])
    with (run / "gates.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "dataset", "stage", "teacher", "weight"])
        for e in range(3):
            w.writerows([[e, "nnunet", "dec3", "sam", 0.6], [e, "nnunet", "dec3", "clip", 0.4],
                         [e, "nnunet", "enc4", "clip", 1.0]])
    return run


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("layouts")
    return {"aptos2019": make_aptos(tmp / "aptos"), "nnunet": make_nnunet_png(tmp / "nnunet")}


@pytest.fixture(scope="module")
def mixed_run(roots, tmp_path_factory) -> Path:
    """One student: a 5-class head for aptos2019 and a 2-class (road, car) mask decoder."""
    datasets = [{"name": n, "root": str(r)} for n, r in roots.items()]
    return _headed_run(tmp_path_factory.mktemp("mixed"), datasets, 2, {"aptos2019": 5})


def _hand_kappa(t: np.ndarray, p: np.ndarray, k: int) -> float:
    observed = np.zeros((k, k))
    for a, b in zip(t, p, strict=True):
        observed[a, b] += 1
    expected = np.outer(observed.sum(1), observed.sum(0)) / len(t)
    weights = np.array([[(i - j) ** 2 for j in range(k)] for i in range(k)]) / (k - 1) ** 2
    return 1 - (weights * observed).sum() / (weights * expected).sum()


def _hand_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """The probability that a positive outscores a negative (ties count half)."""
    pos, neg = scores[positive], scores[~positive]
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in product(pos, neg)]
    return float(np.mean(wins))


def test_classification_metrics_match_hand_computed_values(mixed_run):
    result = evaluate_run(mixed_run, split="all")
    rows = list(csv.DictReader(result.classes_csv.open()))
    data = build_dataset("aptos2019", _root(mixed_run, "aptos2019"))
    classes = list(data.classes)
    assert len(rows) == 15
    assert list(rows[0])[:5] == ["id", "dataset", "split", "true_class", "predicted_class"]
    probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    t = np.array([classes.index(r["true_class"]) for r in rows])
    p = np.array([classes.index(r["predicted_class"]) for r in rows])
    assert (p == probs.argmax(axis=1)).all() and len(set(p)) > 1  # the heads were spread
    # the true classes are the CSV's grades (make_aptos: grade i % 5)
    assert sorted(t.tolist()) == sorted(i % 5 for i in range(15))
    entry = json.loads(result.json.read_text())["classification"][0]
    assert entry["dataset"] == "aptos2019" and entry["n"] == 15 and entry["graded"] is True
    recalls = [np.mean(p[t == k] == k) for k in range(5)]
    support = np.bincount(t, minlength=5) / len(t)
    precisions = [np.mean(t[p == k] == k) if (p == k).any() else 0.0 for k in range(5)]
    f1s = [2 * a * b / (a + b) if a + b else 0.0 for a, b in zip(precisions, recalls, strict=True)]
    assert entry["accuracy"] == pytest.approx(np.mean(t == p))
    assert entry["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert entry["recall"] == pytest.approx(np.dot(support, recalls))
    assert entry["precision"] == pytest.approx(np.dot(support, precisions))
    assert entry["f1"] == pytest.approx(np.dot(support, f1s))
    assert entry["kappa"] == pytest.approx(_hand_kappa(t, p, 5))
    assert entry["auc"] == pytest.approx(np.mean([_hand_auc(t == k, probs[:, k]) for k in range(5)]))
    confusion = np.array(entry["confusion"])
    assert confusion.sum() == 15 and all(confusion[a, b] >= 1 for a, b in zip(t, p, strict=True))
    assert (np.diag(confusion).sum()) == (t == p).sum()


def _root(run: Path, name: str) -> str:
    manifest = Run(run).load_checkpoint("best").manifest
    return next(d.root for d in manifest.datasets if d.name == name)


def test_multiclass_eval_scores_each_class_and_their_mean(mixed_run):
    result = evaluate_run(mixed_run, split="all", dataset="nnunet")
    summary = json.loads(result.json.read_text())
    assert "classification" not in summary  # only the segmentation dataset was asked for
    assert [(g["dataset"], g.get("class")) for g in summary["groups"]] == [
        ("nnunet", "mean"), ("nnunet", "road"), ("nnunet", "car")]
    rows = list(csv.DictReader(result.csv.open()))
    assert list(rows[0])[:4] == ["id", "dataset", "split", "class"] and len(rows) == 5 * 3
    # Cross-check one image by hand: the student's label map against the PNG label map.
    data = build_dataset("nnunet", _root(mixed_run, "nnunet"))
    sample = data.load(0)
    student, checkpoint = Run(mixed_run).load_student("best")
    pred = Predictor(student, checkpoint.image_size).label_maps([sample.image])[0]
    hand = {}
    for k, name in enumerate(("road", "car"), start=1):
        a, b = pred == k, sample.mask == k
        hand[name] = 1.0 if not (a.any() or b.any()) else 2 * (a & b).sum() / (a.sum() + b.sum())
    mine = {r["class"]: float(r["dice"]) for r in rows if r["id"] == sample.id}
    assert mine["road"] == pytest.approx(hand["road"]) and mine["car"] == pytest.approx(hand["car"])
    assert mine["mean"] == pytest.approx((hand["road"] + hand["car"]) / 2)
    mean_group = summary["groups"][0]
    assert mean_group["dice_mean"] == pytest.approx(np.mean([float(r["dice"]) for r in rows
                                                              if r["class"] == "mean"]))
    assert len(list((mixed_run / "eval-all" / "overlays" / "nnunet").glob("*.png"))) == 5


def test_cli_eval_prints_both_tables(mixed_run):
    out = runner.invoke(app, ["eval", "--run", str(mixed_run), "--split", "all"], terminal_width=250)
    assert out.exit_code == 0, out.output
    assert "classification" in out.output and "balanced" in out.output and "kappa" in out.output
    assert "road" in out.output and "car" in out.output and "per_image_classes.csv" in out.output


def test_report_shows_classification_and_separate_training_panels(mixed_run, monkeypatch):
    import matplotlib.axes

    evaluate_run(mixed_run, split="all")
    said: list[str] = []
    text_of = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text",
                        lambda self, x, y, s, *a, **k: said.append(str(s)) or text_of(self, x, y, s, *a, **k))
    result = build_report(mixed_run, split="all")
    page = result.path.read_text()
    assert "## Classification" in page and "| aptos2019 | all | 15 |" in page
    confusion = mixed_run / "report" / "confusion" / "aptos2019_all.png"
    assert confusion.is_file() and "(confusion/aptos2019_all.png)" in page
    assert "| nnunet | all | car | 5 |" in page  # per-class rows
    # losses, loss weights, learning rate, epoch time and validation: five panels of 4.2 in
    with Image.open(mixed_run / "report" / "curves.png") as im:
        assert im.size[0] == 5 * 420
    assert any(s.startswith("one teacher\n(clip)") for s in said)  # nnunet/enc4 has one teacher
    assert "data:image/png;base64" in result.html.read_text()


def test_predict_writes_label_maps_and_class_probabilities(mixed_run, roots, tmp_path):
    src = roots["nnunet"] / "imagesTr"
    predictor = Predictor.from_run(mixed_run)
    assert predictor.classes.mask == ("road", "car") and predictor.classes.heads["aptos2019"][0] == "no DR"
    summary = predict_paths(predictor, src, tmp_path / "out", roots["nnunet"] / "labelsTr")
    with Image.open(tmp_path / "out" / "masks" / "road_00.png") as im:  # named by the case
        assert im.mode == "P" and set(np.unique(np.asarray(im))) <= {0, 1, 2}
        assert im.getpalette()[3:9] == [230, 159, 0, 86, 180, 233]  # road, car: the overlays' colours
    assert (tmp_path / "out" / "overlays" / "road_00.png").is_file()
    rows = list(csv.DictReader(summary.class_csv.open()))
    assert summary.class_csv == tmp_path / "out" / "class_probabilities.csv" and len(rows) == 5
    assert rows[0]["head"] == "aptos2019" and list(rows[0])[3] == "p_no DR"
    assert sum(float(v) for k, v in rows[0].items() if k.startswith("p_")) == pytest.approx(1.0, abs=1e-5)
    assert summary.results[0].classes["aptos2019"] == rows[0]["predicted_class"]
    # nnU-Net's CASE_0000 images pair with its CASE labels: every case is scored, per class
    assert {r["id"] for r in summary.scores.per_image_rows()} == {f"road_{i:02d}" for i in range(5)}


def test_predict_scores_label_maps_against_masks(mixed_run, roots, tmp_path):
    src, masks = tmp_path / "in", tmp_path / "gt"
    src.mkdir(), masks.mkdir()
    for i in range(2):
        Image.open(roots["nnunet"] / "imagesTr" / f"road_{i:02d}_0000.png").save(src / f"r{i}.png")
        Image.open(roots["nnunet"] / "labelsTr" / f"road_{i:02d}.png").save(masks / f"r{i}.png")
    summary = predict_paths(Predictor.from_run(mixed_run), src, tmp_path / "out", masks)
    assert {(r["id"], r["class"]) for r in summary.scores.per_image_rows()} == {
        (f"r{i}", c) for i in range(2) for c in ("road", "car", "mean")}


def test_classification_only_run_predicts_probabilities_and_no_masks(roots, tmp_path):
    run = _headed_run(tmp_path, [{"name": "aptos2019", "root": str(roots["aptos2019"])}], 1,
                      {"aptos2019": 5})
    out = runner.invoke(app, ["predict", "--run", str(run), "--input",
                              str(roots["aptos2019"] / "aptos2019-blindness-detection" / "train_images"),
                              "--out", str(tmp_path / "out")], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert not (tmp_path / "out" / "masks").exists()
    rows = list(csv.DictReader((tmp_path / "out" / "class_probabilities.csv").open()))
    assert len(rows) == 15 and {r["head"] for r in rows} == {"aptos2019"}


def test_export_writes_every_head_and_its_recipe(mixed_run, tmp_path):
    from featcache.evaluate.export import export_run

    result = export_run(mixed_run, "torchscript", tmp_path / "s.pt", runs=1)
    assert result.outputs == ["logits", "class_logits.aptos2019"] and result.max_abs_diff <= result.tolerance
    module = torch.jit.load(str(tmp_path / "s.pt"))
    logits, grades = module(torch.rand(1, 3, 64, 64))
    assert logits.shape == (1, 3, 64, 64) and grades.shape == (1, 5)  # background, road, car; 5 grades
    document = json.loads(result.recipe.read_text())
    assert document["outputs"]["class_logits.aptos2019"]["classes"][0] == "no DR"
    assert document["outputs"]["logits"]["classes"] == ["road", "car"]
    out = runner.invoke(app, ["export", "--run", str(mixed_run), "--format", "torchscript", "--out",
                              str(tmp_path / "t.pt"), "--runs", "1"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "class_logits.aptos2019" in out.output and "t.recipe.json" in out.output


def test_multiclass_volumes_evaluate_per_slice_and_predict_nifti_label_maps(tmp_path):
    import nibabel as nib

    from tests.data.synth_layouts import make_nnunet

    root = make_nnunet(tmp_path / "layout")  # 3D MRI, classes left (1) and right (2)
    torch.manual_seed(0)
    student = Student(TINY.model_copy(update={"mask_classes": 2})).eval()
    run = tmp_path / "run"
    Run(run).save_checkpoint("best", Checkpoint(
        epoch=0, student_config=student.config.model_copy(update={"image_size": 64}),
        student=student.state_dict(), saved_manifest={"datasets": [{"name": "nnunet", "root": str(root)}]}))
    summary = json.loads(evaluate_run(run, split="all", overlays=False).json.read_text())
    assert [g.get("class") for g in summary["groups"]] == ["mean", "left", "right"]
    assert summary["groups"][0]["n"] == 4 * 6  # every slice of every case once
    data_dir = root / "Dataset501_Tiny"
    src, masks = tmp_path / "in", tmp_path / "gt"
    src.mkdir(), masks.mkdir()
    (src / "case.nii.gz").write_bytes((data_dir / "imagesTr" / "tiny_000_0000.nii.gz").read_bytes())
    (masks / "case.nii.gz").write_bytes((data_dir / "labelsTr" / "tiny_000.nii.gz").read_bytes())
    result = predict_paths(Predictor.from_run(run), src, tmp_path / "out", masks)
    written = nib.load(str(tmp_path / "out" / "masks" / "case.nii.gz"))
    labels = np.asarray(written.dataobj)
    assert labels.shape == (12, 14, 6) and set(np.unique(labels)) <= {0, 1, 2}
    np.testing.assert_allclose(written.affine, np.diag([1.2, 1.1, 3.0, 1.0]))
    rows = {r["class"]: r for r in result.scores.per_image_rows()}
    assert set(rows) == {"left", "right", "mean"} and rows["left"]["hd95_unit"] == "mm"  # scored in 3D


def test_report_of_a_classification_only_run(roots, tmp_path):
    run = _headed_run(tmp_path, [{"name": "aptos2019", "root": str(roots["aptos2019"])}], 1,
                      {"aptos2019": 5})
    out = runner.invoke(app, ["eval", "--run", str(run), "--split", "all"], terminal_width=200)
    assert out.exit_code == 0, out.output
    assert "pooled" not in out.output  # no segmentation table for a run without masks
    page = build_report(run, split="all").path.read_text()
    assert "(confusion/aptos2019_all.png)" in page and "No segmentation dataset was evaluated" in page
