"""Opening a store (a local folder, file://, memory:// or s3:// URL) and listing its entries."""

from __future__ import annotations

import json
import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import zarr
from zarr.errors import ContainsGroupError, ZarrUserWarning

from featcache.errors import CorruptEntryError, IncompleteEntryError, StoreError
from featcache.store.backends import Backend, open_backend, probe_backend
from featcache.store.claims import DEFAULT_TTL_S, Claims
from featcache.store.layout import ENTRY_NAME, EntryLayout, check_key, entry_key, is_key
from featcache.store.reader import EntryReader
from featcache.store.writer import EntryWriter, disk_errors

DEFAULT_STORE = "./featcache-store"
# where `rm` moves an entry before deleting it: no entry key starts with "."
TRASH = ".featcache-trash"


def default_store_url() -> str:
    return os.environ.get("FEATCACHE_STORE", DEFAULT_STORE)


def _require_store(url: str, storage_options: dict[str, Any] | None) -> None:
    """A store is a folder (prefix) with a zarr.json at its root; refuse anything else."""
    backend = probe_backend(url, storage_options)  # a bad URL is already one StoreError there
    try:
        found = backend.get("zarr.json") is not None
    except Exception as exc:  # fsspec raises many types for an unreachable store
        raise StoreError(f"cannot open store {url}: {exc}") from exc
    if not found:
        raise StoreError(f"{url} has no zarr.json at its root, so featcache wrote nothing there; set "
                         "store to the folder `featcache extract` wrote", fields=("store",))


class FeatureStore:
    """A collection of entries, one per (dataset, teacher) extraction.

    storage_options go to fsspec for remote URLs (e.g. {"endpoint_url": ...} for S3-compatible
    servers). An existing local store on a read-only filesystem opens read-only by itself.
    """

    def __init__(self, url: str | Path | None = None, read_only: bool = False,
                 storage_options: dict[str, Any] | None = None, claim_ttl_s: float = DEFAULT_TTL_S,
                 create: bool = True) -> None:
        """create=False: the store must exist already (gc, rm): never turn a folder into one."""
        self.url = str(url) if url is not None else default_store_url()
        self.claim_ttl_s = claim_ttl_s
        if not create:
            _require_store(self.url, storage_options)
        # where the bytes live, chosen once from the URL (backends.py); zarr works through it
        self.backend: Backend = open_backend(self.url, read_only, storage_options)
        self.read_only = self.backend.read_only
        self._zstore = self.backend.zarr_store()
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

    def keys(self) -> list[str]:
        """Every entry folder, readable or not (what `ls` shows and `rm` can remove). Folders
        that are no entry (rm's hidden trash, a user's own folder) are left out: see foreign()."""
        return [name for name in self.backend.children() if self._is_entry(name)]

    def foreign(self) -> list[str]:
        """Folders in the store that featcache did not write (a user's notes): never listed as
        entries, never removed."""
        return [name for name in self.backend.children()
                if not name.startswith(".") and not self._is_entry(name)]

    def _is_entry(self, name: str) -> bool:
        """A folder is an entry when its zarr.json carries featcache's metadata; one whose
        zarr.json is gone or unreadable (a damaged entry) when its name has the form only
        entry_key gives (`dataset.teacher.hash`)."""
        if not is_key(name):
            return False
        raw = self.backend.get(f"{name}/zarr.json")
        if raw is not None:
            try:
                attributes = json.loads(raw).get("attributes") or {}
                if isinstance(attributes, dict) and "featcache" in attributes:
                    return True
            except (ValueError, AttributeError):
                pass  # damaged: judged by its name
        return bool(ENTRY_NAME.match(name))

    def scan(self) -> tuple[dict[str, EntryReader], dict[str, str]]:
        """Open every entry: (key -> reader) of readable ones, (key -> why) of damaged ones.
        One damaged entry never stops the others from being listed, used or removed."""
        readers, damaged = {}, {}
        for key in self.keys():
            try:
                readers[key] = self.open(key, allow_incomplete=True)
            except StoreError as exc:
                damaged[key] = str(exc)
        return readers, damaged

    def entries(self) -> list[str]:
        """Keys of the entries that can be opened; damaged ones are left out (see scan)."""
        return sorted(self.scan()[0])

    def damaged_like(self, dataset: str, teacher: str) -> dict[str, str]:
        """Damaged entries (key -> why) whose key names `teacher` on `dataset`: their metadata
        cannot be read, so the key's readable prefix is all that tells what they held. A search
        that finds no readable entry names these, so that damage never reads as "not extracted"."""
        prefix = entry_key(dataset, "", teacher, "").rsplit(".", 1)[0] + "."
        return {key: why for key, why in self.scan()[1].items() if key.startswith(prefix)}

    def exists(self, key: str) -> bool:
        return self._present(check_key(key))

    def _present(self, key: str) -> bool:
        return key in self.backend.children() and self._is_entry(key)

    def _not_an_entry(self, key: str) -> StoreError:
        if key in self.foreign():
            return StoreError(f"{key} in store {self.url} is not a featcache entry (featcache did not "
                              "write it), so featcache leaves it alone; `featcache ls` lists entries")
        return StoreError(f"store {self.url} has no entry {key}; `featcache ls` lists entries")

    def _group(self, key: str) -> zarr.Group:
        """The entry's zarr group; a missing or unparsable zarr.json is a CorruptEntryError."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ZarrUserWarning)
                group = self._root[key]
        except Exception as exc:  # KeyError, JSONDecodeError, zarr metadata errors
            why = "has no zarr.json" if isinstance(exc, KeyError) else f"has a damaged zarr.json ({exc})"
            raise CorruptEntryError(f"entry {key} {why}; `featcache rm {key}` removes it, then the same "
                                    "`featcache extract` writes it again") from None
        if not isinstance(group, zarr.Group):
            raise CorruptEntryError(f"entry {key} is an array, not an entry; `featcache rm {key}` removes it")
        return group

    def create_entry(self, key: str, layout: EntryLayout, attrs: dict[str, Any],
                     owner: str | None = None) -> EntryWriter:
        """Create an entry, or reopen a partial one with the same layout to resume it.

        `owner` names this writer in shard claims (default: host:pid:random).
        """
        self.backend.check_writable(f"create entry {key}")
        check_key(key)
        options = {"owner": owner, "ttl_s": self.claim_ttl_s}
        with disk_errors(self.url):
            if self._present(key):
                return EntryWriter.reopen(self._group(key), layout, self.backend, **options)
            return EntryWriter.create(self._root, key, layout, attrs, self.backend, **options)

    def open(self, key: str, allow_incomplete: bool = False) -> EntryReader:
        check_key(key)
        if not self._present(key):
            raise self._not_an_entry(key)
        reader = EntryReader(self._group(key), key, self.backend)
        if not allow_incomplete and not reader.complete:
            raise IncompleteEntryError(self.incomplete_hint(reader))
        return reader

    def incomplete_hint(self, reader: EntryReader) -> str:
        """Why an entry is incomplete and what to do. Re-running the same extract finishes an
        entry with committed shards, or one a writer is still filling; an entry with nothing
        committed and no live claim is what a failed extraction leaves: the same command would
        fail the same way until its cause is fixed."""
        done = f"{reader.committed_fraction:.0%} of shards committed"
        live = bool(Claims(self.backend, reader.key).live())
        if reader.committed.any() or live:
            return f"entry {reader.key} is incomplete ({done}); re-run the same `featcache extract` to " \
                   "finish it"
        return (f"entry {reader.key} is incomplete ({done}, no extract working on it): an extraction "
                "failed before its first shard; fix what stopped it and extract again, or "
                "`featcache gc` removes the entry once its lease has expired")

    def remove(self, key: str, force: bool = False) -> None:
        """Delete an entry (readable or damaged) and everything under it.

        Refused while a writer holds a live claim on one of its shards, unless force. Atomic on
        local folders: the entry is renamed out of sight first, so a removal that fails midway
        never leaves something that looks like an entry. Object stores have no rename: the
        entry's zarr.json goes first, so what a failed removal leaves lists as damaged and
        `rm` removes it."""
        self.backend.check_writable(f"remove entry {key}")
        check_key(key)
        if not self._present(key):
            raise self._not_an_entry(key)
        if not force:
            live = Claims(self.backend, key).live()
            if live:
                what = f"shard {live[0].shard} claimed" if live[0].shard >= 0 else "held open"
                raise StoreError(f"entry {key} is being written ({what} by {live[0].owner}); wait for "
                                 "that extract to finish, or pass force (the extract then fails)",
                                 fields=("force",))
        hidden = f"{TRASH}/{key}.{uuid.uuid4().hex[:8]}"
        if self.backend.rename_out_of_sight(key, hidden):
            self.backend.delete_prefix(hidden)
            self.backend.prune_empty(TRASH)  # plain zarr listings of the root stay clean
            return
        self.backend.delete(f"{key}/zarr.json")
        self.backend.delete_prefix(key)

    def size_on_disk(self, key: str) -> int:
        return sum(self.backend.sizes(check_key(key)).values())
