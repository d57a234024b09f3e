"""Issue 36's limits that were closed rather than written down: ls says "not verified" beside the
percentage, links that leave the store fail verify, SIGTERM during extract releases its claims."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore
from featcache.store.claims import Claims
from tests.conftest import BlobDataset, TinyTeacher
from tests.hostile.conftest import PYTHON, REPO, child_env, cli
from tests.store.storehelpers import fill


def test_hostile_ls_says_an_entry_was_never_verified(tmp_path):
    url = tmp_path / "store"
    fill(FeatureStore(url))
    res, _ = cli("ls", "--store", url)
    assert "100% (not verified)" in res.output, res.output
    assert cli("verify", "--store", url)[0].exit_code == 0
    res, _ = cli("ls", "--store", url)
    assert "100%" in res.output and "not verified" not in res.output, res.output


def test_hostile_a_shard_linked_outside_the_store_fails_verify_and_is_repaired(tmp_path):
    settings = ExtractSettings(shard_size=4, batch_size=4)
    store = FeatureStore(tmp_path / "store")
    key = extract(BlobDataset(), TinyTeacher(), store, settings).key
    shard = tmp_path / "store" / key / "levels/fine/c/1/0/0/0/0"
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(shard.read_bytes())  # the same bytes: every checksum passes
    shard.unlink()
    shard.symlink_to(outside)
    res, _ = cli("verify", key, "--store", store.url)
    assert res.exit_code == 1 and "levels/fine/c/1/0/0/0/0 is a link to outside the store" in res.output
    result = extract(BlobDataset(), TinyTeacher(), FeatureStore(store.url), settings, repair=True)
    assert result.repaired == [1] and not shard.is_symlink()
    assert cli("verify", key, "--store", store.url)[0].exit_code == 0


def test_hostile_sigterm_during_extract_releases_its_claims(tmp_path):
    store = tmp_path / "store"
    args = ["extract", "--teacher", "tiny", "--dataset", "blobs", "--store", str(store), "--device", "cpu",
            "--batch-size", "1", "--shard-size", "2", "--loader-workers", "0"]
    proc = subprocess.Popen([PYTHON, str(REPO / "tests/hostile/slow_extract.py"), "0.3", *args],
                            env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 90
        key = None
        while time.monotonic() < deadline and proc.poll() is None and key is None:
            keys = FeatureStore(store).keys() if (store / "zarr.json").exists() else []
            claims = list((store / keys[0] / "claims").glob("*.*.json")) if keys else []
            key = keys[0] if claims else None
            time.sleep(0.05)
        assert key is not None, proc.communicate()[0]
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "interrupted: committed shards are kept" in out, out
    assert "Traceback" not in out, out
    left = [json.loads(p.read_text()) for p in (store / key / "claims").glob("*.*.json")]
    assert left == [], left  # nothing for another host to wait out
    assert Claims(FeatureStore(store).backend, key).live() == []
