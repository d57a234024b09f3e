"""The feature store: the only package that imports zarr. See FORMAT.md beside this file."""

from featcache.store.layout import EntryLayout, LevelLayout, entry_key
from featcache.store.reader import EntryReader
from featcache.store.store import FeatureStore, default_store_url
from featcache.store.writer import EntryWriter

__all__ = ["EntryLayout", "EntryReader", "EntryWriter", "FeatureStore", "LevelLayout",
           "default_store_url", "entry_key"]
