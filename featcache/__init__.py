"""featcache: run foundation-model teachers once, distil a small segmentation student from the cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Bumped whenever the meaning of stored features changes (preprocessing, level extraction, layout),
# so entries made by an older featcache get a different key instead of silently mixing.
FEATURE_FORMAT_VERSION = 1

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
