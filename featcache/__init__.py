"""featcache: run foundation-model teachers once, distil a small segmentation student from the cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from featcache.version import FEATURE_FORMAT_VERSION, __version__

# The Python API (featcache/api.py) imports torch and zarr: loaded on first use, so that
# `import featcache` (and the CLI's start-up) stays fast.
_API = ("CachedFeatures", "Entry", "Store", "load_student", "open_store")
__all__ = ["FEATURE_FORMAT_VERSION", "__version__", *_API]

if TYPE_CHECKING:
    from featcache.api import CachedFeatures, Entry, Store, load_student, open_store  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _API:
        from featcache import api

        return getattr(api, name)
    raise AttributeError(f"module 'featcache' has no attribute {name!r}")
