"""Where a store's bytes live: one small interface, a local and an fsspec implementation.

`open_backend` chooses one from the URL, once (zarr-python's shape: an abstract store with
capability flags, one implementation per kind of storage). zarr reads and writes arrays through
the zarr store a backend hands out (`zarr_store`); the backend itself does what zarr has no API
for: creating a lease object only if absent, listing, sizes, deleting a prefix, an atomic rename
where there is one, and reading one sample of a level array (`sample_reader`: zarr for every
backend, the direct shard-file reader of fastread.py for local folders).

Local folders use the OS directly (a hard link gives a true create-if-absent); every other URL goes
through fsspec, whose `pipe_file(mode="create")` is a conditional PUT (If-None-Match: *) on S3
and an in-process check on memory://. Keys are '/'-separated paths relative to the store root,
like zarr keys.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import zarr
import zarr.storage

from featcache.errors import ReadOnlyStoreError, StoreError
from featcache.store.fastread import LevelFastPath


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


class ZarrSamples:
    """One sample of a level array read through zarr (any backend). Returns no chunk checksums:
    the reader compares the decoded values with the checksum record instead."""

    def __init__(self, array: Any) -> None:
        self.array = array

    def read_checked(self, index: int, view: int | None = None) -> tuple[np.ndarray, list[int] | None]:
        return np.asarray(self.array[index if view is None else (index, view)]), None


_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}


class Backend(ABC):
    """The bytes of one store. Subclasses set the capability flag `supports_rename`."""

    supports_rename = False  # an atomic rename of a whole prefix (entry removal relies on it)

    def __init__(self, url: str, read_only: bool, read_only_reason: str = "") -> None:
        self.url = url
        self.read_only = read_only
        self.read_only_reason = read_only_reason or "it was opened read-only"
        self.root = ""

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def check_writable(self, action: str) -> None:
        if self.read_only:
            raise ReadOnlyStoreError(f"cannot {action}: store {self.url} is read-only "
                                     f"({self.read_only_reason}); use a writable store")

    def _wrap_os(self, exc: OSError, action: str) -> StoreError:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            return ReadOnlyStoreError(f"cannot {action}: store {self.url} is not writable "
                                      f"({exc.strerror}); use a writable store")
        return StoreError(f"cannot {action} in store {self.url}: {exc}")

    @abstractmethod
    def zarr_store(self) -> zarr.abc.store.Store:
        """The zarr store over the same bytes (read-only where this backend is)."""

    @abstractmethod
    def put_exclusive(self, key: str, data: bytes) -> bool:
        """Create `key` only if absent; True when this call created it."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Write `key` whole; readers never see half of it."""

    def put_parts(self, key: str, parts: list[Any]) -> None:
        """put() of the concatenation of `parts` (byte buffers), without joining them where the
        backend can write them one after the other."""
        self.put(key, b"".join(parts))

    @abstractmethod
    def get(self, key: str) -> bytes | None:
        """The object's bytes, None when absent."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; absent is fine."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Keys of the objects directly or indirectly under `prefix` (a folder), sorted."""

    @abstractmethod
    def children(self) -> list[str]:
        """Names of the folders (prefixes) directly under the store root, sorted."""

    @abstractmethod
    def sizes(self, prefix: str) -> dict[str, int]:
        """key -> bytes on disk for every object under `prefix`."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Remove everything under `prefix`; absent is fine."""

    def rename_out_of_sight(self, prefix: str, hidden: str) -> bool:
        """Atomically move `prefix` to `hidden` (a name no listing shows); False where the backend
        has no atomic rename (supports_rename)."""
        return False

    def prune_empty(self, prefix: str) -> None:  # noqa: B027 (a no-op where there are no folders)
        """Remove an empty folder (object stores have none)."""

    def sample_reader(self, path: str, array: Any) -> LevelFastPath | ZarrSamples:
        """How to read one sample of the level array `array` stored at `path` (a key)."""
        return ZarrSamples(array)


class LocalBackend(Backend):
    """A folder on a local (or mounted) filesystem; `url` is a path or a file:// URL."""

    supports_rename = True

    def __init__(self, url: str, read_only: bool = False, read_only_reason: str = "") -> None:
        super().__init__(url, read_only, read_only_reason)
        self.root = str(Path(url.removeprefix("file://")).expanduser())

    @classmethod
    def open(cls, url: str, read_only: bool) -> LocalBackend:
        """Create the folder when writable; an existing one on a read-only filesystem opens
        read-only by itself, with the reason kept for error messages."""
        reason = _local_mode(Path(url.removeprefix("file://")).expanduser(), read_only)
        return cls(url, bool(reason), reason)

    def zarr_store(self) -> zarr.storage.LocalStore:
        return zarr.storage.LocalStore(self.root, read_only=self.read_only)

    def put_exclusive(self, key: str, data: bytes) -> bool:
        self.check_writable(f"write {key}")
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        # The object appears whole or not at all: an O_EXCL file is visible empty before its bytes
        # are written, and a claim read empty counts as expired, so a racing writer took the shard
        # over and both extracted it. Writing a private file and hard-linking it into place is
        # create-if-absent (link fails on an existing name) with the content already there.
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno in _NO_HARD_LINKS:  # a filesystem without links (FAT, some SMB shares)
                return self._create_exclusive(key, path, data)
            raise self._wrap_os(exc, f"write {key}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        return True

    def _create_exclusive(self, key: str, path: str, data: bytes) -> bool:
        """O_EXCL create-if-absent, where hard links are missing: visible empty for an instant."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise self._wrap_os(exc, f"write {key}") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return True

    def put(self, key: str, data: bytes) -> None:
        self.put_parts(key, [data])

    def put_parts(self, key: str, parts: list[Any]) -> None:
        self.check_writable(f"write {key}")
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"  # writer threads of one process
        try:
            with open(tmp, "wb") as fh:
                for part in parts:
                    fh.write(part)
            os.replace(tmp, path)  # atomic: readers never see half a file
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
            raise

    def get(self, key: str) -> bytes | None:
        try:
            return Path(self._path(key)).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def delete(self, key: str) -> None:
        self.check_writable(f"delete {key}")
        try:
            os.remove(self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not os.path.isdir(base):
            return []
        out = []
        for dirpath, _, files in os.walk(base):
            rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            out += [f"{rel}/{f}" for f in files]
        return sorted(out)

    def children(self) -> list[str]:
        try:
            return sorted(e.name for e in os.scandir(self.root) if e.is_dir())
        except FileNotFoundError:
            return []

    def sizes(self, prefix: str) -> dict[str, int]:
        return {k: os.path.getsize(self._path(k)) for k in self.list(prefix)}

    def delete_prefix(self, prefix: str) -> None:
        self.check_writable(f"delete {prefix}")
        try:
            shutil.rmtree(self._path(prefix))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._wrap_os(exc, f"delete {prefix}") from None

    def rename_out_of_sight(self, prefix: str, hidden: str) -> bool:
        self.check_writable(f"remove {prefix}")
        os.makedirs(os.path.dirname(self._path(hidden)), exist_ok=True)
        try:
            os.rename(self._path(prefix), self._path(hidden))
        except OSError as exc:
            raise self._wrap_os(exc, f"remove {prefix}") from None
        return True

    def prune_empty(self, prefix: str) -> None:
        try:
            os.rmdir(self._path(prefix))
        except OSError:
            pass

    def sample_reader(self, path: str, array: Any) -> LevelFastPath | ZarrSamples:
        """The shard file read directly (fastread.py) when the array has featcache's level
        encoding, which every entry written by featcache has; zarr otherwise."""
        fast = LevelFastPath.for_array(self._path(path), array)
        return fast if fast is not None else ZarrSamples(array)


class FsspecBackend(Backend):
    """Any fsspec URL (s3://, memory://, ...); storage_options go to fsspec."""

    def __init__(self, url: str, read_only: bool = False,
                 storage_options: dict[str, Any] | None = None) -> None:
        import fsspec

        super().__init__(url, read_only)
        self.storage_options = storage_options
        try:
            self.fs, root = fsspec.url_to_fs(url, **(storage_options or {}))
        except Exception as exc:  # fsspec raises many types for a bad URL or missing backend
            raise StoreError(f"cannot open store {url}: {exc}") from exc
        self.root = root.rstrip("/")

    def zarr_store(self) -> zarr.storage.FsspecStore:
        try:
            return zarr.storage.FsspecStore.from_url(self.url, read_only=self.read_only,
                                                     storage_options=self.storage_options)
        except Exception as exc:  # fsspec raises many types for a bad URL or missing backend
            raise StoreError(f"cannot open store {self.url}: {exc}") from exc

    def put_exclusive(self, key: str, data: bytes) -> bool:
        self.check_writable(f"write {key}")
        try:
            self.fs.pipe_file(self._path(key), data, mode="create")
        except (FileExistsError, ValueError):
            return False
        except OSError as exc:
            if "PreconditionFailed" in str(exc) or "412" in str(exc):
                return False
            raise
        return True

    def put(self, key: str, data: bytes) -> None:
        self.check_writable(f"write {key}")
        self.fs.pipe_file(self._path(key), data)

    def get(self, key: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._path(key))
        except (FileNotFoundError, IsADirectoryError):
            return None

    def delete(self, key: str) -> None:
        self.check_writable(f"delete {key}")
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        return sorted(p[len(self.root) + 1:] for p in found)

    def children(self) -> list[str]:
        self.fs.invalidate_cache(self.root)
        try:
            found = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return []
        return sorted(info["name"].rstrip("/").rsplit("/", 1)[-1] for info in found
                      if info.get("type") == "directory")

    def sizes(self, prefix: str) -> dict[str, int]:
        base = self._path(prefix)
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        return {p[len(self.root) + 1:]: int(info.get("size") or 0) for p, info in found.items()}

    def delete_prefix(self, prefix: str) -> None:
        self.check_writable(f"delete {prefix}")
        try:
            self.fs.rm(self._path(prefix), recursive=True)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._wrap_os(exc, f"delete {prefix}") from None


def open_backend(url: str, read_only: bool = False,
                 storage_options: dict[str, Any] | None = None) -> Backend:
    """The backend for a store URL: a local folder (path or file://) or any fsspec URL."""
    if is_local(url):
        return LocalBackend.open(url, read_only)
    return FsspecBackend(url, read_only, storage_options)


def probe_backend(url: str, storage_options: dict[str, Any] | None = None) -> Backend:
    """A read-only backend that creates and checks nothing (to look for a store's zarr.json)."""
    if is_local(url):
        backend = LocalBackend(url, read_only=True)
        _not_a_file(Path(backend.root))
        return backend
    return FsspecBackend(url, True, storage_options)


def backend_of(zstore: Any) -> Backend | None:
    """The local backend under a zarr store (a reader reopened from its zarr group alone, as in
    loader worker processes); None for any other store, which is then read through zarr."""
    if isinstance(zstore, zarr.storage.LocalStore):
        return LocalBackend(str(zstore.root), read_only=zstore.read_only)
    return None


def _not_a_file(path: Path) -> None:
    """A regular file where the store should be: one line that says so."""
    if path.exists() and not path.is_dir():
        raise StoreError(f"{path} is a file, not a folder of features; set store to the folder "
                         "`featcache extract` wrote, or to a new folder", fields=("store",))


def _local_mode(path: Path, read_only: bool) -> str:
    """'' when writable; otherwise why the store must be opened read-only."""
    _not_a_file(path)
    if read_only:
        if not path.is_dir():
            raise StoreError(f"{path} does not exist; run `featcache extract` first or set store to the "
                             "folder it wrote", fields=("store",))
        return "it was opened read-only"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if path.is_dir():  # exists on a read-only filesystem: reading still works
            return f"{path} is not writable: {exc.strerror}"
        raise StoreError(f"{path} cannot be created ({exc.strerror}); "
                         "set store to a folder you can write to", fields=("store",)) from None
    if not os.access(path, os.W_OK):
        return f"{path} is not writable"
    return ""
