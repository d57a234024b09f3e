"""The feature store: the only package that imports zarr. See FORMAT.md beside this file."""

from featcache.store.fastread import single_threaded_decoding
from featcache.store.layout import COMPRESSIONS, EntryLayout, LevelLayout, check_compression, entry_key
from featcache.store.maintenance import GcReport, entry_summary, gc
from featcache.store.precision import parse_precision
from featcache.store.reader import EntryReader
from featcache.store.store import FeatureStore, default_store_url
from featcache.store.verify import (
           BadSample,
           VerifyReport,
           last_verification,
           record_verification,
           verify_entry,
)
from featcache.store.writer import EntryWriter

__all__ = ["COMPRESSIONS", "BadSample", "EntryLayout", "EntryReader", "EntryWriter", "FeatureStore",
           "GcReport", "LevelLayout", "VerifyReport", "check_compression", "default_store_url", "entry_key",
           "entry_summary", "gc", "last_verification", "parse_precision", "record_verification",
           "single_threaded_decoding", "verify_entry"]
