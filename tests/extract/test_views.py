"""Augmentation views: stored parameters replay the exact transform, for the image and its mask."""

import numpy as np

from featcache.data.views import ViewParams, apply_view, sample_view
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore


def _replay(teacher, image, stored_params):
    params = ViewParams.from_array(stored_params)
    view_image, _ = apply_view(image, None, params)
    x, box = teacher.prepare(view_image)
    return teacher.extract(x[None], ["fine"])["fine"][0].numpy(), box


def test_every_stored_view_replays(tmp_path, blobs, tiny_teacher):
    store = FeatureStore(tmp_path / "s")
    settings = ExtractSettings(views=3, shard_size=4, batch_size=1)
    reader = store.open(extract(blobs, tiny_teacher, store, settings).key)
    for i in range(len(blobs)):
        sample = blobs.load(i)
        for view in range(3):
            stored = reader.view_params(i)[view]
            assert ViewParams.from_array(stored) == ViewParams.from_array(
                sample_view(sample.id, view, 0).to_array())
            direct, box = _replay(tiny_teacher, sample.image, stored)
            np.testing.assert_allclose(reader.read(i, "fine", view), direct, atol=2e-3, rtol=1e-2)
            np.testing.assert_allclose(reader.frames(i)[view], box, rtol=1e-6)


def test_replayed_mask_follows_the_image():
    """With an image equal to its mask, the replayed mask equals the replayed image (gamma leaves
    0 and 1 alone; only pixels on the boundary may differ between bilinear and nearest)."""
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 5:25] = 1  # off-centre, so flips and shifts move it
    image = mask.astype(np.float32)[:, :, None]
    for view in (1, 2, 3, 4):
        params = sample_view("case7", view, 0)
        out_image, out_mask = apply_view(image, mask, params)
        inside = (out_image[:, :, 0] > 0.99) | (out_image[:, :, 0] < 0.01)
        assert inside.mean() > 0.9
        np.testing.assert_array_equal(out_mask[inside], (out_image[:, :, 0] > 0.5)[inside])
        assert not np.array_equal(out_mask, mask)  # the view really transforms


def test_view0_is_the_plain_image(tmp_path, blobs, tiny_teacher):
    store = FeatureStore(tmp_path / "s")
    aug = store.open(extract(blobs, tiny_teacher, store, ExtractSettings(views=2, batch_size=1)).key)
    plain = store.open(extract(blobs, tiny_teacher, store, ExtractSettings(views=1, batch_size=1)).key)
    assert aug.key != plain.key
    for i in range(len(blobs)):
        np.testing.assert_array_equal(aug.read(i, "fine", 0), plain.read(i, "fine", 0))
        np.testing.assert_array_equal(aug.view_params(i)[0], ViewParams().to_array())
        assert not np.array_equal(aug.read(i, "fine", 1), aug.read(i, "fine", 0))


def test_views_differ_per_sample_and_repeat_per_seed(tmp_path, blobs, tiny_teacher):
    a = FeatureStore(tmp_path / "a")
    b = FeatureStore(tmp_path / "b")
    ra = a.open(extract(blobs, tiny_teacher, a, ExtractSettings(views=2, view_seed=3)).key)
    rb = b.open(extract(blobs, tiny_teacher, b, ExtractSettings(views=2, view_seed=3)).key)
    params = np.stack([ra.view_params(i)[1] for i in range(len(blobs))])
    assert len({tuple(p) for p in params}) == len(blobs)  # every sample its own view
    for i in range(len(blobs)):
        np.testing.assert_array_equal(ra.view_params(i), rb.view_params(i))
        np.testing.assert_array_equal(ra.read(i, "coarse"), rb.read(i, "coarse"))
    other = a.open(extract(blobs, tiny_teacher, a, ExtractSettings(views=2, view_seed=4)).key)
    assert other.key != ra.key and not np.array_equal(other.view_params(0), ra.view_params(0))
