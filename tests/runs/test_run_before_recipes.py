"""A run that featcache wrote before the runs/ package and the input recipe existed (commit
ed17505; fixtures/make_run_before_recipes.sh made it: 28 steps on the demo, a 0.11M student)
loads, evaluates and predicts exactly as it did then."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from featcache.evaluate.predict import predict_paths
from featcache.evaluate.predictor import Predictor
from featcache.evaluate.run_eval import evaluate_run
from featcache.runs import Run

FIXTURE = Path(__file__).parent / "fixtures" / "run_before_recipes"


@pytest.fixture(scope="module")
def old_run(tmp_path_factory) -> Path:
    """A copy of the run (eval writes into it), without the answers kept beside it."""
    run = tmp_path_factory.mktemp("old") / "run"
    shutil.copytree(FIXTURE, run, ignore=shutil.ignore_patterns("inputs", "predict", "eval"))
    return run


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_it_loads_with_what_it_was_trained_with(old_run):
    student, checkpoint = Run(old_run).load_student("best")
    assert checkpoint.image_size == 64 and checkpoint.student_config.encoder == "test_efficientnet"
    assert checkpoint.manifest.datasets[0].name == "demo" and checkpoint.training is None
    assert checkpoint.entries == {"demo/litemedsam": "demo.litemedsam.32e6fb5518f8592f"}


def test_it_evaluates_as_it_did(old_run):
    evaluate_run(old_run, "test", overlays=False)
    then, now = _rows(FIXTURE / "eval" / "per_image.csv"), _rows(Run(old_run).eval.per_image_csv)
    assert len(now) == len(then) == 9
    assert [{k: row[k] for k in then[0]} for row in now] == then  # every metric, to the last digit


def test_it_predicts_as_it_did(old_run, tmp_path):
    predict_paths(Predictor.from_run(old_run), FIXTURE / "inputs", tmp_path)
    for name in ("grey.png", "rgb.png"):
        then = np.asarray(Image.open(FIXTURE / "predict" / "masks" / name))
        assert np.array_equal(np.asarray(Image.open(tmp_path / "masks" / name)), then), name
    then, now = (nib.load(p / "masks" / "volume.nii.gz") for p in (FIXTURE / "predict", tmp_path))
    assert np.array_equal(np.asarray(now.dataobj), np.asarray(then.dataobj))
    assert np.array_equal(now.affine, then.affine) and np.asarray(then.dataobj).any()
