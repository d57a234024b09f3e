import numpy as np

from featcache.data.views import ViewParams, apply_view
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore


def test_extract_then_cache_hit(tmp_path, blobs, tiny_teacher):
    store = FeatureStore(tmp_path / "s")
    first = extract(blobs, tiny_teacher, store, ExtractSettings(views=2, shard_size=4, batch_size=3))
    assert first.status == "extracted" and first.shards_written == 3
    reader = store.open(first.key)
    assert reader.ids == tuple(blobs.ids)
    # Stored features equal a direct forward pass on the recorded view (fp16 tolerance).
    i, view = 5, 1
    sample = blobs.load(i)
    params = ViewParams.from_array(reader.view_params(i)[view])
    image, _ = apply_view(sample.image, None, params)
    x, box = tiny_teacher.prepare(image)
    direct = tiny_teacher.extract(x[None], ["fine"])["fine"][0].numpy()
    np.testing.assert_allclose(reader.read(i, "fine", view), direct, atol=2e-3, rtol=1e-2)
    np.testing.assert_allclose(reader.frames(i)[view], box)
    # Statistics match a direct computation over everything stored.
    allf = np.stack([reader.read(k, "coarse") for k in range(len(reader.ids))])
    np.testing.assert_allclose(reader.stats("coarse")["mean"], allf.mean(axis=(0, 1, 3, 4)), rtol=1e-4,
                               atol=1e-5)
    again = extract(blobs, tiny_teacher, store, ExtractSettings(views=2, shard_size=4, batch_size=3))
    assert again.status == "cached" and again.key == first.key and again.shards_written == 0


def test_resume_after_crash_is_identical(tmp_path, blobs, tiny_teacher):
    clean = FeatureStore(tmp_path / "clean")
    ref = clean.open(extract(blobs, tiny_teacher, clean, ExtractSettings(shard_size=4)).key)
    crashed = FeatureStore(tmp_path / "crashed")
    result = extract(blobs, tiny_teacher, crashed, ExtractSettings(shard_size=4))
    # Simulate a writer killed after shard 1's data but before its marker.
    group = crashed._root[result.key]
    group["committed"][1] = 0
    meta = dict(group.attrs["featcache"])
    meta["complete"] = False
    group.attrs["featcache"] = meta
    resumed = extract(blobs, tiny_teacher, crashed, ExtractSettings(shard_size=4))
    assert resumed.status == "resumed" and resumed.shards_written == 1
    got = crashed.open(result.key)
    for k in range(len(ref.ids)):
        np.testing.assert_array_equal(got.read(k, "fine"), ref.read(k, "fine"))


def test_writer_threads_write_the_same_bytes(tmp_path, blobs, tiny_teacher):
    """Shards committed by several writer threads are the bytes (and statistics) of one thread."""
    keys = []
    for threads in (1, 3):
        settings = ExtractSettings(views=2, shard_size=2, batch_size=3, writer_threads=threads)
        keys.append(extract(blobs, tiny_teacher, FeatureStore(tmp_path / str(threads)), settings).key)
    assert keys[0] == keys[1]
    one, three = (tmp_path / "1" / keys[0], tmp_path / "3" / keys[0])
    shards = sorted(p.relative_to(one) for p in (one / "levels").rglob("c/*/0/0/0/0"))
    assert len(shards) == 2 * 5  # two levels, five shards of the ten blobs each
    for path in shards:
        assert (one / path).read_bytes() == (three / path).read_bytes(), path
    for level in ("fine", "coarse"):
        a, b = FeatureStore(tmp_path / "1").open(keys[0]), FeatureStore(tmp_path / "3").open(keys[0])
        for name, value in a.stats(level).items():
            np.testing.assert_allclose(b.stats(level)[name], value, rtol=1e-12, atol=1e-15)


def test_automatic_parallelism_scales_with_cores(monkeypatch):
    import pytest

    from featcache.errors import StoreError
    from featcache.extract import pipeline

    for cores, loaders in ((1, 1), (2, 1), (16, 7), (64, 8)):
        monkeypatch.setattr(pipeline, "_cores", lambda n=cores: n)
        assert (pipeline.default_loader_workers(100), pipeline.default_writer_threads()) == (loaders, cores)
        assert pipeline.default_loader_workers(7) == 0  # a few batches: no process start-up
    assert ExtractSettings().loader_workers == -1 and ExtractSettings().writer_threads == 0
    with pytest.raises(StoreError, match="loader_workers"):
        ExtractSettings(loader_workers=-2)
    with pytest.raises(StoreError, match="writer_threads"):
        ExtractSettings(writer_threads=-1)
