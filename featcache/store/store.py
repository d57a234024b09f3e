"""Opening a store (a local folder or any fsspec URL) and listing its entries."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import zarr
import zarr.storage

from featcache.errors import IncompleteEntryError, ReadOnlyStoreError, StoreError
from featcache.store.layout import EntryLayout, check_key
from featcache.store.reader import EntryReader
from featcache.store.writer import EntryWriter

DEFAULT_STORE = "./featcache-store"


def default_store_url() -> str:
    return os.environ.get("FEATCACHE_STORE", DEFAULT_STORE)


def _open_zarr_store(url: str, read_only: bool) -> zarr.abc.store.Store:
    if "://" in url and not url.startswith("file://"):
        try:
            return zarr.storage.FsspecStore.from_url(url, read_only=read_only)
        except Exception as exc:  # fsspec raises many types for a bad URL or missing backend
            raise StoreError(f"cannot open store {url}: {exc}") from exc
    path = Path(url.removeprefix("file://")).expanduser()
    if not read_only:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"store path {path} is not writable ({exc.strerror}); "
                             "pass --store with a folder you can write to") from None
        if not os.access(path, os.W_OK):
            raise StoreError(f"store path {path} is not writable; pass --store with a folder "
                             "you can write to, or open it read-only")
    elif not path.is_dir():
        raise StoreError(f"store {path} does not exist; run `featcache extract` first or pass --store")
    return zarr.storage.LocalStore(path, read_only=read_only)


class FeatureStore:
    """A collection of entries, one per (dataset, teacher) extraction."""

    def __init__(self, url: str | Path | None = None, read_only: bool = False) -> None:
        self.url = str(url) if url is not None else default_store_url()
        self.read_only = read_only
        self._zstore = _open_zarr_store(self.url, read_only)
        mode = "r" if read_only else "a"
        try:
            self._root = zarr.open_group(self._zstore, mode=mode)
        except FileNotFoundError:
            raise StoreError(f"store {self.url} has no zarr root; run `featcache extract` first") from None

    def entries(self) -> list[str]:
        return sorted(name for name, _ in self._root.groups())

    def exists(self, key: str) -> bool:
        return check_key(key) in self.entries()

    def create_entry(self, key: str, layout: EntryLayout, attrs: dict[str, Any]) -> EntryWriter:
        """Create an entry, or reopen a partial one with the same layout to resume it."""
        if self.read_only:
            raise ReadOnlyStoreError(f"store {self.url} is read-only; extract into a writable store")
        check_key(key)
        if key in self.entries():
            return EntryWriter.reopen(self._root[key], layout)
        return EntryWriter.create(self._root, key, layout, attrs)

    def open(self, key: str, allow_incomplete: bool = False) -> EntryReader:
        check_key(key)
        if key not in self.entries():
            raise StoreError(f"store {self.url} has no entry {key}; `featcache ls` lists entries")
        reader = EntryReader(self._root[key], key)
        if not allow_incomplete and not reader.complete:
            raise IncompleteEntryError(
                f"entry {key} is incomplete ({reader.committed_fraction:.0%} of shards committed); "
                "re-run the same `featcache extract` to finish it")
        return reader
