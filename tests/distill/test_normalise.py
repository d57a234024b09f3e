import numpy as np

from featcache.distill.resample import normalise


def test_standardise_and_phis_transforms():
    rng = np.random.default_rng(0)
    feature = rng.normal(3.0, 2.0, (4, 5, 6)).astype(np.float32)
    mean = feature.mean((1, 2))
    std = feature.std((1, 2))
    standardised = normalise(feature, (mean, (1.0 / std).astype(np.float32)))
    np.testing.assert_allclose(standardised.mean((1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(standardised.std((1, 2)), 1.0, rtol=1e-5)

    rotation = np.linalg.qr(rng.normal(size=(4, 4)))[0].astype(np.float32)  # a PHI-S-like matrix
    rotated = normalise(feature, (mean, rotation))
    expected = np.einsum("dc,chw->dhw", rotation, feature - mean[:, None, None])
    np.testing.assert_allclose(rotated, expected, rtol=1e-5, atol=1e-5)
    assert normalise(feature, None) is feature
