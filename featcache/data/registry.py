"""The dataset registry: name -> builder(root, **options) -> SegmentationDataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from featcache.data.base import SegmentationDataset
from featcache.errors import DatasetError
from featcache.registry import Registry

DatasetBuilder = Callable[..., SegmentationDataset]
DATASETS: Registry[DatasetBuilder] = Registry("dataset", DatasetError)


def build_dataset(name: str, root: str | Path | None = None, **options: Any) -> SegmentationDataset:
    """Build a registered dataset. `root` is required by every loader except `demo`."""
    import featcache.data.loaders  # noqa: F401  (registers the built-in loaders)

    builder = DATASETS.get(name)
    return builder(Path(root) if root is not None else None, **options)
