"""Hostile settings for `featcache distill`: each is one named line and exit 1 before any loader
worker starts or any file is written (issue 26)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from featcache.cli import app
from featcache.distill import memory
from featcache.errors import ConfigError, FeatcacheWarning
from featcache.manifest import StudentConfig
from featcache.runs import check_run_dir
from featcache.student import Student
from tests.distill.conftest import TINY_STUDENT, make_manifest

runner = CliRunner()


def _distill(tmp_path: Path, manifest, *sets: str):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest.model_dump(mode="json")))
    args = ["distill", "--manifest", str(path)] + [a for s in sets for a in ("--set", s)]
    res = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert res.exception is None or isinstance(res.exception, SystemExit), (res.output, res.exception)
    assert "Traceback" not in res.output, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    return res, errors


def test_an_image_size_no_machine_holds_is_one_line(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run")
    res, errors = _distill(tmp_path, manifest, "student.image_size=100000")
    assert res.exit_code == 1 and len(errors) == 1, res.output
    assert "student.image_size 100000" in errors[0] and "image_size up to" in errors[0], errors
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_batch_larger_than_the_training_set_says_so(cached_store, tmp_path):
    """Legitimate with a few labels (one batch of everything), so a warning, not an error; the
    memory bound then counts the batch as it is (the training set)."""
    manifest = make_manifest(cached_store, tmp_path / "run")
    said = r"training.batch_size 1000000000 is larger than the training set \(12 items.*one batch of 12"
    with pytest.warns(FeatcacheWarning, match=said):
        res, errors = _distill(tmp_path, manifest, "training.batch_size=1000000000", "training.epochs=1")
    assert res.exit_code == 0 and not errors, res.output


def test_the_cli_prints_a_featcache_warning_as_one_line(capsys):
    import importlib

    cli_app = importlib.import_module("featcache.cli.app")  # the module, not the Typer app
    cli_app._show(FeatcacheWarning("training.batch_size 9 is larger"), FeatcacheWarning, "x.py", 1)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["warning: training.batch_size 9 is larger"], lines


def test_what_fits_is_computed_from_the_free_memory(monkeypatch):
    """With free memory set to exactly what image_size 64 at batch 4 needs, 64 is named as the
    largest size that fits, and 4 as the largest batch at 64."""
    student = Student(StudentConfig(**TINY_STUDENT))
    per_px = 2 * memory.activation_bytes(student, 64) / 64**2 + 4 * 4
    need = int(per_px * 64**2 * 4) + 1

    class Fake:
        class training:
            batch_size = 4
            train_fraction, views = 1.0, "all"

        class student:
            image_size = 96
            in_channels = 3

        class distill:
            enabled, unlabelled_batch, output, output_probes = False, 0, False, "all"
            self_teacher = "none"

        teachers: list = []

    monkeypatch.setattr(memory, "free_bytes", lambda device: (need, "RAM"))
    monkeypatch.setattr(memory, "training_item_count", lambda manifest, sources: 100)
    fits = r"image_size up to 64 fits; at image_size 96 batch_size up to 1 fits"
    with pytest.raises(ConfigError, match=fits):
        memory.check_fits(Fake, student, [], torch.device("cpu"))
    Fake.student.image_size = 64
    memory.check_fits(Fake, student, [], torch.device("cpu"))  # fits exactly: no error


def test_the_probe_leaves_the_student_as_it_was():
    """The probe forward runs in eval mode: BatchNorm statistics and the mode are unchanged."""
    torch.manual_seed(0)
    student = Student(StudentConfig(**TINY_STUDENT))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    memory.activation_bytes(student, 64)
    assert student.training
    for key, value in student.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("where", ["entry", "store", "root"])
def test_run_dir_may_not_be_in_a_store_or_a_root(cached_store, tmp_path, where):
    entry = Path(cached_store.url) / cached_store.entries()[0]
    run_dir = {"entry": entry / "run", "store": Path(cached_store.url), "root": Path("/")}[where]
    before = sorted(p.name for p in entry.iterdir())
    manifest = make_manifest(cached_store, run_dir)
    res, errors = _distill(tmp_path, manifest)
    assert res.exit_code == 1 and len(errors) == 1, res.output
    assert f"run_dir {run_dir}" in errors[0], errors
    assert ("filesystem root" if where == "root" else "feature store") in errors[0], errors
    assert sorted(p.name for p in entry.iterdir()) == before


def test_run_dir_inside_any_zarr_hierarchy_is_refused(tmp_path):
    other = tmp_path / "someone-elses-store"
    other.mkdir()
    (other / "zarr.json").write_text("{}")
    with pytest.raises(ConfigError, match="lies inside .*someone-elses-store"):
        check_run_dir(other / "a" / "run", str(tmp_path / "store"))
    check_run_dir(tmp_path, str(tmp_path / "store"))  # a store in a subfolder of run_dir: fine
