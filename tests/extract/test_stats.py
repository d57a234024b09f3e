"""Stored statistics equal a direct numpy computation over every stored feature, within float32
accumulation; they are the same bytes however the shards were grouped; the subsampled covariance
keeps PHI-S within its stated tolerance."""

import numpy as np
import torch

from featcache.extract.exactsum import ExactSum
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.extract.stats import PHIS_TOLERANCE, SUBSAMPLE_POSITIONS, ChannelStats, phis_matrix
from featcache.store import FeatureStore


def test_stats_match_numpy_over_the_store(tmp_path, blobs, tiny_teacher):
    store = FeatureStore(tmp_path / "s")
    reader = store.open(extract(blobs, tiny_teacher, store, ExtractSettings(views=2, shard_size=3)).key)
    for level, channels in (("fine", 8), ("coarse", 16)):
        feats = np.stack([reader.read(i, level) for i in range(len(blobs))]).astype(np.float64)
        x = np.moveaxis(feats, 2, -1).reshape(-1, channels)  # every (sample, view, y, x) one row
        stats = reader.stats(level)
        scale = np.abs(x).max()
        # float32 partial sums per shard (added exactly): about 1e-7 relative per value
        np.testing.assert_allclose(stats["mean"], x.mean(0), rtol=1e-5, atol=1e-7 * scale)
        # a dead (constant) channel gets the std floor 1e-6, so dividing by it stays finite
        np.testing.assert_allclose(stats["std"], np.maximum(x.std(0), 1e-6), rtol=1e-4, atol=1e-6 * scale)
        assert int(stats["count"][0]) == len(x)
        cov = np.cov(x, rowvar=False, bias=True)
        w = stats["phis"]
        white = (x - x.mean(0)) @ w.T
        # PHI-S: every dimension of the whitened features has the same variance, 1 (these grids
        # are below SUBSAMPLE_POSITIONS: the covariance is over every position)
        np.testing.assert_allclose(np.diag(w @ cov @ w.T), 1.0, rtol=1e-4)
        np.testing.assert_allclose(white.var(0), 1.0, rtol=1e-4)
        np.testing.assert_allclose(np.trace(w @ cov @ w.T), channels, rtol=1e-4)


def test_phis_falls_back_to_standardisation_off_powers_of_two():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) * np.arange(1, 7)
    cov = np.cov(x, rowvar=False, bias=True)
    np.testing.assert_allclose(phis_matrix(cov), np.diag(1 / np.sqrt(np.diag(cov))))


def test_exact_sum_does_not_depend_on_order():
    rng = np.random.default_rng(2)
    parts = [(rng.standard_normal(50) * 10.0 ** rng.integers(-30, 30, 50)).astype(np.float32)
             for _ in range(40)]
    parts.append(-parts[0])  # cancellation: a float sum loses the small terms, an exact one does not
    forward, backward = ExactSum((50,)), ExactSum((50,))
    for p in parts:
        forward.add(p)
    for p in reversed(parts):
        backward.add(p)
    assert forward.value().tobytes() == backward.value().tobytes()
    want = np.array([float(sum(np.float64(p[i]) for p in parts[1:-1])) for i in range(50)])
    np.testing.assert_allclose(forward.value(), want, rtol=1e-12)  # fsum-like accuracy


def test_merged_accumulators_are_the_same_bytes_in_any_order():
    rng = np.random.default_rng(1)
    shards = [rng.normal(size=(3, 2, 4, 3, 3)).astype(np.float32) for _ in range(4)]
    parts = []
    for shard in shards:
        acc = ChannelStats(4)
        acc.update(shard)
        parts.append(acc)
    ab, ba = ChannelStats(4), ChannelStats(4)
    for acc in parts:
        ab.merge(acc)
    for acc in reversed(parts):
        ba.merge(acc)
    one, other = ab.result(), ba.result()
    assert all(one[k].tobytes() == other[k].tobytes() for k in one)
    x = np.moveaxis(np.concatenate(shards).astype(np.float64), 2, -1).reshape(-1, 4)
    np.testing.assert_allclose(one["mean"], x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one["std"], x.std(0), rtol=1e-5)


def _correlated_planes(planes: int, channels: int, side: int, seed: int) -> torch.Tensor:
    """Smooth latent fields mixed into correlated channels plus noise: (planes, 1, C, side, side)."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(planes, 8, side // 8, side // 8, generator=g)
    latent = torch.nn.functional.interpolate(latent, size=(side, side), mode="bilinear")
    mix = torch.randn(channels, 8, generator=g) * torch.linspace(0.2, 3, channels)[:, None]
    noise = torch.randn(planes, channels, side, side, generator=g)
    x = torch.einsum("ck,pkhw->pchw", mix, latent) + 0.3 * noise
    return (x + torch.linspace(-1, 1, channels)[:, None, None])[:, None].contiguous()


def test_subsampled_phis_is_within_its_tolerance():
    """A 64x64 grid has 4x SUBSAMPLE_POSITIONS positions; applied to the covariance of all of them,
    the PHI-S matrix from the subsample keeps every whitened dimension's variance within
    PHIS_TOLERANCE of 1 (the full one gives exactly 1), and closer as planes add up."""
    worst = []
    for planes in (2, 16):
        feats = _correlated_planes(planes, 64, 64, seed=planes)
        assert 64 * 64 > SUBSAMPLE_POSITIONS
        acc = ChannelStats(64)
        acc.update(feats)
        w = acc.result()["phis"]
        x = np.moveaxis(feats.double().numpy(), 2, -1).reshape(-1, 64)
        cov = np.cov(x, rowvar=False, bias=True)
        worst.append(np.abs(np.diag(w @ cov @ w.T) - 1).max())
    assert worst[0] <= PHIS_TOLERANCE and worst[1] < worst[0], worst
