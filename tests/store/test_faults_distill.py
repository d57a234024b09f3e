"""Fault injection against `featcache distill` (tiny student, blob dataset, two tiny teachers):
damage in the entry it trains from is one line and exit 1, also from a DataLoader worker;
damage in another entry does not stop it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from featcache.cli import app
from featcache.data.registry import DATASETS
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore
from tests.conftest import BlobDataset, TinyTeacher
from tests.store.test_faults import _flip

STUDENT = {"encoder": "mobilenetv3_small_050", "encoder_weights": None,
           "decoder_channels": [32, 16, 16, 8, 8], "image_size": 32}
runner = CliRunner()


@pytest.fixture
def two_entries(tmp_path, monkeypatch):
    """Store with entries of teachers tiny and tiny2 on the blob dataset: {teacher: entry folder}."""
    from featcache.registry import Entry

    monkeypatch.setitem(DATASETS, "blobs",
                        Entry(lambda root, **o: BlobDataset(**o), "blobs"))
    store = FeatureStore(tmp_path / "store")
    for seed, name in [(0, "tiny"), (1, "tiny2")]:
        extract(BlobDataset(), TinyTeacher(seed=seed, name=name), store,
                ExtractSettings(views=1, shard_size=4))
    folders = {}
    for key in store.entries():
        folders[store.open(key).meta["teacher"]["name"]] = Path(store.url) / key
    return store, folders


def _distill(tmp_path: Path, store: FeatureStore, workers: int):
    manifest = {"store": store.url, "run_dir": str(tmp_path / f"run{workers}"),
                "datasets": [{"name": "blobs"}],
                "teachers": [{"name": "tiny", "levels": {"fine": "dec3"}}],
                "student": dict(STUDENT),
                "training": {"epochs": 1, "batch_size": 4, "seed": 0, "num_workers": workers}}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest))
    res = runner.invoke(app, ["distill", "--manifest", str(path)], env={"COLUMNS": "250"})
    assert res.exception is None or isinstance(res.exception, SystemExit), (res.output, res.exception)
    assert "Traceback" not in res.output and "Original" not in res.output, res.output
    return res


@pytest.mark.parametrize(("damage", "workers", "what"), [
    (lambda e: [f.unlink() for f in (e / "levels/fine/c").rglob("0") if f.is_file()], 1, "level fine"),
    (lambda e: [_flip(f, 0.999) for f in (e / "levels/fine/c").rglob("0") if f.is_file()], 1, "level fine"),
    (lambda e: [f.unlink() for f in (e / "frames/c").rglob("0") if f.is_file()], 0, "frames"),
    (lambda e: (e / "stats/fine/std/c/0").unlink(), 0, "stats/fine/std"),
    (lambda e: (e / "levels/fine/zarr.json").unlink(), 0, "levels/fine"),
    # its metadata is gone, so only the key tells it held teacher tiny: named as damage all the same
    (lambda e: (e / "zarr.json").unlink(), 0, "is damaged: entry"),
], ids=["level shards deleted (worker)", "level shard indexes flipped (worker)", "frames chunks deleted",
        "stats chunk deleted", "level zarr.json deleted", "entry zarr.json deleted"])
def test_distill_from_a_damaged_entry_is_one_line(two_entries, tmp_path, damage, workers, what):
    store, folders = two_entries
    damage(folders["tiny"])
    res = _distill(tmp_path, store, workers)
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 1 and len(errors) == 1, res.output
    assert folders["tiny"].name in errors[0] and what in errors[0], errors


@pytest.mark.parametrize("damage", [
    lambda e: (e / "zarr.json").write_text("{not json"),
    lambda e: _flip(e / "committed/c/0", 0.2),
], ids=["zarr.json not json", "committed byte flipped"])
def test_distill_ignores_damage_in_another_entry(two_entries, tmp_path, damage):
    store, folders = two_entries
    damage(folders["tiny2"])
    res = _distill(tmp_path, store, 0)
    assert res.exit_code == 0, res.output
