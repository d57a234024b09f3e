"""Reading 2D image and mask files (PNG, JPEG, TIFF, BMP, GIF) with errors that name the file.

Every decode is complete (PIL's lazy `open` would accept a PNG cut in half until its pixels are
touched), so a truncated file fails here, at load time, with one line naming it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from featcache.data.base import to_float_image
from featcache.errors import DatasetError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif")
LOSSY_EXTS = (".jpg", ".jpeg")
MASK_MODES = ("auto", "binary", "threshold")
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I", "F")  # 16/32-bit: convert("L") would clip them
_TO_RGB_MODES = ("P", "CMYK", "YCbCr", "HSV", "LAB")  # read "as stored": these become RGB


class FileProblem(DatasetError):
    """A problem with one file; `path` and `reason` are kept apart for skip_bad records. `hint`
    (what to do) is only in the message: a record of a file already left out needs none."""

    def __init__(self, path: Path | str, reason: str, hint: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.hint = hint
        message = f"{path}: {reason}; {hint}" if hint else f"{path}: {reason}"
        super().__init__(message, fields=("skip_bad",) if "skip_bad" in message else ())

    def record(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


def list_images(folder: Path) -> list[Path]:
    """Image files in `folder`, sorted; hidden files (.DS_Store, macOS '._' twins) are ignored."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTS)


def _decode(path: Path) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
            im.load()
    except FileNotFoundError:
        raise FileProblem(path, "file not found") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning) as exc:
        raise FileProblem(path, f"unreadable or truncated image ({exc})",
                          "replace the file, or use skip_bad to leave bad files out") from None
    return im


def decode_image(path: Path, channels: int | None) -> np.ndarray:
    """Decode an image file -> its raw values, (H, W, C) with C = `channels` (1: greyscale by PIL's
    "L", 3: RGB) or, for None, as stored (grey stays one channel, palette and other colour modes
    become RGB, alpha is kept for `to_float_image` to drop). 16-bit greyscale keeps its range."""
    im = _decode(path)
    if im.mode in _WIDE_MODES:
        array = np.asarray(im)
        if channels == 3:
            array = np.repeat(array[:, :, None], 3, axis=2)
    elif channels is None:
        array = _as_stored(im, path)
    else:
        array = np.asarray(im.convert("RGB" if channels == 3 else "L"))
    return array[:, :, None] if array.ndim == 2 else array


def _as_stored(im: Image.Image, path: Path) -> np.ndarray:
    if im.mode in _TO_RGB_MODES:
        im = im.convert("RGB")
    array = np.asarray(im)
    if im.mode == "1":
        return array.astype(np.uint8) * 255
    if array.ndim == 3 and array.shape[2] not in (1, 3, 4):
        raise FileProblem(path, f"image has {array.shape[2]} channels (mode {im.mode}); save it as "
                                "greyscale or RGB")
    return array


def read_image(path: Path, channels: int | None) -> np.ndarray:
    """Decode an image file -> float32 (H, W, C) in [0, 1] (see decode_image; the file type's full
    range is [0, 1]: 8-bit / 255, 16-bit / 65535)."""
    return to_float_image(decode_image(path, channels), str(path))


def resolve_mask_mode(path: Path, mode: str) -> str:
    """'auto' thresholds lossy (JPEG) masks and demands exact binary values from lossless ones."""
    if mode not in MASK_MODES:
        raise DatasetError(f"unknown mask_mode {mode!r}; use one of {', '.join(MASK_MODES)}")
    if mode == "auto":
        return "threshold" if path.suffix.lower() in LOSSY_EXTS else "binary"
    return mode


def read_mask(path: Path, mode: str = "auto") -> np.ndarray:
    """Decode a mask file -> uint8 (H, W) in {0, 1}.

    binary: pixels must be 0 or ONE foreground value (0/255, 0/1, a palette colour); anything else
    is reported, because a second value usually means a multi-class or antialiased mask.
    threshold: foreground is >= half the range (128 for 8-bit), which undoes JPEG ringing.
    """
    im = _decode(path)
    array = np.asarray(im) if im.mode in _WIDE_MODES else np.asarray(im.convert("L"))
    if resolve_mask_mode(path, mode) == "threshold":
        half = 128 if array.dtype == np.uint8 else (32768 if array.dtype == np.uint16 else 0.5)
        return (array >= half).astype(np.uint8)
    values = np.unique(array)
    foreground = values[values != 0]
    if len(foreground) > 1:
        shown = ", ".join(str(v) for v in values[:6]) + (", ..." if len(values) > 6 else "")
        raise FileProblem(path, f"mask is not binary (values {shown}); expected 0 and one foreground "
                                "value; pass mask_mode='threshold' to binarise at half range")
    return (array != 0).astype(np.uint8)


def check_same_size(image: np.ndarray, mask: np.ndarray, image_path: Path, mask_path: Path) -> None:
    """Masks are never resized silently: a size mismatch usually means a mispaired file."""
    if mask.shape != image.shape[:2]:
        raise FileProblem(mask_path, f"mask is {mask.shape[1]}x{mask.shape[0]} (WxH) but image "
                                     f"{image_path.name} is {image.shape[1]}x{image.shape[0]}")


def read_label_image(path: Path) -> np.ndarray:
    """Decode a label map file (nnU-Net 2D: one channel of label values 0..K) -> integer (H, W).

    Values are kept as stored (no binarising, no palette colours: a 'P' image gives its indices);
    a colour image is refused, since its values are not labels."""
    im = _decode(path)
    if im.mode not in ("L", "P", "1", *_WIDE_MODES):
        raise FileProblem(path, f"label image has mode {im.mode} (colour); expected one channel of "
                                "label values 0, 1, 2, ...")
    return np.asarray(im).astype(np.int64)
