"""Opening a store (a local folder, file://, memory:// or s3:// URL) and listing its entries."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import zarr
import zarr.storage
from zarr.errors import ContainsGroupError, ZarrUserWarning

from featcache.errors import IncompleteEntryError, StoreError
from featcache.store.claims import DEFAULT_TTL_S
from featcache.store.layout import EntryLayout, check_key
from featcache.store.objects import ObjectStore
from featcache.store.reader import EntryReader
from featcache.store.writer import EntryWriter

DEFAULT_STORE = "./featcache-store"


def default_store_url() -> str:
    return os.environ.get("FEATCACHE_STORE", DEFAULT_STORE)


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _local_mode(path: Path, read_only: bool) -> str:
    """'' when writable; otherwise why the store must be opened read-only."""
    if read_only:
        if not path.is_dir():
            raise StoreError(f"store {path} does not exist; run `featcache extract` first or pass --store")
        return "it was opened read-only"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if path.is_dir():  # exists on a read-only filesystem: reading still works
            return f"{path} is not writable: {exc.strerror}"
        raise StoreError(f"store path {path} cannot be created ({exc.strerror}); "
                         "pass --store with a folder you can write to") from None
    if not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return ""


class FeatureStore:
    """A collection of entries, one per (dataset, teacher) extraction.

    storage_options go to fsspec for remote URLs (e.g. {"endpoint_url": ...} for S3-compatible
    servers). An existing local store on a read-only filesystem opens read-only by itself.
    """

    def __init__(self, url: str | Path | None = None, read_only: bool = False,
                 storage_options: dict[str, Any] | None = None, claim_ttl_s: float = DEFAULT_TTL_S) -> None:
        self.url = str(url) if url is not None else default_store_url()
        self.claim_ttl_s = claim_ttl_s
        reason = "it was opened read-only" if read_only else ""
        if _is_local(self.url):
            path = Path(self.url.removeprefix("file://")).expanduser()
            reason = _local_mode(path, read_only)
            self._zstore = zarr.storage.LocalStore(path, read_only=bool(reason))
        else:
            try:
                self._zstore = zarr.storage.FsspecStore.from_url(
                    self.url, read_only=read_only, storage_options=storage_options)
            except Exception as exc:  # fsspec raises many types for a bad URL or missing backend
                raise StoreError(f"cannot open store {self.url}: {exc}") from exc
        self.read_only = bool(reason)
        self.objects = ObjectStore(self.url, self.read_only, storage_options, reason)
        try:
            self._root = self._open_root()
        except FileNotFoundError:
            raise StoreError(f"store {self.url} has no zarr root; run `featcache extract` first") from None
        except Exception as exc:  # network / permission errors from fsspec backends
            raise StoreError(f"cannot open store {self.url}: {type(exc).__name__}: {exc}") from exc

    def _open_root(self) -> zarr.Group:
        try:
            return zarr.open_group(self._zstore, mode="r" if self.read_only else "a")
        except ContainsGroupError:  # another writer created the root between check and create
            return zarr.open_group(self._zstore, mode="r+")

    @property
    def root(self) -> zarr.Group:
        return self._root

    def entries(self) -> list[str]:
        with warnings.catch_warnings():
            # stray objects at the root (or a just-removed entry in a cached S3 listing) are not
            # entries; zarr warns about each, we simply skip them
            warnings.simplefilter("ignore", ZarrUserWarning)
            return sorted(name for name, _ in self._root.groups())

    def exists(self, key: str) -> bool:
        return check_key(key) in self.entries()

    def create_entry(self, key: str, layout: EntryLayout, attrs: dict[str, Any],
                     owner: str | None = None) -> EntryWriter:
        """Create an entry, or reopen a partial one with the same layout to resume it.

        `owner` names this writer in shard claims (default: host:pid:random).
        """
        self.objects.check_writable(f"create entry {key}")
        check_key(key)
        options = {"owner": owner, "ttl_s": self.claim_ttl_s}
        if key in self.entries():
            return EntryWriter.reopen(self._root[key], layout, self.objects, **options)
        return EntryWriter.create(self._root, key, layout, attrs, self.objects, **options)

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

    def remove(self, key: str) -> None:
        """Delete an entry and everything under it."""
        self.objects.check_writable(f"remove entry {key}")
        check_key(key)
        if key not in self.entries():
            raise StoreError(f"store {self.url} has no entry {key}; `featcache ls` lists entries")
        self.objects.delete_prefix(key)

    def size_on_disk(self, key: str) -> int:
        return sum(self.objects.sizes(check_key(key)).values())
