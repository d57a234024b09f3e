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


def dataset_modality(name: str) -> str:
    """The modality a builder's dataset class declares (read from its return annotation, so nothing
    is built); '' when the builder does not say."""
    import typing

    import featcache.data.loaders  # noqa: F401

    builder = DATASETS.get(name)
    try:
        cls = typing.get_type_hints(builder).get("return")
    except Exception:  # an annotation that cannot be resolved is not worth failing a listing for
        return ""
    return str(getattr(cls, "modality", "") or "")
