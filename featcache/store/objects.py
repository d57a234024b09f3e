"""Plain object access beside zarr: claims, sizes, listing and deletion.

zarr handles arrays; this small layer handles what zarr has no API for (exclusive creation of a
lease object, sizes on disk, removing a prefix). Local folders use the OS directly (O_EXCL gives a
true create-if-absent); every other URL goes through fsspec, whose `pipe_file(mode="create")` is
a conditional PUT (If-None-Match: *) on S3 and an in-process check on memory://.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

from featcache.errors import ReadOnlyStoreError, StoreError


class ObjectStore:
    """Keys are '/'-separated paths relative to the store root, like zarr keys."""

    def __init__(self, url: str, read_only: bool, storage_options: dict[str, Any] | None = None,
                 read_only_reason: str = "") -> None:
        self.url = url
        self.read_only = read_only
        self.read_only_reason = read_only_reason or "it was opened read-only"
        self.local = "://" not in url or url.startswith("file://")
        if self.local:
            self.root = str(Path(url.removeprefix("file://")).expanduser())
            self.fs = None
        else:
            import fsspec

            self.fs, self.root = fsspec.url_to_fs(url, **(storage_options or {}))
            self.root = self.root.rstrip("/")

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

    def put_exclusive(self, key: str, data: bytes) -> bool:
        """Create `key` only if absent; True when this call created it."""
        self.check_writable(f"write {key}")
        path = self._path(key)
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            except OSError as exc:
                raise self._wrap_os(exc, f"write {key}") from None
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return True
        try:
            self.fs.pipe_file(path, data, mode="create")
        except (FileExistsError, ValueError):
            return False
        except OSError as exc:
            if "PreconditionFailed" in str(exc) or "412" in str(exc):
                return False
            raise
        return True

    def put(self, key: str, data: bytes) -> None:
        self.check_writable(f"write {key}")
        path = self._path(key)
        if self.local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)  # atomic: readers never see half a file
        else:
            self.fs.pipe_file(path, data)

    def get(self, key: str) -> bytes | None:
        try:
            if self.local:
                return Path(self._path(key)).read_bytes()
            return self.fs.cat_file(self._path(key))
        except (FileNotFoundError, IsADirectoryError):
            return None

    def delete(self, key: str) -> None:
        self.check_writable(f"delete {key}")
        try:
            if self.local:
                os.remove(self._path(key))
            else:
                self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> list[str]:
        """Keys of the objects directly or indirectly under `prefix` (a folder)."""
        base = self._path(prefix)
        if self.local:
            if not os.path.isdir(base):
                return []
            out = []
            for dirpath, _, files in os.walk(base):
                rel = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
                out += [f"{rel}/{f}" for f in files]
            return sorted(out)
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        return sorted(p[len(self.root) + 1:] for p in found)

    def children(self) -> list[str]:
        """Names of the folders (prefixes) directly under the store root."""
        if self.local:
            try:
                return sorted(e.name for e in os.scandir(self.root) if e.is_dir())
            except FileNotFoundError:
                return []
        self.fs.invalidate_cache(self.root)
        try:
            found = self.fs.ls(self.root, detail=True)
        except FileNotFoundError:
            return []
        return sorted(info["name"].rstrip("/").rsplit("/", 1)[-1] for info in found
                      if info.get("type") == "directory")

    def rename_out_of_sight(self, prefix: str, hidden: str) -> bool:
        """Atomically move a local folder to `hidden` (a name no listing shows); False where the
        backend has no atomic rename (object stores)."""
        if not self.local:
            return False
        self.check_writable(f"remove {prefix}")
        os.makedirs(os.path.dirname(self._path(hidden)), exist_ok=True)
        try:
            os.rename(self._path(prefix), self._path(hidden))
        except OSError as exc:
            raise self._wrap_os(exc, f"remove {prefix}") from None
        return True

    def prune_empty(self, prefix: str) -> None:
        """Remove a local folder if it is empty (object stores have no empty folders)."""
        if self.local:
            try:
                os.rmdir(self._path(prefix))
            except OSError:
                pass

    def sizes(self, prefix: str) -> dict[str, int]:
        """key -> bytes on disk for every object under `prefix`."""
        if self.local:
            return {k: os.path.getsize(self._path(k)) for k in self.list(prefix)}
        base = self._path(prefix)
        self.fs.invalidate_cache(base)
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return {}
        return {p[len(self.root) + 1:]: int(info.get("size") or 0) for p, info in found.items()}

    def delete_prefix(self, prefix: str) -> None:
        self.check_writable(f"delete {prefix}")
        path = self._path(prefix)
        try:
            if self.local:
                shutil.rmtree(path)
            else:
                self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise self._wrap_os(exc, f"delete {prefix}") from None
