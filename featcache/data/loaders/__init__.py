"""Importing this package registers every built-in dataset loader."""

from featcache.data.loaders import demo  # noqa: F401
