"""What serving needs of a trained student, whichever runtime runs it: PyTorch (`Predictor`,
predictor.py) or ONNX Runtime (`OnnxPredictor`, onnx_predictor.py). predict.py writes outputs
for either. numpy only: nothing here imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from featcache.data.readers import readers_for
from featcache.data.recipe import Recipe
from featcache.errors import ConfigError, DatasetError
from featcache.evaluate.run_classes import RunClasses


class Served(Protocol):
    """A student at its training resolution: float32 (H, W, C) images in [0, 1] -> outputs at
    each image's own size."""

    threshold: float
    classes: RunClasses
    recipes: dict[str, Recipe]  # dataset name -> how its files become inputs

    @property
    def mask_classes(self) -> int: ...

    def probabilities(self, images: list[np.ndarray], source: str = "input") -> list[np.ndarray]: ...

    def masks(self, images: list[np.ndarray], source: str = "input") -> list[np.ndarray]: ...

    def label_maps(self, images: list[np.ndarray], source: str = "input") -> list[np.ndarray]: ...

    def class_probabilities(self, images: list[np.ndarray], head: str,
                            source: str = "input") -> np.ndarray: ...


def check_threshold(threshold: float) -> float:
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold {threshold} must lie strictly between 0 and 1", fields=("threshold",))
    return threshold


def choose_recipe(recipes: dict[str, Recipe], path: Path, dataset: str | None = None) -> Recipe:
    """The recipe to read `path` with: the named dataset's, else the one recipe whose reader opens
    the file (several different ones: the user names the dataset)."""
    if dataset is not None:
        if dataset not in recipes:
            raise ConfigError(f"the run has no dataset {dataset!r}; its datasets: {', '.join(recipes)}",
                              fields=("dataset",))
        return recipes[dataset]
    opening = readers_for(path)
    fits = {name: r for name, r in recipes.items() if r.reader in opening}
    if not fits:
        trained = ", ".join(sorted({r.reader for r in recipes.values()}))
        raise DatasetError(f"{path}: this student was trained on {trained} inputs, not on this kind of "
                           "file; give it files like its training data")
    if len({_pixels(r) for r in fits.values()}) > 1:
        raise ConfigError(f"{path}: datasets {', '.join(fits)} of the run read such files differently; "
                          "name the one to read it like with --dataset", fields=("dataset",))
    # The same pixels either way (a segmentation and a classification dataset of one kind): the
    # segmentation dataset's recipe also says which label values a mask is written in.
    segmenting = [r for r in fits.values() if r.task == "segmentation"]
    return (segmenting or list(fits.values()))[0]


def _pixels(recipe: Recipe) -> tuple:
    """What decides the student's input (not the labels)."""
    return recipe.reader, recipe.channels, recipe.channel, recipe.intensity, recipe.slicing
