"""A teacher's `global` level, (C, 1, 1) per sample, through the whole store: extracted beside a
spatial level, read back by featcache's reader and by plain zarr, and its statistics (over
samples, one position each) well defined, PHI-S included, with fewer samples than channels."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from featcache.data.views import ViewParams, apply_view
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.extract.stats import ChannelStats
from featcache.store import FeatureStore, verify_entry
from featcache.teachers.registry import build_teacher
from tests.extract.helpers import TINY_VIT, TINY_VIT_ARCH

LEVELS = ["block1", "global"]


@pytest.fixture(scope="module")
def vit():
    return build_teacher("timm", arch=TINY_VIT_ARCH, **TINY_VIT)  # 32 channels, a power of two


def _extract(tmp_path, blobs, teacher, **settings):
    store = FeatureStore(tmp_path / "s")
    result = extract(blobs, teacher, store, ExtractSettings(shard_size=4, **settings), levels=LEVELS)
    return store, result


def test_global_level_round_trips_through_the_reader_and_plain_zarr(tmp_path, blobs, vit):
    store, result = _extract(tmp_path, blobs, vit, views=2)
    reader = store.open(result.key)
    lv = reader.levels["global"]
    assert (lv.channels, lv.height, lv.width) == (32, 1, 1)
    i, view = 7, 1
    image, _ = apply_view(blobs.load(i).image, None, ViewParams.from_array(reader.view_params(i)[view]))
    direct = vit.extract(vit.prepare(image)[0][None], ["global"])["global"][0].numpy()
    got = reader.read(i, "global", view)
    assert got.shape == (32, 1, 1)
    np.testing.assert_allclose(got, direct, rtol=1e-2, atol=2e-3)  # fp16
    # plain zarr, as FORMAT.md says, without featcache
    entry = zarr.open_group(str(tmp_path / "s"), mode="r")[result.key]
    meta = entry.attrs["featcache"]
    k = meta["sample_ids"].index(blobs.ids[i])
    assert entry["committed"][k // meta["layout"]["shard_size"]] == 1
    raw = entry["levels/global"][k]
    assert raw.shape == (2, 32, 1, 1)
    np.testing.assert_array_equal(raw.astype(np.float32)[view], got)
    np.testing.assert_array_equal(entry["stats/global/mean"][...], reader.stats("global")["mean"])
    # a second extraction of the same levels is a cache hit
    again = extract(blobs, vit, store, ExtractSettings(shard_size=4, views=2), levels=LEVELS)
    assert again.status == "cached" and again.key == result.key


def test_int8_stores_a_one_cell_level_exactly(tmp_path, blobs, vit):
    """int8 keeps a per-(sample, channel) offset and scale: a single value is stored as its offset,
    exactly (the uint8 chunk is all zeros, and still written: a dropped chunk reads as lost)."""
    store, result = _extract(tmp_path, blobs, vit, precision="int8")
    exact = FeatureStore(tmp_path / "fp32")
    ref = exact.open(extract(blobs, vit, exact, ExtractSettings(shard_size=4, precision="fp32"),
                             levels=LEVELS).key)
    reader = store.open(result.key)
    for i in range(len(blobs)):
        np.testing.assert_array_equal(reader.read(i, "global"), ref.read(i, "global"))
    assert verify_entry(reader, store.backend).ok


def test_global_statistics_are_over_samples_and_phis_is_well_defined(tmp_path, blobs, vit):
    store, result = _extract(tmp_path, blobs, vit, views=2)
    reader = store.open(result.key)
    x = np.stack([reader.read(i, "global") for i in range(len(blobs))]).reshape(-1, 32).astype(np.float64)
    assert len(x) == 20 < 32  # 10 samples x 2 views: a rank-deficient covariance
    stats = reader.stats("global")
    assert int(stats["count"][0]) == 20
    # float32 partial sums (added exactly): float32 precision, not float64's
    np.testing.assert_allclose(stats["mean"], x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["std"], np.maximum(x.std(0), 1e-6), rtol=1e-4, atol=1e-6)
    cov = np.cov(x, rowvar=False, bias=True)
    w = stats["phis"]
    assert np.isfinite(w).all()
    # PHI-S's promise holds at any rank: every whitened dimension has variance 1, total C
    np.testing.assert_allclose(np.diag(w @ cov @ w.T), 1.0, rtol=1e-4)
    np.testing.assert_allclose(((x - x.mean(0)) @ w.T).var(0), 1.0, rtol=1e-4)


def test_one_cell_statistics_equal_one_accumulation_per_sample():
    """The 1x1 fast path (all samples in one product) gives the sums of one update per sample."""
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(5, 2, 8, 1, 1)).astype(np.float32)
    batched, each = ChannelStats(8), ChannelStats(8)
    batched.update(feats)
    for sample in feats:
        for view in sample:
            each.update(view[None])
    for name, value in each.result().items():
        np.testing.assert_allclose(batched.result()[name], value, rtol=1e-5, atol=1e-6)


def test_a_single_sample_gives_finite_statistics():
    """One image, one position: no variance. Statistics stay finite and normalise it to zero."""
    from featcache.distill.resample import normalise

    one = np.random.default_rng(1).normal(size=(1, 1, 8, 1, 1)).astype(np.float32)
    acc = ChannelStats(8)
    acc.update(one)
    stats = acc.result()
    assert all(np.isfinite(v).all() for v in stats.values())
    for transform in (1 / np.maximum(stats["std"], 1e-6), stats["phis"]):
        norm = (stats["mean"].astype(np.float32), transform.astype(np.float32))
        np.testing.assert_allclose(normalise(one[0, 0], norm), 0.0, atol=1e-6)
