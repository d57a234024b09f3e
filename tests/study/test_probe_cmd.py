"""`featcache probe --manifest m.yaml` on a tiny manifest: a linear probe per teacher level from
the cache, scored on validation and test, ranked by validation, as a table, CSV and bar plot."""

from __future__ import annotations

import csv

import yaml
from typer.testing import CliRunner

from featcache.cli import app
from tests.distill.conftest import TINY_STUDENT


def _manifest(tmp_path, store, teachers):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({
        "store": store.url, "datasets": [{"name": "blobs"}], "teachers": teachers,
        "student": dict(TINY_STUDENT), "distill": {"probe_steps": 30},
        "training": {"batch_size": 4, "seed": 0, "device": "cpu"}}))
    return path


def test_probe_cmd_ranks_every_teacher_level_from_the_cache(tmp_path, cached_store):
    teachers = [{"name": "tiny", "levels": {"fine": "dec3"}}, {"name": "tiny2", "levels": {"fine": "dec3"}},
                {"name": "timm", "arch": "vit_tiny_patch16_224", "levels": {"block1": "dec3"}}]
    out = tmp_path / "probe"
    result = CliRunner().invoke(app, ["probe", "--manifest", str(_manifest(tmp_path, cached_store, teachers)),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "probes.csv").open()))
    # every level each entry holds (the manifest names one; the cache has two), the absent one skipped
    assert sorted((r["teacher"], r["level"]) for r in rows) == [
        ("tiny", "coarse"), ("tiny", "fine"), ("tiny2", "coarse"), ("tiny2", "fine")]
    vals = [float(r["val_score"]) for r in rows]
    assert vals == sorted(vals, reverse=True)  # best validation first
    assert all(0 <= float(r[k]) <= 1 for r in rows for k in ("val_score", "test_score"))
    assert {r["grid"] for r in rows} == {"16x16", "8x8"} and {r["dataset"] for r in rows} == {"blobs"}
    assert "skipped teacher timm" in result.output and "linear probes" in result.output
    assert "| blobs | " in (out / "probes.md").read_text()
    assert (out / "probes.png").stat().st_size > 5_000


def test_probe_cmd_with_no_entry_at_all_is_one_clear_error(tmp_path, cached_store):
    absent = {"name": "timm", "arch": "vit_tiny_patch16_224", "levels": {"block1": "dec3"}}  # no entry
    path = _manifest(tmp_path, cached_store, [absent])
    result = CliRunner().invoke(app, ["probe", "--manifest", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "featcache extract" in result.output
