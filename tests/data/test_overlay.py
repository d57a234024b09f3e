"""Overlays: translucent fills per outcome, the Dice in the corner, a legend strip below."""

import numpy as np
import pytest

from featcache.data.overlay import (
    AGREE_RGB,
    ALPHA,
    FN_RGB,
    FP_RGB,
    MIN_SIDE,
    fill_rgb,
    legend_entries,
    overlay_image,
    overlay_png,
)


def _masks(n: int = 12) -> tuple[np.ndarray, np.ndarray]:
    gt = np.zeros((n, n), bool)
    gt[2:8, 2:8] = True
    pred = np.zeros_like(gt)
    pred[5:11, 5:11] = True
    return pred, gt


def _blend(colour: tuple[int, int, int], grey: float) -> tuple[int, ...]:
    return tuple(int((1 - ALPHA) * grey * 255 + ALPHA * c + 0.5) for c in colour)


def test_fills_tell_agreement_false_positive_and_false_negative_apart():
    pred, gt = _masks()
    rgb = fill_rgb(np.full((12, 12, 1), 0.2), pred, gt)
    base = int(0.2 * 255 + 0.5)
    assert tuple(rgb[6, 6]) == _blend(AGREE_RGB, 0.2)  # both
    assert tuple(rgb[10, 10]) == _blend(FP_RGB, 0.2)  # predicted only
    assert tuple(rgb[2, 2]) == _blend(FN_RGB, 0.2)  # ground truth only
    assert tuple(rgb[0, 11]) == (base,) * 3  # neither: the image untouched
    assert len({AGREE_RGB, FP_RGB, FN_RGB}) == 3


def test_picture_is_enlarged_with_a_legend_band_and_the_dice_in_the_corner():
    pred, gt = _masks()
    picture = overlay_image(np.zeros((12, 12)), pred, gt)
    scale = picture.width // 12
    assert picture.width == 12 * scale and 12 * scale >= MIN_SIDE
    rgb = np.asarray(picture)
    body = rgb[: 12 * scale]
    assert tuple(body[6 * scale + 1, 6 * scale + 1]) == _blend(AGREE_RGB, 0.0)  # pixels stay square
    assert picture.height > 12 * scale  # the legend strip
    band = rgb[12 * scale:]
    for _, colour in legend_entries(True):  # every legend swatch is drawn in its colour
        assert (band == colour).all(axis=2).any()
    corner = body[: scale * 2, : scale * 4]
    assert (corner == 255).all(axis=2).any()  # white text of the Dice label on its dark box
    without_dice = overlay_image(np.zeros((12, 12)), pred, None)
    assert not (np.asarray(without_dice)[: scale * 2, : scale * 4] == 255).all(axis=2).any()


def test_large_images_keep_their_size(tmp_path):
    pred, gt = _masks(300)
    path = overlay_png(np.zeros((300, 320)), np.pad(pred, ((0, 0), (0, 20))),
                       np.pad(gt, ((0, 0), (0, 20))), tmp_path / "o.png", caption="z=3")
    from PIL import Image

    with Image.open(path) as im:
        assert im.width == 320 and im.height > 300


def test_the_corner_dice_is_evaluations_dice():
    from featcache.data.overlay import _dice
    from featcache.evaluate.metrics import dice

    rng = np.random.default_rng(0)
    for _ in range(5):
        pred, gt = rng.random((9, 9)) > 0.5, rng.random((9, 9)) > 0.6
        assert _dice(pred, gt) == pytest.approx(dice(pred, gt))
    empty = np.zeros((4, 4), bool)
    assert _dice(empty, empty) == dice(empty, empty) == 1.0
