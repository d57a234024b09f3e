"""Overlay pictures meant to be read at a glance, the same in eval, predict, the report and TensorBoard.

Prediction and ground truth are filled with translucent colours (Okabe-Ito, distinguishable with
common colour blindness): agreement bluish green, false positive (predicted only) orange, false
negative (ground truth only) blue; without a ground truth the prediction is orange. The Dice sits
in the top-left corner and a legend in a strip below the image. Small images are enlarged by an
integer factor (nearest neighbour, so pixels stay square and sharp) until the text is legible.

Label maps of a multi-class student (`overlay_classes_image`): each predicted class is filled with
its own colour (CLASS_RGB, the same as in the label-map PNGs' palette), the ground truth of each
class drawn as its outline in that colour, the mean Dice over classes in the corner and one
legend entry per class.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

AGREE_RGB = (0, 158, 115)  # bluish green
FP_RGB = (230, 159, 0)  # orange: predicted, not in the ground truth
FN_RGB = (0, 114, 178)  # blue: in the ground truth, missed
PRED_RGB = FP_RGB  # a prediction without ground truth
ALPHA = 0.5  # the image stays visible under the fill
MIN_SIDE = 256  # enlarge smaller images to at least this many pixels on their short side
# Class k of a label map is CLASS_RGB[(k - 1) % len]: Okabe-Ito first, then further distinct hues.
CLASS_RGB = ((230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
             (213, 94, 0), (204, 121, 167), (153, 153, 153), (128, 0, 0), (0, 128, 128))
_BAND_RGB = (24, 24, 24)
_TEXT_RGB = (255, 255, 255)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """float (H, W) or (H, W, 1|3) in [0, 1] -> uint8 (H, W, 3)."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return (np.clip(img[:, :, :3], 0, 1) * 255 + 0.5).astype(np.uint8)


def legend_entries(with_gt: bool) -> list[tuple[str, tuple[int, int, int]]]:
    if not with_gt:
        return [("prediction", PRED_RGB)]
    return [("agreement", AGREE_RGB), ("false positive", FP_RGB), ("false negative", FN_RGB)]


def fill_rgb(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None) -> np.ndarray:
    """uint8 (H, W, 3) at the image's size: the image with the translucent fills, no text."""
    rgb = to_rgb8(image).astype(np.float32)
    p = np.asarray(pred).astype(bool)
    if gt is None:
        regions = [(p, PRED_RGB)]
    else:
        g = np.asarray(gt).astype(bool)
        regions = [(p & g, AGREE_RGB), (p & ~g, FP_RGB), (~p & g, FN_RGB)]
    for where, colour in regions:
        rgb[where] = (1 - ALPHA) * rgb[where] + ALPHA * np.asarray(colour, np.float32)
    return (rgb + 0.5).astype(np.uint8)


def class_colour(k: int) -> tuple[int, int, int]:
    """The colour of class k >= 1 of a label map."""
    return CLASS_RGB[(k - 1) % len(CLASS_RGB)]


def label_palette(num_classes: int) -> list[int]:
    """A PIL "P" palette (flat RGB list): index 0 black (background), k the class colour."""
    flat = [0, 0, 0]
    for k in range(1, num_classes + 1):
        flat += list(class_colour(k))
    return flat


def fill_classes_rgb(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None,
                     num_classes: int) -> np.ndarray:
    """uint8 (H, W, 3): predicted class k filled translucently in class_colour(k); the ground
    truth's class boundaries (pixels whose 4-neighbourhood leaves the class) drawn opaque."""
    from scipy import ndimage

    rgb = to_rgb8(image).astype(np.float32)
    p = np.asarray(pred)
    for k in range(1, num_classes + 1):
        where = p == k
        rgb[where] = (1 - ALPHA) * rgb[where] + ALPHA * np.asarray(class_colour(k), np.float32)
    if gt is not None:
        g = np.asarray(gt)
        for k in range(1, num_classes + 1):
            region = g == k
            rgb[region & ~ndimage.binary_erosion(region)] = class_colour(k)
    return (rgb + 0.5).astype(np.uint8)


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:  # Pillow's bundled scalable font (needs FreeType); the fixed bitmap font otherwise
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _text_box(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _legend_rows(draw: ImageDraw.ImageDraw, entries, font, width: int, size: int) -> list[list]:
    """Greedy line wrapping of (swatch + label) items into rows no wider than `width`."""
    rows: list[list] = [[]]
    x = 0
    for label, colour in entries:
        item = size + size // 3 + _text_box(draw, label, font)[0]
        if rows[-1] and x + item > width - size // 2:
            rows.append([])
            x = 0
        rows[-1].append((label, colour))
        x += item + size
    return rows


def _legend_band(width: int, entries, size: int) -> Image.Image:
    font = _font(size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    rows = _legend_rows(probe, entries, font, width, size)
    line = round(size * 1.6)
    band = Image.new("RGB", (width, line * len(rows) + size // 2), _BAND_RGB)
    draw = ImageDraw.Draw(band)
    for r, row in enumerate(rows):
        x, y = size // 2, size // 4 + r * line + (line - size) // 2
        for label, colour in row:
            draw.rectangle((x, y, x + size, y + size), fill=colour, outline=_TEXT_RGB)
            x += size + size // 3
            draw.text((x, y + size // 2), label, fill=_TEXT_RGB, font=font, anchor="lm")
            x += _text_box(draw, label, font)[0] + size
    return band


def _corner_label(picture: Image.Image, text: str, size: int) -> None:
    """White text on a dark box in the top-left corner, readable on any image."""
    draw = ImageDraw.Draw(picture)
    font = _font(size)
    w, h = _text_box(draw, text, font)
    pad = max(2, size // 3)
    draw.rectangle((0, 0, w + 2 * pad, h + 2 * pad), fill=_BAND_RGB)
    draw.text((pad, pad + h // 2), text, fill=_TEXT_RGB, font=font, anchor="lm")


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice of two binary masks, empty vs empty 1: evaluate.metrics.dice's default convention
    (this module sits below evaluation, which draws with it; tests check the two agree)."""
    p, g = np.asarray(pred) > 0, np.asarray(gt) > 0
    total = int(p.sum()) + int(g.sum())
    return 1.0 if total == 0 else 2 * int((p & g).sum()) / total


def overlay_image(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None,
                  caption: str | None = None) -> Image.Image:
    """The overlay picture: fills, Dice (with a ground truth) and `caption` in the corner, legend below.

    Its width is the image's times an integer factor (1 unless the image is under MIN_SIDE pixels).
    """
    parts = [] if gt is None else [f"Dice {_dice(pred, gt):.3f}"]
    return _compose(fill_rgb(image, pred, gt), parts + ([caption] if caption else []),
                    legend_entries(gt is not None))


def overlay_classes_image(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None,
                          classes: tuple[str, ...] | list[str], caption: str | None = None) -> Image.Image:
    """The overlay of (H, W) label maps (0 = background, k = classes[k - 1]): fills, ground-truth
    outlines, mean Dice over the classes (with a ground truth) and a legend naming each class."""
    parts = []
    if gt is not None:
        mean = np.mean([_dice(pred == k, gt == k) for k in range(1, len(classes) + 1)])
        parts.append(f"mean Dice {float(mean):.3f}")
    entries = [(name, class_colour(k)) for k, name in enumerate(classes, start=1)]
    if gt is not None:
        entries.append(("outline: ground truth", _TEXT_RGB))
    return _compose(fill_classes_rgb(image, pred, gt, len(classes)), parts + ([caption] if caption else []),
                    entries)


def overlay_classes_png(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None,
                        classes: tuple[str, ...] | list[str], path: Path,
                        caption: str | None = None) -> Path:
    """Write `overlay_classes_image` to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay_classes_image(image, pred, gt, classes, caption).save(path)
    return path


def _compose(filled: np.ndarray, corner: list[str], entries) -> Image.Image:
    """Enlarge small pictures, write the corner text and append the legend band."""
    scale = max(1, math.ceil(MIN_SIDE / max(1, min(filled.shape[:2]))))
    if scale > 1:
        filled = np.repeat(np.repeat(filled, scale, axis=0), scale, axis=1)
    picture = Image.fromarray(filled)
    size = max(11, round(picture.width / 22))
    if corner:
        _corner_label(picture, " · ".join(corner), size)
    band = _legend_band(picture.width, entries, size)
    out = Image.new("RGB", (picture.width, picture.height + band.height))
    out.paste(picture, (0, 0))
    out.paste(band, (0, picture.height))
    return out


def overlay_rgb(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None = None,
                caption: str | None = None) -> np.ndarray:
    """`overlay_image` as a uint8 (H', W', 3) array (TensorBoard takes arrays)."""
    return np.asarray(overlay_image(image, pred, gt, caption))


def overlay_png(image: np.ndarray, pred: np.ndarray, gt: np.ndarray | None, path: Path,
                caption: str | None = None) -> Path:
    """Write the overlay of `pred` (and `gt` when given) on `image` (same H, W) to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    overlay_image(image, pred, gt, caption).save(path)
    return path
