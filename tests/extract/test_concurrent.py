"""Two writers on one entry at once: every shard extracted exactly once, both see it complete."""

import threading

import numpy as np

from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore
from tests.conftest import BlobDataset, TinyTeacher
from tests.extract.helpers import count_forwards

SHARDS_OF_2 = ExtractSettings(shard_size=2, batch_size=2)


def test_two_concurrent_runs_split_the_shards(tmp_path):
    url = tmp_path / "s"
    results, errors, calls = [], [], []

    def run():
        teacher = TinyTeacher()
        calls.append(count_forwards(teacher))
        try:
            results.append(extract(BlobDataset(n=12), teacher, FeatureStore(url), SHARDS_OF_2,
                                   wait_poll_s=0.05))
        except Exception as exc:  # surfaced below with its message
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(results) == 2 and results[0].key == results[1].key
    assert sum(r.shards_written for r in results) == 6  # no shard done twice
    assert sum(sum(c) for c in calls) == 12
    reader = FeatureStore(url).open(results[0].key)
    clean = FeatureStore(tmp_path / "clean")
    ref = clean.open(extract(BlobDataset(n=12), TinyTeacher(), clean, SHARDS_OF_2).key)
    for i in range(12):
        np.testing.assert_array_equal(reader.read(i, "coarse"), ref.read(i, "coarse"))
    np.testing.assert_allclose(reader.stats("coarse")["mean"], ref.stats("coarse")["mean"], rtol=1e-9)
