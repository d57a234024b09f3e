"""Fault injection: each kind of damage to one entry, against every command that reads the store.

The damaged entry gives one named error (exit 1, no traceback) wherever a command touches its
damaged part; the other entry stays listed, verifiable and readable, bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from featcache.cli import app
from featcache.errors import CorruptEntryError, IncompleteEntryError, StoreError
from featcache.store import FeatureStore, verify_entry
from tests.store.storehelpers import KEY, assert_same, fill, snapshot

OTHER = "blobs.other.fedcba9876543210"
runner = CliRunner()


def _flip(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x55
    path.write_bytes(bytes(data))


def _swap(a: Path, b: Path) -> None:
    tmp = a.with_suffix(".swap")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def _edit_ids(entry: Path) -> None:
    meta = json.loads((entry / "zarr.json").read_text())
    ids = meta["attributes"]["featcache"]["sample_ids"]
    ids[2], ids[3] = ids[3], ids[2]
    (entry / "zarr.json").write_text(json.dumps(meta))


# name -> (damage(entry folder), metadata-level: the entry cannot even be opened)
DAMAGE = {
    "level shard deleted": (lambda e: (e / "levels/fine/c/1/0/0/0/0").unlink(), False),
    "level byte flipped": (lambda e: _flip(e / "levels/fine/c/1/0/0/0/0", 0.3), False),
    "frames chunk deleted": (lambda e: (e / "frames/c/1/0/0").unlink(), False),
    "view_params chunk deleted": (lambda e: (e / "view_params/c/2/0/0").unlink(), False),
    "level zarr.json deleted": (lambda e: (e / "levels/coarse/zarr.json").unlink(), False),
    "stats std byte flipped": (lambda e: _flip(e / "stats/fine/std/c/0", 0.5), False),
    "stats std chunk deleted": (lambda e: (e / "stats/coarse/std/c/0").unlink(), False),
    "stats mean byte flipped": (lambda e: _flip(e / "stats/fine/mean/c/0", 0.5), False),
    "level shards swapped": (lambda e: _swap(e / "levels/fine/c/0/0/0/0/0", e / "levels/fine/c/1/0/0/0/0"),
                             False),
    "sample_ids edited": (_edit_ids, False),
    "checksum record deleted": (lambda e: (e / "checksums/c/1/0/0").unlink(), False),
    "entry zarr.json not json": (lambda e: (e / "zarr.json").write_text("{not json"), True),
    "committed byte flipped": (lambda e: _flip(e / "committed/c/0", 0.2), True),
}


# damage `ls` names without reading a chunk: an array node whose zarr.json is gone
NODE_LEVEL = {"level zarr.json deleted"}


@pytest.fixture
def damaged(tmp_path, request):
    """A store with entries KEY and OTHER; KEY damaged as named by the test's parameter."""
    url = tmp_path / "store"
    store = FeatureStore(url)
    fill(store)
    fill(store, OTHER)
    reference = FeatureStore(tmp_path / "ref")
    fill(reference, OTHER)
    damage, meta_level = DAMAGE[request.param]
    damage(url / KEY)
    return store, snapshot(reference, OTHER), meta_level, request.param in NODE_LEVEL


def _run(*args: str):
    res = runner.invoke(app, list(args), env={"COLUMNS": "250"})
    # an uncaught exception (what a user sees as a traceback) is not a clean exit
    assert res.exception is None or isinstance(res.exception, SystemExit), (res.output, res.exception)
    assert "Traceback" not in res.output, res.output
    return res


def _errors(res) -> list[str]:
    return [line for line in res.output.splitlines() if line.startswith("error:")]


def _read_everything(store: FeatureStore, key: str) -> None:
    reader = store.open(key)
    for i in range(len(reader.ids)):
        for level in reader.levels:
            reader.read(i, level)
            reader.read(i, level, 1)
        reader.frames(i)
        reader.view_params(i)
    for level in reader.levels:
        reader.stats(level)


def _other_intact(store: FeatureStore, reference: dict) -> None:
    fresh = FeatureStore(store.url, read_only=True)
    assert_same(snapshot(fresh, OTHER), reference)
    assert verify_entry(fresh.open(OTHER), fresh.backend).ok


@pytest.mark.parametrize("damaged", list(DAMAGE), indirect=True)
def test_entry_reader_raises_one_named_error(damaged):
    store, reference, _, _ = damaged
    with pytest.raises(CorruptEntryError, match=KEY):
        _read_everything(FeatureStore(store.url, read_only=True), KEY)
    _other_intact(store, reference)


@pytest.mark.parametrize("damaged", list(DAMAGE), indirect=True)
def test_cli_commands_on_a_damaged_entry(damaged):
    store, reference, meta_level, node_level = damaged
    url = str(store.url)
    res = _run("verify", KEY, "--store", url)
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert KEY in res.output
    res = _run("verify", "--store", url)  # every entry: the damaged one fails, the other is ok
    assert res.exit_code == 1 and f"ok {OTHER}" in res.output and "Traceback" not in res.output, res.output
    res = _run("ls", "--store", url)
    assert res.exit_code == 0 and OTHER in res.output and KEY in res.output, res.output
    assert ("DAMAGED" in res.output) == (meta_level or node_level), res.output
    res = _run("ls", "--verify", "--store", url)  # checks as it lists: every damage is named
    assert res.exit_code == 1 and KEY in res.output and ("FAILED now" in res.output or meta_level), res.output
    res = _run("info", KEY, "--store", url)
    assert res.exit_code == (1 if meta_level else 0) and "Traceback" not in res.output, res.output
    if meta_level:
        assert len(_errors(res)) == 1 and KEY in _errors(res)[0], res.output
    assert _run("info", OTHER, "--store", url).exit_code == 0
    res = _run("gc", "--store", url)
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    _other_intact(store, reference)
    res = _run("rm", KEY, "--yes", "--store", url)
    assert res.exit_code == 0, res.output
    assert FeatureStore(url).keys() == [OTHER]
    _other_intact(store, reference)


def test_old_entries_without_checksum_record_still_read(tmp_path):
    """Format 1 (before the checksum record and crc32c on statistics) reads as before."""
    store = FeatureStore(tmp_path / "store")
    fill(store)
    entry = tmp_path / "store" / KEY
    meta = json.loads((entry / "zarr.json").read_text())
    feat = meta["attributes"]["featcache"]
    feat["format_version"] = 1
    feat.pop("stats_crc32c")
    (entry / "zarr.json").write_text(json.dumps(meta))
    reader = FeatureStore(tmp_path / "store").open(KEY)
    assert reader.version == 1
    _read_everything(FeatureStore(tmp_path / "store"), KEY)
    assert verify_entry(reader, store.backend).ok
    (entry / "frames/c/1/0/0").unlink()  # without a record, NaN frames are still caught
    with pytest.raises(CorruptEntryError, match="frames"):
        FeatureStore(tmp_path / "store").open(KEY).frames(2)


def test_every_array_carries_crc32c(tmp_path):
    fill(FeatureStore(tmp_path / "store"))
    for meta_file in (tmp_path / "store" / KEY).rglob("zarr.json"):
        meta = json.loads(meta_file.read_text())
        if meta["node_type"] != "array":
            continue
        codecs = meta["codecs"]
        names = [c["name"] for c in codecs[0]["configuration"]["codecs"]] if \
            codecs[0]["name"] == "sharding_indexed" else [c["name"] for c in codecs]
        assert names[-1] == "crc32c", meta_file


def test_reads_check_the_record_on_the_zarr_path_too(tmp_path):
    """Remote stores read through zarr, which returns zeros for a missing chunk: the checksum
    record catches it."""
    store = FeatureStore(tmp_path / "store")
    fill(store)
    (tmp_path / "store" / KEY / "levels/fine/c/1/0/0/0/0").unlink()
    from featcache.store.reader import EntryReader

    reader = EntryReader(store.open(KEY).group, KEY, fast_path=False)
    np.testing.assert_array_equal(reader.read(0, "fine").shape, (2, 4, 4, 4))
    with pytest.raises(CorruptEntryError, match="case02.*levels/fine"):
        reader.read(2, "fine")


def test_rm_refuses_an_entry_being_written_unless_forced(tmp_path):
    from tests.store.storehelpers import ATTRS, make_layout

    store = FeatureStore(tmp_path / "store")
    writer = store.create_entry(KEY, make_layout(), ATTRS)
    assert writer.claim(0)
    res = _run("rm", KEY, "--yes", "--store", str(store.url))
    assert res.exit_code == 1 and "being written" in res.output and "--force" in res.output
    assert store.keys() == [KEY]
    res = _run("rm", KEY, "--yes", "--force", "--store", str(store.url))
    assert res.exit_code == 0 and store.keys() == []
    assert not (tmp_path / "store" / ".featcache-trash").exists()
    from tests.store.storehelpers import shard_data

    with pytest.raises(StoreError, match="removed while this extract was writing it"):
        writer.write_shard(0, *shard_data(writer.layout, 0))


def test_rm_is_atomic(tmp_path, monkeypatch):
    """A removal that dies midway leaves nothing that looks like an entry."""
    store = FeatureStore(tmp_path / "store")
    fill(store)
    fill(store, OTHER)

    def dies(self, prefix):
        raise StoreError("disk went away")

    monkeypatch.setattr(type(store.backend), "delete_prefix", dies)
    with pytest.raises(StoreError, match="went away"):
        store.remove(KEY)
    assert store.keys() == [OTHER] and store.entries() == [OTHER]


def test_gc_refuses_a_folder_that_is_not_a_store(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(b"x")
    for args in (["gc"], ["rm", KEY, "--yes"]):
        res = _run(*args, "--store", str(folder))
        assert res.exit_code == 1, res.output
        assert "featcache wrote nothing there; set --store to" in res.output, res.output
    assert sorted(p.name for p in folder.iterdir()) == ["cat.png"]


def test_a_bad_store_url_is_said_once():
    res = _run("gc", "--store", "nosuchproto://bucket/store")
    assert res.exit_code == 1, res.output
    assert res.output.count("cannot open store") == 1 and "nosuchproto" in res.output, res.output


def test_a_missing_store_names_the_flag(tmp_path):
    res = _run("ls", "--store", str(tmp_path / "nowhere"))
    assert res.exit_code == 1, res.output
    assert "does not exist; run `featcache extract` first or set --store to the" in res.output, res.output


def test_gc_removes_abandoned_partial_entries_after_their_lease(tmp_path):
    from tests.store.storehelpers import ATTRS, make_layout, shard_data

    url = tmp_path / "store"
    FeatureStore(url).create_entry(KEY, make_layout(), ATTRS)  # a failed extract: nothing committed
    partial = FeatureStore(url).create_entry(OTHER, make_layout(), ATTRS)
    partial.write_shard(0, *shard_data(partial.layout, 0))  # resumable: kept
    res = _run("gc", "--store", str(url))
    assert res.exit_code == 0 and FeatureStore(url).keys() == sorted([KEY, OTHER])  # lease not yet expired
    # "re-run the same extract" would fail the same way: the hint says what to do instead
    with pytest.raises(IncompleteEntryError, match="failed before its first shard.*featcache gc"):
        FeatureStore(url).open(KEY)
    with pytest.raises(IncompleteEntryError, match="re-run the same `featcache extract`"):
        FeatureStore(url).open(OTHER)
    from featcache.store import gc

    report = gc(FeatureStore(url, claim_ttl_s=0.0))
    assert report.entries_removed == [KEY] and FeatureStore(url).keys() == [OTHER]


@pytest.mark.parametrize("command", [["ls"], ["verify"], ["gc"], ["info", KEY]])
def test_a_store_that_is_a_regular_file_says_so(tmp_path, command):
    path = tmp_path / "notes.txt"
    path.write_text("not a store")
    res = _run(*command, "--store", str(path))
    assert res.exit_code == 1 and len(_errors(res)) == 1, res.output
    assert f"{path} is a file, not a folder of features; set --store to" in res.output, res.output
    assert path.read_text() == "not a store"


def test_ls_says_when_each_entry_was_last_verified(tmp_path):
    """`ls` reads only commit markers, so chunk damage shows as 100%: the `verified` column says
    when a full check last ran and what it found; `ls --verify` runs it as it lists."""
    url = str(tmp_path / "store")
    store = FeatureStore(url)
    fill(store)
    fill(store, OTHER)
    line = lambda res, key: next(li for li in res.output.splitlines() if key in li)  # noqa: E731
    res = _run("ls", "--store", url)
    assert res.exit_code == 0 and "never" in line(res, KEY), res.output
    assert _run("verify", "--store", url).exit_code == 0
    res = _run("ls", "--store", url)
    assert "ok 20" in line(res, KEY) and "ok 20" in line(res, OTHER), res.output
    _flip(tmp_path / "store" / KEY / "levels/fine/c/1/0/0/0/0", 0.3)
    res = _run("ls", "--store", url)  # not re-read: still the last outcome, with its time
    assert res.exit_code == 0 and "ok 20" in line(res, KEY), res.output
    res = _run("ls", "--verify", "--store", url)
    assert res.exit_code == 1 and "FAILED now: 1 bad" in line(res, KEY), res.output
    assert "ok (just now)" in line(res, OTHER), res.output
    res = _run("ls", "--store", url)
    assert "FAILED 20" in line(res, KEY) and "ok 20" in line(res, OTHER), res.output


def test_a_missing_node_is_named_by_ls_without_verify(tmp_path):
    url = tmp_path / "store"
    fill(FeatureStore(url))
    (url / KEY / "stats/fine/std/zarr.json").unlink()
    res = _run("ls", "--store", str(url))
    assert res.exit_code == 0 and "DAMAGED" in res.output, res.output
    assert "stats/fine/std has no zarr.json" in res.output and "--repair" in res.output, res.output


def test_swapped_ids_name_the_sample_asked_for_every_time(tmp_path):
    """Ids 2 and 3 swapped in sample_ids: each read names its own sample, on every array, and a
    second read fails like the first (the shard's id check is not skipped once it is cached)."""
    url = tmp_path / "store"
    fill(FeatureStore(url))
    _edit_ids(url / KEY)
    reader = FeatureStore(url).open(KEY)
    for _ in range(2):
        for index, sample in ((2, "case03"), (3, "case02")):
            for read in (lambda i: reader.read(i, "fine"), reader.frames, reader.view_params):
                with pytest.raises(CorruptEntryError, match=rf"sample {sample} \(index {index}\) sample id"):
                    read(index)
    res = _run("verify", KEY, "--store", str(url))
    bad = [line for line in res.output.splitlines() if line.strip().startswith("bad sample")]
    assert bad and all(line.split()[2] in line.split(":", 1)[1] for line in bad), res.output
