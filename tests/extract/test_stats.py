"""Stored statistics equal a direct numpy computation over every stored feature."""

import numpy as np

from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.extract.stats import ChannelStats, phis_matrix
from featcache.store import FeatureStore


def test_stats_match_numpy_over_the_store(tmp_path, blobs, tiny_teacher):
    store = FeatureStore(tmp_path / "s")
    reader = store.open(extract(blobs, tiny_teacher, store, ExtractSettings(views=2, shard_size=3)).key)
    for level, channels in (("fine", 8), ("coarse", 16)):
        feats = np.stack([reader.read(i, level) for i in range(len(blobs))]).astype(np.float64)
        x = np.moveaxis(feats, 2, -1).reshape(-1, channels)  # every (sample, view, y, x) one row
        stats = reader.stats(level)
        np.testing.assert_allclose(stats["mean"], x.mean(0), rtol=1e-9, atol=1e-12)
        # a dead (constant) channel gets the std floor 1e-6, so dividing by it stays finite
        np.testing.assert_allclose(stats["std"], np.maximum(x.std(0), 1e-6), rtol=1e-7, atol=1e-9)
        assert int(stats["count"][0]) == len(x)
        cov = np.cov(x, rowvar=False, bias=True)
        w = stats["phis"]
        white = (x - x.mean(0)) @ w.T
        # PHI-S: every dimension of the whitened features has the same variance, 1
        np.testing.assert_allclose(np.diag(w @ cov @ w.T), 1.0, rtol=1e-6)
        np.testing.assert_allclose(white.var(0), 1.0, rtol=1e-6)
        np.testing.assert_allclose(np.trace(w @ cov @ w.T), channels, rtol=1e-6)


def test_phis_falls_back_to_standardisation_off_powers_of_two():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) * np.arange(1, 7)
    cov = np.cov(x, rowvar=False, bias=True)
    np.testing.assert_allclose(phis_matrix(cov), np.diag(1 / np.sqrt(np.diag(cov))))


def test_merged_accumulators_equal_one_pass():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(6, 2, 4, 3, 3))
    whole, a, b = ChannelStats(4), ChannelStats(4), ChannelStats(4)
    whole.update(feats)
    a.update(feats[:2])
    b.update(feats[2:])
    merged = a.merge(b).result()
    for name, value in whole.result().items():
        np.testing.assert_allclose(merged[name], value, rtol=1e-10, atol=1e-12)
