"""Two dask workers on loopback fill the same entry as one worker: bitwise features, same stats."""

import numpy as np
import pytest

from featcache.events import ImagesExtracted, ShardsCommitted
from featcache.extract.jobs import run_job
from featcache.extract.settings import ExtractJob, ExtractSettings
from featcache.store import FeatureStore
from tests.extract.helpers import TINY_VIT, TINY_VIT_ARCH, write_folder

pytest.importorskip("distributed")


def _run(job, url, workers, progress=None):
    settings = ExtractSettings(views=2, device="cpu", batch_size=2, shard_size=2)
    return run_job(job, settings, store_url=url, workers=workers, progress=progress)


def test_two_workers_equal_one_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("FEATCACHE_CACHE_DIR", str(tmp_path / "cache"))
    root = write_folder(tmp_path / "data", n=7)
    job = ExtractJob(teacher="timm", dataset="folder", root=root, arch=TINY_VIT_ARCH,
                     teacher_options=dict(TINY_VIT))
    events = []
    two = _run(job, str(tmp_path / "two"), 2, progress=events.append)
    one = _run(job, str(tmp_path / "one"), 1)
    assert two.status == one.status == "extracted" and two.key == one.key
    assert two.workers == 2 and two.shards_written == 4  # 7 samples in shards of 2
    assert ShardsCommitted(4, 4) in events and ImagesExtracted(14, 14) in events
    a, b = FeatureStore(tmp_path / "two").open(two.key), FeatureStore(tmp_path / "one").open(one.key)
    level = a.layout.levels[0].name
    for i in range(len(a.ids)):
        np.testing.assert_array_equal(a.read(i, level), b.read(i, level))
        np.testing.assert_array_equal(a.view_params(i), b.view_params(i))
    for name in ("mean", "std", "phis"):
        np.testing.assert_allclose(a.stats(level)[name], b.stats(level)[name], rtol=1e-9, atol=1e-12)
    again = _run(job, str(tmp_path / "two"), 2)
    assert again.status == "cached" and again.shards_written == 0
