"""Cache hits run no teacher forward; a run killed with SIGKILL resumes to the clean result."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from featcache.cli import app
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore
from tests.extract.helpers import count_forwards, write_folder

REPO = Path(__file__).resolve().parents[2]



def test_cache_hit_runs_no_forward(tmp_path, blobs, tiny_teacher):
    store = FeatureStore(tmp_path / "s")
    calls = count_forwards(tiny_teacher)
    first = extract(blobs, tiny_teacher, store, ExtractSettings(shard_size=4, batch_size=4))
    assert sum(calls) == len(blobs)  # each image exactly once
    calls.clear()
    again = extract(blobs, tiny_teacher, store, ExtractSettings(shard_size=4, batch_size=4))
    assert again.status == "cached" and again.key == first.key and calls == []


def test_cli_reports_cache_hit(tmp_path):
    root = write_folder(tmp_path / "data", n=3, size=16)
    args = ["extract", "--teacher", "timm", "--arch", "resnet18", "--random-init", "--dataset", "folder",
            "--root", str(root), "--store", str(tmp_path / "s"), "--device", "cpu", "--batch-size", "3"]
    env = {"FEATCACHE_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    first = CliRunner().invoke(app, args, env=env)
    assert first.exit_code == 0, first.output
    assert "extracted" in first.output and "shards" in first.output
    again = CliRunner().invoke(app, args, env=env)
    assert again.exit_code == 0 and "cache hit" in again.output and "cached" in again.output


def test_help_lists_distributed_options():
    out = CliRunner().invoke(app, ["extract", "--help"], env={"COLUMNS": "200"}).output
    for option in ("--workers", "--scheduler", "--views", "--skip-bad", "--view-seed"):
        assert option in out


_CHILD = """
import sys, time
from tests.conftest import BlobDataset, TinyTeacher
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore

class Slow(TinyTeacher):
    def _forward_levels(self, x, names):
        time.sleep(0.4)  # slow enough to be killed mid-run
        return super()._forward_levels(x, names)

extract(BlobDataset(n=12), Slow(), FeatureStore(sys.argv[1]),
        ExtractSettings(shard_size=2, batch_size=2, views=2))
"""


def test_resume_after_sigkill_is_identical(tmp_path):
    from tests.conftest import BlobDataset, TinyTeacher

    url = str(tmp_path / "killed")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, url], cwd=REPO, env=env)
    committed = 0
    deadline = time.monotonic() + 60
    while committed < 2 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.2)
        store = FeatureStore(url)
        if store.entries():
            try:  # the child may still be creating the entry's arrays
                committed = int(np.asarray(store.root[store.entries()[0]]["committed"][:]).sum())
            except (KeyError, FileNotFoundError):
                continue
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    store = FeatureStore(url)
    key = store.entries()[0]
    done_before = int(np.asarray(store.root[key]["committed"][:]).sum())
    assert 2 <= done_before < 6, "the child must be killed mid-run"
    # the dead child's claim counts as expired at once: resume does only the missing shards
    settings = ExtractSettings(shard_size=2, batch_size=2, views=2)  # the child's
    resumed = extract(BlobDataset(n=12), TinyTeacher(), store, settings)
    assert resumed.status == "resumed" and resumed.key == key
    assert resumed.shards_written == 6 - done_before
    clean_store = FeatureStore(tmp_path / "clean")
    clean = clean_store.open(extract(BlobDataset(n=12), TinyTeacher(), clean_store, settings).key)
    got = store.open(key)
    for i in range(12):
        for level in ("fine", "coarse"):
            np.testing.assert_array_equal(got.read(i, level), clean.read(i, level))
    # statistics: the same bytes, though the resumed run read its first shards back at the end
    assert _tree(Path(url) / key / "stats") == _tree(tmp_path / "clean" / key / "stats")
    for level in ("fine", "coarse"):
        for name in ("mean", "std", "phis"):
            assert got.stats(level)[name].tobytes() == clean.stats(level)[name].tobytes()


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path: zarr.json metadata and chunks."""
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    assert any("phis" in name for name in files), files.keys()
    return files
