"""A trained student at its training resolution, from numpy images to masks, label maps and
class probabilities at each image's own size (`Predictor`), with the input recipes it was trained
on; predict.py writes its outputs. The ONNX Runtime counterpart is onnx_predictor.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from featcache.data.base import to_float_image
from featcache.data.recipe import Recipe
from featcache.data.serving import open_planes, to_grid
from featcache.errors import ConfigError, DatasetError
from featcache.evaluate.run_classes import RunClasses, numbered, run_classes
from featcache.evaluate.served import check_threshold, choose_recipe
from featcache.runs import Run
from featcache.runs.compat import legacy_recipes
from featcache.student import Student, student_input


class Predictor:
    """A student at its training resolution; maps (H, W, C) images to (H, W) masks of the same size
    (`threshold` applies to a binary student's sigmoid; a multi-class one takes the argmax)."""

    def __init__(self, student: Student, image_size: int, threshold: float = 0.5, batch: int = 8,
                 recipes: dict[str, Recipe] | None = None) -> None:
        self.student = student.eval()
        self.image_size = int(image_size)
        self.threshold = check_threshold(threshold)
        self.batch = batch
        self.channels = student.config.in_channels
        self.classes: RunClasses = numbered(student.config)  # from_run names them by the datasets
        # How files become inputs (data/recipe.py): the run's; a bare student reads them as
        # featcache did before recipes were saved.
        self.recipes = recipes or legacy_recipes(student.config.mask_classes)

    @classmethod
    def from_run(cls, run_dir: Path, which: str = "best", threshold: float = 0.5) -> Predictor:
        student, checkpoint = Run(run_dir).load_student(which)
        predictor = cls(student, checkpoint.image_size, threshold, recipes=checkpoint.recipes)
        predictor.classes = run_classes(student.config, checkpoint.manifest)
        return predictor

    def _input(self, image: np.ndarray, source: str) -> torch.Tensor:
        try:
            return student_input(image, self.image_size, self.channels)
        except ConfigError as exc:
            raise DatasetError(f"{source}: {exc}") from None

    @property
    def mask_classes(self) -> int:
        """Foreground classes of the mask decoder: 1 (binary) or K >= 2 (label maps 0..K)."""
        return int(self.student.config.mask_classes)

    @torch.no_grad()
    def _logits(self, images: list[np.ndarray], source: str) -> list[torch.Tensor]:
        """(H_i, W_i, C) images -> mask logits (M, H_i, W_i), upsampled bilinearly to each input's
        own size before any sigmoid, softmax or argmax."""
        out: list[torch.Tensor] = []
        for start in range(0, len(images), self.batch):
            chunk = images[start:start + self.batch]
            x = torch.stack([self._input(im, source) for im in chunk])  # (B, C, S, S)
            logits = self.student(x)  # (B, M, S, S)
            for im, lg in zip(chunk, logits, strict=True):
                up = F.interpolate(lg[None], size=im.shape[:2], mode="bilinear", align_corners=False)
                out.append(up[0])
        return out

    def probabilities(self, images: list[np.ndarray], source: str = "input") -> list[np.ndarray]:
        """float32 (H_i, W_i, C) images in [0, 1] -> float32 (H_i, W_i) foreground probabilities
        (for a multi-class student, 1 - P(background))."""
        logits = self._logits(images, source)
        if self.mask_classes == 1:
            return [torch.sigmoid(lg[0]).numpy() for lg in logits]
        return [1.0 - torch.softmax(lg, dim=0)[0].numpy() for lg in logits]

    def masks(self, images: list[np.ndarray], source: str = "input") -> list[np.ndarray]:
        """(H_i, W_i, C) images -> bool (H_i, W_i) masks (any foreground class for a multi-class
        student)."""
        if self.mask_classes == 1:
            return [p >= self.threshold for p in self.probabilities(images, source)]
        return [m > 0 for m in self.label_maps(images, source)]

    def label_maps(self, images: list[np.ndarray], source: str = "input") -> list[np.ndarray]:
        """(H_i, W_i, C) images -> uint8 (H_i, W_i) label maps: the most probable channel
        (0 = background, k = class k) for a multi-class student, the thresholded mask as {0, 1}
        for a binary one."""
        if self.mask_classes == 1:
            return [m.astype(np.uint8) for m in self.masks(images, source)]
        return [lg.argmax(dim=0).numpy().astype(np.uint8) for lg in self._logits(images, source)]

    @torch.no_grad()
    def class_probabilities(self, images: list[np.ndarray], head: str,
                            source: str = "input") -> np.ndarray:
        """(H_i, W_i, C) images -> float64 (N, n) softmax probabilities of classification head
        `head` (the dataset it was trained for)."""
        out = []
        for start in range(0, len(images), self.batch):
            x = torch.stack([self._input(im, source) for im in images[start:start + self.batch]])
            out.append(torch.softmax(self.student.predict_classes(x, head), dim=1).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))

    def predict(self, image: np.ndarray | str | Path, dataset: str | None = None) -> np.ndarray:
        """Foreground probabilities, float32, on the input's own grid.

        A file (image or volume) is read with the recipe of the dataset it is like (or of
        `dataset`), exactly as training read that dataset's files: (H, W) for an image, (X, Y, Z) in
        stored voxel order for a volume. A numpy image, (H, W) or (H, W, C), uint8/uint16 or float
        (rescaled to [0, 1] by its min and max, as image files are read), gives (H, W)."""
        if isinstance(image, (str, Path)):
            recipe = choose_recipe(self.recipes, Path(image), dataset)
            scan, planes = open_planes(Path(image), recipe)
            return to_grid(self.probabilities(planes, str(image)), scan, recipe)
        return self.probabilities([to_float_image(np.asarray(image), "image")], "image")[0]

    def predict_mask(self, image: np.ndarray | str | Path, dataset: str | None = None) -> np.ndarray:
        """Like `predict`, thresholded: bool on the input's grid."""
        return self.predict(image, dataset) >= self.threshold
