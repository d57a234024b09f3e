"""A truncated image mid-dataset: stop naming the file (committed shards stay valid, the re-run
after the fix reuses them), or skip it and record it with skip_bad."""

import numpy as np
import pytest

from featcache.data.registry import build_dataset
from featcache.errors import DatasetError
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore
from tests.extract.helpers import count_forwards, truncate, write_folder

SHARDS_OF_2 = ExtractSettings(shard_size=2, batch_size=2)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATCACHE_CACHE_DIR", str(tmp_path / "cache"))
    return write_folder(tmp_path / "data", n=8, size=16)



def test_bad_file_stops_then_fixed_rerun_reuses_committed_shards(tmp_path, folder, tiny_teacher):
    bad = folder / "images" / "case05.png"
    original = truncate(bad)
    store = FeatureStore(tmp_path / "s")
    with pytest.raises(DatasetError, match="case05.png"):
        extract(build_dataset("folder", folder), tiny_teacher, store, SHARDS_OF_2)
    (key,) = store.entries()
    partial = store.open(key, allow_incomplete=True)
    committed = np.asarray(partial.group["committed"][:]).astype(bool)
    assert committed[:2].all() and not committed[2:].any()  # shards before the bad one survive
    assert partial.read(3, "fine").shape == (1, 8, 16, 16)  # committed data reads fine

    bad.write_bytes(original)  # the fix: a new key (content changed), but shards 0-1 are reused
    calls = count_forwards(tiny_teacher)
    fixed = extract(build_dataset("folder", folder), tiny_teacher, store, SHARDS_OF_2)
    assert fixed.key != key and fixed.status == "resumed" and sum(calls) == 4
    clean_store = FeatureStore(tmp_path / "clean")
    clean = clean_store.open(extract(build_dataset("folder", folder), tiny_teacher, clean_store,
                                     SHARDS_OF_2).key)
    got = store.open(fixed.key)
    for i in range(8):
        np.testing.assert_array_equal(got.read(i, "fine"), clean.read(i, "fine"))
    np.testing.assert_allclose(got.stats("fine")["mean"], clean.stats("fine")["mean"], rtol=1e-9)


def test_skip_bad_records_the_file_in_provenance(tmp_path, folder, tiny_teacher):
    truncate(folder / "images" / "case03.png")
    store = FeatureStore(tmp_path / "s")
    result = extract(build_dataset("folder", folder, skip_bad=True), tiny_teacher, store,
                     ExtractSettings(shard_size=3))
    assert result.status == "extracted" and result.samples == 7 and result.skipped == 1
    reader = store.open(result.key)
    assert "case03" not in reader.ids and len(reader.ids) == 7
    (record,) = reader.meta["dataset"]["skipped"]
    assert record["path"].endswith("case03.png") and "truncated" in record["reason"]


def test_bad_file_error_crosses_loader_processes(tmp_path, folder, tiny_teacher):
    truncate(folder / "images" / "case02.png")
    with pytest.raises(DatasetError, match="case02.png"):
        extract(build_dataset("folder", folder), tiny_teacher, FeatureStore(tmp_path / "s"),
                ExtractSettings(shard_size=2, batch_size=2, loader_workers=1))


def test_a_failed_extraction_leaves_no_empty_entry(tmp_path, monkeypatch):
    """Every image unreadable: the error names the file, and no 0% entry is left for `ls` to show
    or `gc` to collect later."""
    from tests.conftest import TinyTeacher

    monkeypatch.setenv("FEATCACHE_CACHE_DIR", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "data", n=4, size=16)
    for png in (root / "images").glob("*.png"):
        png.write_bytes(b"not a png")
    store = FeatureStore(tmp_path / "store")
    with pytest.raises(DatasetError, match="case0"):
        extract(build_dataset("folder", root), TinyTeacher(), store,
                ExtractSettings(shard_size=2, batch_size=2, loader_workers=0))
    assert store.keys() == []
