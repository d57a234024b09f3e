"""`featcache extract ... --repair`: exactly the shards that fail verification are extracted
again, and the repaired entry is byte for byte a fresh extraction (issue 26)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featcache.cli import app
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore, verify_entry
from tests.conftest import BlobDataset, TinyTeacher
from tests.extract.helpers import count_forwards, write_folder
from tests.store.test_faults import _flip

SETTINGS = ExtractSettings(shard_size=4, batch_size=4, views=2)  # 10 blobs: shards of 4, 4, 2
# attributes that say when and how long, not what the entry holds
WHEN = ("created_utc", "completed_utc", "extract_seconds")


def _files(entry: Path) -> dict[str, bytes]:
    """Every object of an entry; its own zarr.json without the timestamps."""
    out = {str(p.relative_to(entry)): p.read_bytes() for p in entry.rglob("*") if p.is_file()}
    meta = json.loads(out.pop("zarr.json"))
    for key in WHEN:
        meta["attributes"]["featcache"].pop(key, None)
    out["zarr.json"] = json.dumps(meta, sort_keys=True).encode()
    return out


def _entry(tmp_path: Path, name: str) -> tuple[FeatureStore, Path]:
    store = FeatureStore(tmp_path / name)
    key = extract(BlobDataset(), TinyTeacher(), store, SETTINGS).key
    return store, Path(store.url) / key


# name -> (damage of the entry folder, shards that must be re-extracted)
DAMAGE = {
    "level byte flipped": (lambda e: _flip(e / "levels/fine/c/1/0/0/0/0", 0.3), [1]),
    "last (short) level shard deleted": (lambda e: (e / "levels/coarse/c/2/0/0/0/0").unlink(), [2]),
    "frames chunk deleted": (lambda e: (e / "frames/c/0/0/0").unlink(), [0]),
    "checksum record deleted": (lambda e: (e / "checksums/c/2/0/0").unlink(), [2]),
    "report row flipped": (lambda e: _flip(e / "report/fine/c/1/0", 0.5), [1]),
    "stats chunk deleted": (lambda e: (e / "stats/fine/std/c/0").unlink(), []),
    "level zarr.json deleted": (lambda e: (e / "levels/fine/zarr.json").unlink(), []),
    "two shards flipped": (lambda e: [_flip(e / f"levels/fine/c/{k}/0/0/0/0", 0.6) for k in (0, 2)], [0, 2]),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_repair_re_extracts_exactly_the_bad_shards_and_matches_a_fresh_entry(tmp_path, case):
    _, fresh = _entry(tmp_path, "fresh")
    store, entry = _entry(tmp_path, "damaged")
    assert _files(entry) == _files(fresh)  # extraction is deterministic: the comparison is fair
    damage, shards = DAMAGE[case]
    damage(entry)
    assert not verify_entry(FeatureStore(store.url).open(entry.name), store.backend).ok
    teacher = TinyTeacher()
    calls = count_forwards(teacher)
    result = extract(BlobDataset(), teacher, FeatureStore(store.url), SETTINGS, repair=True)
    assert result.status == "repaired" and result.repaired == shards
    layout = FeatureStore(store.url).open(entry.name).layout
    assert sum(calls) == sum(len(range(*layout.shard_range(k))) for k in shards) * layout.views
    assert _files(entry) == _files(fresh)
    assert verify_entry(FeatureStore(store.url).open(entry.name), store.backend).ok
    calls.clear()
    again = extract(BlobDataset(), teacher, FeatureStore(store.url), SETTINGS, repair=True)
    assert again.status == "cached" and again.repaired is None and calls == []


def test_edited_sample_ids_are_restored_from_the_recipe(tmp_path):
    """Edited sample ids are no shard's damage: the entry key fixes them (issue 36), so the repair
    writes them back, extracts nothing, and the entry is byte for byte what it was."""
    _, fresh = _entry(tmp_path, "fresh")
    store, entry = _entry(tmp_path, "s")
    meta = json.loads((entry / "zarr.json").read_text())
    ids = meta["attributes"]["featcache"]["sample_ids"]
    meta["attributes"]["featcache"]["sample_ids"] = [ids[0]] * len(ids)
    (entry / "zarr.json").write_text(json.dumps(meta))
    teacher = TinyTeacher()
    calls = count_forwards(teacher)
    result = extract(BlobDataset(), teacher, FeatureStore(store.url), SETTINGS, repair=True)
    assert result.status == "repaired" and result.repaired == [] and calls == []
    assert _files(entry) == _files(fresh)


def test_cli_repair_and_the_hints_that_name_it(tmp_path):
    root = write_folder(tmp_path / "data", n=3, size=16)
    args = ["extract", "--teacher", "timm", "--arch", "resnet18", "--random-init", "--dataset", "folder",
            "--root", str(root), "--store", str(tmp_path / "s"), "--device", "cpu", "--batch-size", "3"]
    env = {"FEATCACHE_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "250"}
    assert CliRunner().invoke(app, args, env=env).exit_code == 0
    (key,) = FeatureStore(tmp_path / "s").keys()
    shard = next((tmp_path / "s" / key / "levels").glob("*/c/0/0/0/0/0"))
    _flip(shard, 0.4)
    res = CliRunner().invoke(app, ["verify", key, "--store", str(tmp_path / "s")], env=env)
    assert res.exit_code == 1 and "--repair" in res.output, res.output  # the hint names the repair
    res = CliRunner().invoke(app, args, env=env)  # without --repair: a cache hit, still broken
    assert res.exit_code == 0 and "cache hit" in res.output and "--repair" in res.output, res.output
    said = CliRunner().invoke(app, ["verify", key, "--store", str(tmp_path / "s")], env=env).output
    assert "with --root, --checkpoint or --random-init as it was extracted" in said, said
    named = re.search(r"repair: `featcache (extract [^`]+)`", said).group(1).split()
    # the command verify names is the one that repairs, given the options it says to add
    added = ["--random-init", "--root", str(root), "--store", str(tmp_path / "s"), "--device", "cpu"]
    res = CliRunner().invoke(app, [*named, *added], env=env)
    assert res.exit_code == 0 and "re-extracted shard(s) 0" in res.output, res.output
    res = CliRunner().invoke(app, ["verify", key, "--store", str(tmp_path / "s")], env=env)
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, [*args, "--repair"], env=env)
    assert res.exit_code == 0 and "nothing to repair" in res.output, res.output
