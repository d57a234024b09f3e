"""Issue 36, item 1: `featcache rm` while an extract writes the entry. Plain rm refuses a live
entry (between shards too, not only while a shard is claimed); `rm --force` makes the writer fail
by name, and it never reports success."""

from __future__ import annotations

import subprocess
import time

from featcache.store import FeatureStore
from tests.hostile.conftest import PYTHON, REPO, child_env, cli


def _extract(tmp_path, store):
    args = ["extract", "--teacher", "tiny", "--dataset", "blobs", "--store", str(store), "--device", "cpu",
            "--batch-size", "1", "--shard-size", "2", "--loader-workers", "0"]
    return subprocess.Popen([PYTHON, str(REPO / "tests/hostile/slow_extract.py"), "0.3", *args],
                            env=child_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _wait_for_entry(store, proc) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        keys = FeatureStore(store).keys() if (store / "zarr.json").exists() else []
        if keys and (store / keys[0] / "claims").is_dir():
            return keys[0]
        time.sleep(0.05)
    raise AssertionError(proc.communicate()[0])


def test_hostile_rm_refuses_a_live_entry_and_force_fails_the_writer_by_name(tmp_path):
    store = tmp_path / "store"
    proc = _extract(tmp_path, store)
    try:
        key = _wait_for_entry(store, proc)
        for _ in range(5):  # along the run: between shards as well as inside one
            res, errors = cli("rm", key, "--yes", "--store", store)
            assert res.exit_code == 1 and "is being written" in errors[0], res.output
            assert "--force" in errors[0], errors
            time.sleep(0.1)
        assert proc.poll() is None, "the extract must still be running"
        res, _ = cli("rm", key, "--yes", "--force", "--store", store)
        assert res.exit_code == 0, res.output
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, out
    assert "Traceback" not in out and "error:" in out, out
    assert f"entry {key} was removed while this extract was writing it" in out, out
    assert "extracted" not in out.split("error:")[1], out  # no success table after the error
    complete = [k for k in FeatureStore(store).entries() if FeatureStore(store).open(k, True).complete]
    assert complete == [], "nothing may look like a finished entry"


def test_hostile_a_plain_rm_after_the_extract_finished_works(tmp_path):
    """The lease is let go when the extract ends: a finished entry is removable as before."""
    from featcache.extract.runner import extract
    from featcache.extract.settings import ExtractSettings
    from tests.conftest import BlobDataset, TinyTeacher

    store = tmp_path / "store"
    key = extract(BlobDataset(n=4), TinyTeacher(), FeatureStore(store), ExtractSettings(shard_size=2)).key
    assert [p.name for p in (store / key / "claims").iterdir()] == ["zarr.json"]  # no lease left
    res, _ = cli("rm", key, "--yes", "--store", store)
    assert res.exit_code == 0 and FeatureStore(store).keys() == [], res.output
