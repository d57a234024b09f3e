"""Faults that need a real local folder: SIGKILL mid-shard, a read-only filesystem."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featcache.errors import IncompleteEntryError, ReadOnlyStoreError
from featcache.store import FeatureStore, gc, verify_entry
from tests.store.storehelpers import (
    ATTRS,
    KEY,
    assert_same,
    fill,
    make_layout,
    snapshot,
    stats_for,
    write_all,
)

HERE = Path(__file__).parent


def test_sigkilled_writer_then_resume(tmp_path):
    url = str(tmp_path / "store")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent.parent), str(HERE)])}
    proc = subprocess.Popen([sys.executable, str(HERE / "writer_worker.py"), url, "{}", "doomed", "hang"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "data written", proc.stderr.read()[-2000:]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    store = FeatureStore(url)  # the lease of a dead local process counts as expired
    assert [k for k in store.backend.list(f"{KEY}/levels/fine/c") if "/c/0/" in k]  # data is there
    with pytest.raises(IncompleteEntryError):
        store.open(KEY)
    assert store.open(KEY, allow_incomplete=True).committed_fraction == 0.0
    writer = store.create_entry(KEY, make_layout(), ATTRS)
    write_all(writer, use_claims=True)
    writer.finalize(stats_for(writer.layout), {})
    reference = FeatureStore(tmp_path / "ref")
    fill(reference)
    assert_same(snapshot(store, KEY), snapshot(reference, KEY))
    assert verify_entry(store.open(KEY), store.backend).ok


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_filesystem_path(tmp_path):
    fill(FeatureStore(tmp_path / "store"))
    for path in [tmp_path / "store", *(tmp_path / "store").rglob("*")]:
        if path.is_dir():
            path.chmod(0o555)
    try:
        store = FeatureStore(tmp_path / "store")  # not flagged read-only: detected
        assert store.read_only and store.entries() == [KEY]
        assert store.open(KEY).read(0, "fine").shape == (2, 4, 4, 4)
        assert verify_entry(store.open(KEY), store.backend).ok
        with pytest.raises(ReadOnlyStoreError, match="not writable"):
            store.create_entry("other.x.1", make_layout(), {})
        with pytest.raises(ReadOnlyStoreError, match="not writable"):
            gc(store)
    finally:
        for path in [tmp_path / "store", *(tmp_path / "store").rglob("*")]:
            if path.is_dir():
                path.chmod(0o755)


def test_unwritable_path_opens_read_only(tmp_path, monkeypatch):
    """What a read-only mount looks like to the store, simulated so it also runs as root."""
    fill(FeatureStore(tmp_path / "store"))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK else real_access(p, mode))
    store = FeatureStore(tmp_path / "store")
    assert store.read_only and store.entries() == [KEY]
    assert verify_entry(store.open(KEY), store.backend).ok
    with pytest.raises(ReadOnlyStoreError, match="is not writable"):
        store.create_entry("other.x.1", make_layout(), {})
    with pytest.raises(ReadOnlyStoreError, match="is not writable"):
        store.remove(KEY)


def test_read_only_flag_refuses_writer_reopen(tmp_path):
    fill(FeatureStore(tmp_path / "store"))
    ro = FeatureStore(tmp_path / "store", read_only=True)
    with pytest.raises(ReadOnlyStoreError, match="read-only"):
        ro.create_entry(KEY, make_layout(), ATTRS)
    np.testing.assert_array_equal(ro.open(KEY).read_many([1], "coarse")[0], ro.open(KEY).read(1, "coarse"))
