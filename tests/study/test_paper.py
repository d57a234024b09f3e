"""pipelines/paper.py end to end on miniature BUSI, CVC-ClinicDB and MSD layouts with tiny random
teachers, plus the study-file validation users rely on."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import yaml

from featcache.errors import ConfigError
from featcache.study.paper import run_paper
from featcache.study.paper_config import load_study_config
from tests.data.synth_layouts import make_aptos, make_busi, make_cvc, make_msd
from tests.study.conftest import TINY_SAM, TINY_STUDENT, TINY_TIMM

ROOT = Path(__file__).resolve().parents[2]


def _study(tmp_path: Path) -> dict:
    return {
        "store": str(tmp_path / "store"), "out": str(tmp_path / "paper"),
        "datasets": [{"name": "busi", "root": str(make_busi(tmp_path / "busi"))},
                     {"name": "cvc-clinicdb", "root": str(make_cvc(tmp_path / "cvc", n=8))},
                     {"name": "msd", "label": "msd-tiny", "root": str(make_msd(tmp_path / "msd"))},
                     {"name": "aptos2019", "root": str(make_aptos(tmp_path / "aptos"))}],
        "teachers": copy.deepcopy([TINY_SAM, TINY_TIMM]),
        "extraction": {"precision": "fp16", "batch_size": 4, "device": "cpu"},
        "student": dict(TINY_STUDENT),
        "training": {"epochs": 1, "batch_size": 4, "seed": 0, "device": "cpu"},
    }


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _csv(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_paper_pipeline_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_study_config(_write(tmp_path, _study(tmp_path)))
    result = run_paper(config)
    out = tmp_path / "paper"
    for name in ("table.md", "table.tex", "results.csv", "cache.csv"):
        assert (out / name).is_file()
    rows = _csv(out / "results.csv")
    assert [r["dataset"] for r in rows] == ["busi", "cvc-clinicdb", "msd-tiny"]
    for r in rows:
        assert int(r["n_test"]) >= 1
        assert 0.0 <= float(r["dice_mean"]) <= 1.0 and 0.0 <= float(r["pooled_dice"]) <= 1.0
        assert int(r["student_params"]) == result.student_params > 0
    # compression: the teachers' parameters as recorded in the store, over the student's
    total = sum(result.teacher_params.values())
    assert set(result.teacher_params) == {"sam", "timm"} and total > 0
    assert float(rows[0]["compression_ratio"]) == pytest.approx(total / result.student_params, abs=0.01)
    cache = _csv(out / "cache.csv")
    assert len(cache) == 8 and {c["status"] for c in cache} == {"extracted"}
    # the classification dataset has its own table: the paper's metrics, kappa for graded labels
    (aptos,) = _csv(out / "classification.csv")
    assert aptos["dataset"] == "aptos2019" and int(aptos["n_test"]) >= 1
    assert 0.0 <= float(aptos["accuracy"]) <= 1.0 and aptos["kappa"] != ""
    assert all(float(c["size_mib"]) > 0 for c in cache)
    table = (out / "table.md").read_text()
    assert "msd-tiny" in table and "Compression ratio" in table and "balanced_accuracy" in table
    # a re-run: every entry is a cache hit and the finished run is reused, not retrained
    mtime = (out / "run" / "checkpoints" / "best.pt").stat().st_mtime_ns
    again = run_paper(config)
    assert {c["status"] for c in again.cache} == {"cached"}
    assert (out / "run" / "checkpoints" / "best.pt").stat().st_mtime_ns == mtime
    assert again.rows == result.rows


def test_unknown_key_is_rejected(tmp_path):
    data = _study(tmp_path)
    data["teachers"][0]["checkpoints"] = "x.pth"
    with pytest.raises(ConfigError, match=r"teachers\.0\.checkpoints"):
        load_study_config(_write(tmp_path, data))


def test_manifest_sections_are_validated_at_load(tmp_path):
    data = _study(tmp_path)
    data["training"]["epoch"] = 3
    with pytest.raises(ConfigError, match="training.epoch"):
        load_study_config(_write(tmp_path, data))


def test_loader_used_twice_needs_labels(tmp_path):
    data = _study(tmp_path)
    data["datasets"].append({"name": "busi", "root": data["datasets"][0]["root"]})
    with pytest.raises(ConfigError, match="listed twice.*label"):
        load_study_config(_write(tmp_path, data))


def test_example_config_parses_and_marks_its_placeholders():
    """manifests/paper-example.yaml documents the format: valid, the paper's six datasets, three teachers, and
    every path is an obvious placeholder (it is never run)."""
    path = ROOT / "manifests" / "paper-example.yaml"
    config = load_study_config(path)
    # the paper's six: four segmentation, two classification; its teachers featcache can load
    assert [d.title for d in config.datasets] == ["busi", "kvasir-seg", "covid-ct", "msd-heart",
                                                  "aptos2019", "isic2017"]
    assert [t.alias or t.name for t in config.teachers] == ["medsam", "retfound", "litemedsam"]
    assert all("global" in t.levels for t in config.teachers)
    paths = [d.root for d in config.datasets] + [t.checkpoint for t in config.teachers if t.checkpoint]
    assert paths and all("EDIT-ME" in p for p in paths)


def test_the_example_names_every_missing_path_at_once(capsys):
    """A newcomer who runs the example (or forgets a placeholder) learns every path to edit in one
    try, not one per run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("paper_pipeline", ROOT / "pipelines" / "paper.py")
    paper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(paper)
    assert paper.main(["--config", str(ROOT / "manifests" / "paper-example.yaml")]) == 1
    text = " ".join(capsys.readouterr().out.split())
    assert "8 path(s) do not exist" in text
    for name in ("busi root", "kvasir-seg root", "covid-ct root", "msd-heart root", "aptos2019 root",
                 "isic2017 root", "medsam checkpoint", "retfound checkpoint"):
        assert name in text, name
