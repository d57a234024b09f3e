"""Issue 36: the store's edges (items 3, 12-19): folders featcache did not write, and what verify,
ls, distill and `extract --repair` say about damage, each checked against what then works."""

from __future__ import annotations

import json

import pytest

from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore, verify_entry
from tests.conftest import BlobDataset, TinyTeacher
from tests.hostile.conftest import cli
from tests.store.storehelpers import KEY, fill

SETTINGS = ExtractSettings(shard_size=4, batch_size=4, views=2)  # 10 blobs: shards of 4, 4, 2


def test_hostile_a_user_folder_in_the_store_is_never_an_entry(tmp_path):
    """Item 3: `my_notes/` is neither listed as DAMAGED nor removable; real entries still are."""
    url = tmp_path / "store"
    fill(FeatureStore(url))
    notes = url / "my_notes"
    notes.mkdir()
    (notes / "plan.txt").write_text("mine")
    res, _ = cli("ls", "--store", url)
    assert res.exit_code == 0 and "DAMAGED" not in res.output, res.output
    assert "not featcache entries, left alone: my_notes" in res.output, res.output
    for args in (["rm", "my_notes", "--yes"], ["rm", "my_notes", "--yes", "--force"]):
        res, errors = cli(*args, "--store", url)
        assert res.exit_code == 1 and "my_notes" in errors[0] and "not a featcache entry" in errors[0]
    res, _ = cli("gc", "--store", url)
    assert res.exit_code == 0
    assert (notes / "plan.txt").read_text() == "mine"
    assert FeatureStore(url).keys() == [KEY]
    (url / KEY / "zarr.json").unlink()  # a damaged entry is still one: listed and removable
    res, _ = cli("ls", "--store", url)
    assert f"DAMAGED {KEY}" in res.output, res.output
    assert cli("rm", KEY, "--yes", "--store", url)[0].exit_code == 0
    assert (notes / "plan.txt").read_text() == "mine"


def _entry(tmp_path):
    store = FeatureStore(tmp_path / "store")
    key = extract(BlobDataset(), TinyTeacher(), store, SETTINGS).key
    return store, tmp_path / "store" / key


def _meta(entry):
    return json.loads((entry / "zarr.json").read_text())


def _edit_meta(entry, edit) -> None:
    node = _meta(entry)
    edit(node["attributes"]["featcache"])
    (entry / "zarr.json").write_text(json.dumps(node))


def _repair(store):
    return extract(BlobDataset(), TinyTeacher(), FeatureStore(store.url), SETTINGS, repair=True)


def _verified(store, entry) -> bool:
    return verify_entry(FeatureStore(store.url).open(entry.name), store.backend).ok


def test_hostile_verify_names_the_shard_size_its_repair_needs(tmp_path, tiny_registry):
    """Item 12: the repair command verify prints works for an entry of --shard-size 4."""
    import re

    url = str(tmp_path / "s")
    args = ["extract", "--teacher", "tiny", "--dataset", "blobs", "--store", url, "--device", "cpu",
            "--shard-size", "4"]
    assert cli(*args)[0].exit_code == 0
    (key,) = FeatureStore(url).keys()
    shard = tmp_path / "s" / key / "levels/fine/c/1/0/0/0/0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0x55
    shard.write_bytes(bytes(data))
    res, _ = cli("verify", key, "--store", url)
    assert res.exit_code == 1 and "--shard-size 4" in res.output, res.output
    named = re.search(r"repair: `featcache (extract [^`]+)`", res.output).group(1).split()
    res, errors = cli(*named, "--store", url, "--device", "cpu")
    assert res.exit_code == 0 and "re-extracted shard(s) 1" in res.output, (res.output, errors)
    assert cli("verify", key, "--store", url)[0].exit_code == 0


@pytest.mark.parametrize("edit", ["swapped", "bogus", "all one id"])
def test_hostile_edited_sample_ids_are_named_truly_and_repaired(tmp_path, edit):
    """Items 13-14: an edited sample_ids is reported for exactly the positions it changed, each
    with its own text, and the --repair that every message names does repair it."""
    store, entry = _entry(tmp_path)
    before = _meta(entry)
    ids = before["attributes"]["featcache"]["sample_ids"]
    changes = {"swapped": {1: ids[5], 5: ids[1]}, "bogus": {6: "bogus"},
               "all one id": {i: ids[0] for i in range(1, len(ids))}}[edit]
    _edit_meta(entry, lambda m: m["sample_ids"].__setitem__(slice(None), [changes.get(i, x)
                                                                         for i, x in enumerate(ids)]))
    res, _ = cli("verify", entry.name, "--store", store.url)
    assert res.exit_code == 1 and "--repair" in res.output, res.output
    bad = [line.split() for line in res.output.splitlines() if line.strip().startswith("bad sample")]
    if edit != "all one id":  # ids not unique: an entry-wide problem besides the samples
        assert sorted({int(b[4].rstrip(")")) for b in bad}) == sorted(changes), res.output
    for line in res.output.splitlines():  # each line's text names its own sample
        if line.strip().startswith("bad sample"):
            assert f"sample {line.split()[2]} (index {line.split()[4]}" in line, line
    result = _repair(store)
    assert result.status == "repaired" and result.repaired == [], result
    assert _verified(store, entry)
    assert _meta(entry)["attributes"]["featcache"]["sample_ids"] == ids


def test_hostile_distill_names_an_edited_id_as_damage_not_a_split(tmp_path):
    """Item 15: an id edited to "bogus" in an entry extracted with --split all is damage."""
    from featcache.distill.data import Source, _check_samples
    from featcache.errors import CorruptEntryError

    store, entry = _entry(tmp_path)
    _edit_meta(entry, lambda m: m["sample_ids"].__setitem__(6, "bogus"))
    dataset = BlobDataset()
    source = Source(0, dataset, {"tiny": FeatureStore(store.url).open(entry.name)}, 2)
    with pytest.raises(CorruptEntryError, match="extracted with --split all, yet its sample_ids lack "
                                                "'blob06' and names 'bogus'.*--repair"):
        _check_samples(source, dataset.split_indices("all"), "train")


def test_hostile_a_garbled_array_zarr_json_is_repaired(tmp_path):
    """Item 16: verify names it, and --repair recreates the node instead of a JSONDecodeError."""
    store, entry = _entry(tmp_path)
    (entry / "frames/zarr.json").write_text("{garbled")
    res, _ = cli("verify", entry.name, "--store", store.url)
    assert res.exit_code == 1 and "frames" in res.output, res.output
    assert _repair(store).status == "repaired"
    assert _verified(store, entry)


def test_hostile_a_deleted_report_chunk_fails_verify_and_is_repaired(tmp_path):
    """Item 17: a missing chunk is lost data, also in report/ (it reads as NaN)."""
    store, entry = _entry(tmp_path)
    (entry / "report/coarse/c/1/0").unlink()
    for args in (["verify", entry.name], ["ls", "--verify"]):
        res, _ = cli(*args, "--store", store.url)
        assert res.exit_code == 1, res.output
    res, _ = cli("verify", entry.name, "--store", store.url)
    assert "report/coarse" in res.output and "[1]" in res.output, res.output
    assert _repair(store).repaired == [1]
    assert _verified(store, entry)


def test_hostile_a_statistic_without_its_checksum_is_named(tmp_path):
    """Item 18: one key gone from stats_crc32c names the statistic and what is missing."""
    store, entry = _entry(tmp_path)
    _edit_meta(entry, lambda m: m["stats_crc32c"].pop("fine/std"))
    res, _ = cli("verify", entry.name, "--store", store.url)
    assert res.exit_code == 1, res.output
    assert "statistic(s) std of level fine have no checksum in the entry's stats_crc32c" in res.output
    assert "statistics  for" not in res.output
    assert _repair(store).status == "repaired"
    assert _verified(store, entry)


def test_hostile_repairing_a_lost_commit_marker_names_the_shard_it_wrote(tmp_path, tiny_registry):
    """Item 19: the repair line names the shard that the table counts as written."""
    url = str(tmp_path / "s")
    args = ["extract", "--teacher", "tiny", "--dataset", "blobs", "--store", url, "--device", "cpu",
            "--shard-size", "4"]
    assert cli(*args)[0].exit_code == 0
    (key,) = FeatureStore(url).keys()
    (tmp_path / "s" / key / "committed/c/2").unlink()
    res, _ = cli(*args, "--repair")
    assert res.exit_code == 0 and "re-extracted shard(s) 2" in res.output, res.output
    assert cli("verify", key, "--store", url)[0].exit_code == 0


def test_hostile_an_entry_with_more_levels_is_a_hit(tmp_path, tiny_registry):
    """Item 4: asking for fewer levels than an entry of the same recipe holds extracts nothing,
    so distill's `auto` still finds exactly one entry."""
    from tests.extract.helpers import count_forwards

    store = FeatureStore(tmp_path / "store")
    wide = extract(BlobDataset(), TinyTeacher(), store, SETTINGS, levels=["fine", "coarse"])
    teacher = TinyTeacher()
    calls = count_forwards(teacher)
    narrow = extract(BlobDataset(), teacher, store, SETTINGS, levels=["coarse"])
    assert narrow.status == "cached" and narrow.key == wide.key and calls == []
    other = extract(BlobDataset(), TinyTeacher(seed=1), store, SETTINGS, levels=["fine"])
    assert other.status == "extracted" and other.key != wide.key  # other weights: never a hit
    args = ["extract", "--teacher", "tiny", "--dataset", "blobs", "--store", store.url, "--device", "cpu",
            "--shard-size", "4", "--views", "2", "--batch-size", "4", "--levels", "fine"]
    res, _ = cli(*args)
    assert res.exit_code == 0 and "cache hit" in res.output and wide.key in res.output, res.output
    assert len(FeatureStore(store.url).keys()) == 2
