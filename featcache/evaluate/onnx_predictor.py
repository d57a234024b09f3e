"""An exported student served by ONNX Runtime, with numpy and no torch: the edge path.

`OnnxPredictor` reads the serving document from the file's metadata (deploy.py) and does what
`Predictor` does: every input goes through the recipe its dataset was trained with (predict.py),
is stretched to S x S by the same antialiased resize (resize.py), and the logits come back to
the input's size by the same bilinear interpolation, so its outputs match PyTorch's to ~1e-6.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from featcache.data.recipe import Recipe
from featcache.errors import ConfigError
from featcache.evaluate.deploy import (
    MASK_OUTPUT,
    METADATA_KEY,
    check_document,
    class_output,
    document_classes,
    document_recipes,
)
from featcache.evaluate.resize import to_student, upsample
from featcache.evaluate.run_classes import RunClasses
from featcache.evaluate.served import check_threshold


def onnx_session(path: Path, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session for `path` (threads 0: ONNX Runtime's choice)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for an unreadable model
        raise ConfigError(f"{path}: not a readable ONNX model ({str(exc).splitlines()[0][:120]})",
                          fields=("model",)) from None


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class OnnxPredictor:
    """An exported student file at its export size; the methods of `Predictor`."""

    def __init__(self, path: str | Path, threshold: float = 0.5, batch: int = 8) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ConfigError(f"model {self.path} does not exist", fields=("model",))
        self.session = onnx_session(self.path, int(os.environ.get("FEATCACHE_ONNX_THREADS", 0)))
        meta = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in meta:
            raise ConfigError(f"{self.path}: carries no input recipe (metadata {METADATA_KEY}); export it "
                              "with `featcache export --format onnx` of this version", fields=("model",))
        document = check_document(json.loads(meta[METADATA_KEY]), str(self.path))
        self.image_size = int(document["input"]["size"])
        self.channels = int(document["input"]["channels"])
        self.classes: RunClasses = document_classes(document)
        self.recipes: dict[str, Recipe] = document_recipes(document)
        self.threshold = check_threshold(threshold)
        self.batch = batch
        self._names = [o.name for o in self.session.get_outputs()]

    @property
    def mask_classes(self) -> int:
        return 1 if self.classes.mask is None else len(self.classes.mask)

    def _run(self, images: list[np.ndarray], output: str) -> list[np.ndarray]:
        """One output of the network per image (batched), before any resizing back."""
        out: list[np.ndarray] = []
        for start in range(0, len(images), self.batch):
            chunk = images[start:start + self.batch]
            x = np.stack([to_student(im, self.image_size, self.channels) for im in chunk])
            out += list(self.session.run([output], {"image": x})[0])
        return out

    def _logits(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """(H_i, W_i, C) images -> mask logits (M, H_i, W_i) at each image's size."""
        logits = self._run(images, MASK_OUTPUT)
        return [upsample(lg, im.shape[:2]) for im, lg in zip(images, logits, strict=True)]

    def probabilities(self, images: list[np.ndarray], source: str = "input") -> list[np.ndarray]:
        logits = self._logits(images)
        if self.mask_classes == 1:
            return [_sigmoid(lg[0]) for lg in logits]
        return [(1.0 - _softmax(lg, 0)[0]).astype(np.float32) for lg in logits]

    def masks(self, images: list[np.ndarray], source: str = "input") -> list[np.ndarray]:
        if self.mask_classes == 1:
            return [p >= self.threshold for p in self.probabilities(images, source)]
        return [m > 0 for m in self.label_maps(images, source)]

    def label_maps(self, images: list[np.ndarray], source: str = "input") -> list[np.ndarray]:
        if self.mask_classes == 1:
            return [m.astype(np.uint8) for m in self.masks(images, source)]
        return [lg.argmax(axis=0).astype(np.uint8) for lg in self._logits(images)]

    def class_probabilities(self, images: list[np.ndarray], head: str, source: str = "input") -> np.ndarray:
        if head not in self.classes.heads:
            have = ", ".join(self.classes.heads) or "none"
            raise ConfigError(f"{self.path} has no classification head {head!r}; it has {have}")
        logits = self._run(images, class_output(head))
        return _softmax(np.stack(logits), 1) if logits else np.zeros((0, 0))
