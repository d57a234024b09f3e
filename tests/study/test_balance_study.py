"""`featcache study` over a segmentation and a classification dataset: each task alone and both
together, the classification metrics in results.csv, table.md and study.png, and each run's steps
exactly training.steps."""

from __future__ import annotations

import csv

import yaml
from typer.testing import CliRunner

from featcache.cli import app
from tests.data.synth_layouts import make_classes
from tests.distill.conftest import TINY_STUDENT


def test_balance_study_tables_carry_classification_metrics(tmp_path, blob_registry):
    blobs, pets = {"name": "blobs"}, {"name": "classes", "root": str(make_classes(tmp_path))}
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump({
        "run_dir": str(tmp_path / "single"), "datasets": [blobs, pets], "teachers": [],
        "student": dict(TINY_STUDENT), "distill": {"enabled": False},
        # 3 steps: not a whole number of epochs of these datasets, honoured exactly anyway
        "training": {"steps": 3, "batch_size": 2, "lr": 1e-2, "warmup_epochs": 0, "num_workers": 0},
        "study": {"seeds": [0], "label_fractions": [1.0],
                  "arms": [{"name": "segmentation alone", "overrides": {"datasets": [blobs]}},
                           {"name": "classification alone", "overrides": {"datasets": [pets]}},
                           {"name": "both", "overrides": {"training.steps": 6}}]}}))
    out = tmp_path / "study"
    result = CliRunner().invoke(app, ["study", "--manifest", str(manifest), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["arm"], r["test"], r["metric"]) for r in rows] == [
        ("1", "blobs", "dice"), ("2", "classes", "accuracy"), ("3", "blobs", "dice"),
        ("3", "classes", "accuracy")]
    assert [int(r["steps"]) for r in rows] == [3, 3, 6, 6]
    for r in rows:
        assert 0 <= float(r["score"]) <= 1
        assert r["score"] == (r["dice_mean"] if r["metric"] == "dice" else r["accuracy"])
    assert all(r["balanced_accuracy"] and r["f1"] for r in rows if r["metric"] == "accuracy")
    table = (out / "table.md").read_text()
    assert "| score |" in table and "classes test (accuracy)" in table
    # In the classification setting the reference arm (segmentation alone) has no rows: Δ is against arm 2.
    assert "| 3 | both | full labels, classes test (accuracy) |" in table and "(vs 2)" in table
    assert (out / "study.png").stat().st_size > 10_000
    assert "test accuracy" in result.output


def test_an_arms_relative_dataset_root_is_read_from_the_manifests_folder(tmp_path):
    """As the base's roots are: manifests/study-multitask.yaml names its data from manifests/."""
    from featcache.study.spec import read_study

    folder = tmp_path / "manifests"
    folder.mkdir()
    manifest = folder / "m.yaml"
    manifest.write_text(yaml.safe_dump({
        "datasets": [{"name": "classes", "root": "../data/a"}],
        "study": {"arms": [{"name": "alone", "overrides": {"datasets": [{"name": "classes",
                                                                          "root": "../data/b"}]}}]}}))
    data, spec = read_study(manifest)
    here = tmp_path.resolve() / "manifests"
    assert data["datasets"][0]["root"] == str(here / "../data/a")
    assert spec.arms[0].overrides["datasets"][0]["root"] == str(here / "../data/b")
