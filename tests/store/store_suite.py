"""One store test-suite, subclassed per backend (local, memory, s3) in test_backends.py.

A subclass provides the `target` fixture: (url, storage_options or None), fresh per test, and
`concurrency`: "process" where another process can see the store, "thread" otherwise.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from featcache.errors import CorruptEntryError, IncompleteEntryError, ReadOnlyStoreError, StoreError
from featcache.store import EntryReader, FeatureStore, entry_summary, gc, verify_entry
from featcache.store.fastread import LevelFastPath
from tests.store.storehelpers import (
    ATTRS,
    KEY,
    assert_same,
    expected,
    fill,
    make_layout,
    shard_data,
    snapshot,
    stats_for,
    write_all,
)

HERE = Path(__file__).parent


class StoreSuite:
    concurrency = "process"
    direct_reads = False  # the backend reads a sample straight from its shard file (fastread.py)

    @pytest.fixture
    def target(self):
        raise NotImplementedError("each backend subclass provides its store URL")  # pragma: no cover

    def open(self, target, read_only=False, **kw) -> FeatureStore:
        url, options = target
        return FeatureStore(url, read_only=read_only, storage_options=options, **kw)

    # -- round trip and precision ------------------------------------------------------------
    @pytest.mark.parametrize("precision", ["fp32", "fp16", "fp16-br6", "int8"])
    def test_roundtrip_precision(self, target, precision):
        store = self.open(target)
        fill(store, precision=precision)
        reader = self.open(target, read_only=True).open(KEY)
        assert reader.complete and reader.ids == make_layout().sample_ids
        for i in (0, 3, 5):
            want = expected(reader.layout, i, "fine")
            got = reader.read(i, "fine")
            assert got.dtype == np.float32 and got.shape == want.shape
            if precision == "fp32":
                np.testing.assert_array_equal(got, want)
            elif precision == "fp16":
                np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))
            elif precision == "fp16-br6":  # 6 mantissa bits: relative error <= 2**-7
                assert np.all(np.abs(got - want) <= np.abs(want) * 2.0**-7 + 1e-6)
            else:  # int8: error <= half a quantisation step per (view, channel)
                step = (want.max(axis=(2, 3)) - want.min(axis=(2, 3))) / 255
                assert np.all(np.abs(got - want) <= step[..., None, None] / 2 + 1e-5)
            np.testing.assert_array_equal(reader.read(i, "fine", view=1), got[1])
        report = reader.meta["precision_report"]["fine"]
        assert report["bytes_on_disk"] > 0 and report["precision"] == precision
        assert (report["max_rel_error"] == 0) == (precision == "fp32")
        assert report["mean_rel_error"] < 0.01 and report["max_rel_error"] < 0.01
        many = reader.read_many([5, 0, 3], "coarse")
        np.testing.assert_array_equal(many[1], reader.read(0, "coarse"))
        assert reader.dask("fine").shape == (6, 2, 4, 4, 4)
        np.testing.assert_allclose(np.asarray(reader.dask("fine")[3]), reader.read(3, "fine"), rtol=1e-6)

    @pytest.mark.parametrize("compression", ["blosc", "zstd", "none"])
    def test_backend_sample_reads_equal_zarr(self, target, compression):
        fill(self.open(target), compression=compression)
        reader = self.open(target, read_only=True).open(KEY)
        via_zarr = EntryReader(reader.group, KEY, reader.backend, fast_path=False)
        way = reader.backend.sample_reader(f"{KEY}/levels/fine", reader.group["levels/fine"])
        assert isinstance(way, LevelFastPath) == self.direct_reads
        for i in range(6):
            for level in ("fine", "coarse"):
                for view in (None, 1):
                    got, want = reader.read(i, level, view), via_zarr.read(i, level, view)
                    assert got.shape == want.shape
                    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))  # bitwise

    @pytest.mark.parametrize("precision", ["fp32", "fp16-br6", "int8"])
    def test_write_shard_hands_back_what_readers_decode(self, target, precision):
        """Extraction's statistics come from these values instead of a second encode."""
        writer = self.open(target).create_entry(KEY, make_layout(precision), ATTRS)
        written = [writer.write_shard(k, *shard_data(writer.layout, k)) for k in range(3)]
        writer.finalize(stats_for(writer.layout), {})
        reader = self.open(target, read_only=True).open(KEY)
        per_sample = 2 * (4 * 4 * 4 + 3 * 2 * 2)  # views x (fine + coarse) values
        assert written[0].nbytes == 2 * per_sample * np.dtype(reader.precision.dtype).itemsize
        for level in ("fine", "coarse"):
            back = np.stack([reader.read(i, level) for i in range(6)])
            handed = np.concatenate([w.values[level] for w in written])
            assert handed.dtype == np.float32 and np.array_equal(handed.view(np.uint32), back.view(np.uint32))

    def test_refuses_nan_and_fp16_overflow(self, target):
        store = self.open(target)
        writer = store.create_entry(KEY, make_layout(), ATTRS)
        feats, frames, params = shard_data(writer.layout, 1)
        feats["coarse"][1, 0, 0, 0, 0] = np.inf
        with pytest.raises(StoreError, match="sample case03, level coarse: .*inf/NaN"):
            writer.write_shard(1, feats, frames, params)
        feats["coarse"][1, 0, 0, 0, 0] = 1e6
        with pytest.raises(StoreError, match="case03.*float16 range.*; use precision fp32") as caught:
            writer.write_shard(1, feats, frames, params)
        assert caught.value.fields == ("precision",)  # the CLI says --precision
        assert writer.missing_shards() == [0, 1, 2]

    # -- read-only ---------------------------------------------------------------------------
    def test_read_only_reads_and_refuses_writes(self, target):
        fill(self.open(target))
        ro = self.open(target, read_only=True)
        assert ro.entries() == [KEY]
        assert verify_entry(ro.open(KEY), ro.backend).ok
        assert entry_summary(ro, KEY)["samples"] == 6
        for action in (lambda: ro.create_entry("other.x.1", make_layout(), {}), lambda: ro.remove(KEY),
                       lambda: gc(ro)):
            with pytest.raises(ReadOnlyStoreError, match="read-only"):
                action()

    # -- claims and concurrency --------------------------------------------------------------
    def test_claims_exclusive_expiry_and_takeover(self, target):
        store = self.open(target, claim_ttl_s=30)
        a = store.create_entry(KEY, make_layout(), ATTRS, owner="A")
        b = self.open(target, claim_ttl_s=30).create_entry(KEY, make_layout(), ATTRS, owner="B")
        assert a.claim(0) and a.claim(0)  # re-claiming one's own claim is fine
        assert not b.claim(0)
        assert b.next_shard() == 1 and a.next_shard() == 2 and b.next_shard() is None
        assert a.renew(0)
        a.release(0)
        assert b.claim(0)
        short = self.open(target, claim_ttl_s=0.3).create_entry(KEY, make_layout(), ATTRS, owner="C")
        assert short.claim(0) is False  # B still holds it (30 s)
        c_store = self.open(target, claim_ttl_s=0.3)
        c = c_store.create_entry(KEY, make_layout(), ATTRS, owner="C")
        b.release(1)
        assert c.claim(1)
        time.sleep(0.5)  # C's claim expired: A takes it over (generation 1), C has lost it
        assert a.claim(1) and not c.renew(1)
        a.write_shard(1, *shard_data(a.layout, 1))
        assert not b.claim(1)  # committed shards cannot be claimed

    def test_two_concurrent_writers_match_one_writer(self, target, tmp_path):
        url, options = target
        if self.concurrency == "process":
            procs = [subprocess.Popen([sys.executable, str(HERE / "writer_worker.py"), url,
                                       json.dumps(options or {}), f"w{i}", "claims"],
                                      env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                     for i in range(2)]
            for proc in procs:
                out, err = proc.communicate(timeout=120)
                assert proc.returncode == 0, err.decode()[-2000:]
        else:
            errors = []

            def work(owner):
                try:
                    w = self.open(target).create_entry(KEY, make_layout(n=12), ATTRS, owner=owner)
                    write_all(w, use_claims=True)
                except Exception as exc:  # surfaced below: a thread's error must fail the test
                    errors.append(exc)
            threads = [threading.Thread(target=work, args=(f"t{i}",)) for i in range(2)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            assert not errors, errors
            w = self.open(target).create_entry(KEY, make_layout(n=12), ATTRS)
            w.finalize(stats_for(w.layout), {})
        store = self.open(target)
        assert store.open(KEY).complete
        assert not store.backend.list(f"{KEY}/claims/") or all(
            k.endswith("zarr.json") for k in store.backend.list(f"{KEY}/claims"))
        reference = FeatureStore(tmp_path / "ref")
        fill(reference, n=12)
        assert_same(snapshot(store, KEY), snapshot(reference, KEY))

    def test_put_exclusive_is_create_if_absent(self, target):
        objects = self.open(target).backend
        assert objects.put_exclusive("x/claims/0.0.json", b"first")
        assert not objects.put_exclusive("x/claims/0.0.json", b"second")
        assert objects.get("x/claims/0.0.json") == b"first"

    def test_put_exclusive_is_never_seen_half_written(self, target):
        # a claim read empty counts as expired: a writer that saw one took the shard over and two
        # concurrent extracts both wrote it (CI, test_two_concurrent_runs_split_the_shards)
        objects = self.open(target).backend
        body, seen, done = b"{" + b"x" * 4096 + b"}", set(), threading.Event()

        def read():
            while not done.is_set():
                seen.add(objects.get("x/claims/0.0.json"))

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for _ in range(300):
                assert objects.put_exclusive("x/claims/0.0.json", body)
                objects.delete("x/claims/0.0.json")
        finally:
            done.set()
            reader.join()
        assert seen <= {None, body}

    # -- crashes, gc, corruption -------------------------------------------------------------
    def test_killed_writer_not_visible_then_resumed(self, target, tmp_path):
        store = self.open(target, claim_ttl_s=0.2)
        writer = store.create_entry(KEY, make_layout(), ATTRS, owner="dead")
        writer.write_shard(1, *shard_data(writer.layout, 1))
        assert writer.claim(0)
        feats, _, _ = shard_data(writer.layout, 0)  # data of shard 0, then "killed": no marker
        for name, data in feats.items():
            writer.group[f"levels/{name}"][0:2] = data.astype("float16")
        with pytest.raises(IncompleteEntryError, match="incomplete"):
            store.open(KEY)
        partial = store.open(KEY, allow_incomplete=True)
        with pytest.raises(IncompleteEntryError, match="case00"):
            partial.read(0, "fine")
        np.testing.assert_array_equal(partial.read(2, "fine"),
                                      expected(partial.layout, 2, "fine").astype(np.float16))
        time.sleep(0.3)  # the dead writer's claim expires
        resumed = self.open(target).create_entry(KEY, make_layout(), ATTRS, owner="new")
        write_all(resumed, use_claims=True)
        resumed.finalize(stats_for(resumed.layout), {})
        reference = FeatureStore(tmp_path / "ref")
        fill(reference)
        assert_same(snapshot(store, KEY), snapshot(reference, KEY))

    def test_gc_removes_stale_claims_and_uncommitted_data(self, target):
        store = self.open(target, claim_ttl_s=0.2)
        writer = store.create_entry(KEY, make_layout(), ATTRS, owner="dead")
        writer.write_shard(0, *shard_data(writer.layout, 0))
        assert writer.claim(2)
        feats, _, _ = shard_data(writer.layout, 2)
        for name, data in feats.items():
            writer.group[f"levels/{name}"][4:6] = data.astype("float16")
        live = self.open(target, claim_ttl_s=60).create_entry(KEY, make_layout(), ATTRS, owner="live")
        assert live.claim(1)
        feats1, _, _ = shard_data(writer.layout, 1)
        writer.group["levels/fine"][2:4] = feats1["fine"].astype("float16")
        time.sleep(0.3)
        report = gc(store)
        assert report.claims_removed == 1 and report.shards_cleaned == [(KEY, 2)]
        assert report.bytes_freed > 0
        assert not [k for k in store.backend.list(f"{KEY}/levels/fine/c") if "/c/2/" in k]
        assert [k for k in store.backend.list(f"{KEY}/levels/fine/c") if "/c/1/" in k]  # live claim
        assert store.open(KEY, allow_incomplete=True).read(1, "fine").shape == (2, 4, 4, 4)

    def test_flipped_bytes_found_by_verify_and_named_by_reader(self, target):
        store = self.open(target)
        fill(store)
        rng = random.Random(7)
        chunks = [k for k in store.backend.list(KEY) if "/levels/" in k and "/c/" in k]
        flipped = rng.sample(chunks, 2)
        for key in flipped:
            data = bytearray(store.backend.get(key))
            pos = rng.randrange(len(data))
            data[pos] ^= 0xFF
            store.backend.put(key, bytes(data))
        reader = self.open(target, read_only=True).open(KEY)
        report = verify_entry(reader, store.backend)
        assert not report.ok
        layout = reader.layout
        bad_chunks = {f"{KEY}/levels/{b.what}/c/{b.index // layout.shard_size}/0/0/0/0"
                      for b in report.bad_samples}
        assert bad_chunks == set(flipped)
        bad = report.bad_samples[0]
        with pytest.raises(CorruptEntryError, match=f"sample {bad.sample_id} level {bad.what}"):
            reader.read(bad.index, bad.what)

    def test_verify_reports_missing_stats_and_markers(self, target):
        store = self.open(target)
        fill(store)
        assert verify_entry(store.open(KEY), store.backend).ok
        store.backend.delete_prefix(f"{KEY}/stats/coarse")
        store.backend.delete_prefix(f"{KEY}/levels/fine/c/1")
        report = verify_entry(store.open(KEY), store.backend)
        assert any("statistics for level coarse" in p for p in report.problems)
        assert any("shard 1 has no data object" in p for p in report.problems)

    def test_summary_and_remove(self, target):
        store = self.open(target)
        fill(store)
        row = entry_summary(store, KEY)
        assert row["dataset"] == "blobs" and row["teacher"] == "tiny" and row["views"] == 2
        assert row["levels"] == ["fine", "coarse"] and row["complete"] and row["bytes"] > 0
        store.remove(KEY)
        assert store.entries() == []
        with pytest.raises(StoreError, match="no entry"):
            store.remove(KEY)


def _env() -> dict:
    root = str(HERE.parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, str(HERE)])}
