"""Issue 36, items 22-23 and the manifest limits: settings that used to end in a traceback, or to
be accepted and do nothing, are one named line (or a warning) before any worker starts."""

from __future__ import annotations

import pytest
import yaml

from featcache.errors import FeatcacheWarning
from tests.distill.conftest import make_manifest
from tests.hostile.conftest import cli


def _distill(tmp_path, manifest, *sets):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest.model_dump(mode="json")))
    return cli("distill", "--manifest", path, *[a for s in sets for a in ("--set", s)])


@pytest.mark.parametrize("setting, said", [
    ("training.seed=-5", "training.seed"),  # item 22: was a numpy traceback
    ("training.seed=4294967296", "training.seed"),
    ("training.views=0", "training.views"),
    ("distill.loss_weights.feat=-1", "loss weights must be >= 0"),
])
def test_hostile_bad_settings_are_one_line(cached_store, tmp_path, setting, said):
    res, errors = _distill(tmp_path, make_manifest(cached_store, tmp_path / "run"), setting)
    assert res.exit_code == 1 and said in errors[0], res.output
    assert not (tmp_path / "run").exists()


def test_hostile_unlabelled_batch_is_bounded_by_the_memory_check(cached_store, tmp_path):
    """Item 23: a billion unlabelled images per batch is refused before anything allocates."""
    manifest = make_manifest(cached_store, tmp_path / "run")
    res, errors = _distill(tmp_path, manifest, "training.train_fraction=0.5",
                           "distill.unlabelled_batch=1000000000")
    assert res.exit_code == 1 and "distill.unlabelled_batch 1000000000" in errors[0], res.output
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_hostile_settings_that_do_nothing_say_so(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run")
    with pytest.warns(FeatcacheWarning, match="unlabelled_batch 4 has no effect: training.train_fraction"):
        res, _ = _distill(tmp_path, manifest, "distill.unlabelled_batch=4", "training.epochs=1")
    assert res.exit_code == 0, res.output
    with pytest.warns(FeatcacheWarning, match="output_probes best has no effect: output distillation is off"):
        res, _ = _distill(tmp_path, manifest, "distill.output_probes=best", "training.epochs=1",
                          "run_dir=" + str(tmp_path / "run2"))
    assert res.exit_code == 0, res.output


def test_hostile_an_unknown_teacher_is_not_hinted_as_an_extract(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run")
    res, errors = _distill(tmp_path, manifest, "teachers.0.name=nosuch")
    assert res.exit_code == 1 and "'nosuch' is no teacher featcache knows" in errors[0], res.output
    assert "extract --teacher nosuch" not in res.output
