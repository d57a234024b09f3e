"""A small on-disk cache of file digests and derived facts, outside every dataset folder.

Fingerprinting a dataset hashes every source file; on a 600-image dataset that is seconds, on an
MSD task minutes. The cache maps (absolute path, size, mtime_ns, inode, ctime_ns) to the file's
sha256, so a repeat only stats the files. mtime alone can be put back (`touch -r`, `cp -p`,
rsync) after the content changed; the inode changes when a file is replaced and ctime whenever
its content or metadata is touched, and neither can be set by a user. The same key also caches
cheap-to-store, costly-to-compute facts such as "this file decodes" or "these slices of this label
volume hold foreground".

It lives in $FEATCACHE_CACHE_DIR, else ~/.cache/featcache, as one SQLite file (safe for several
processes; each thread gets its own connection). If that folder cannot be written the cache is
simply bypassed: it is an accelerator, never a source of truth.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

_SCHEMA = (
    # digests2: digests (path, size, mtime_ns only) could serve a stale hash; it is left unused
    "CREATE TABLE IF NOT EXISTS digests2 (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
    "ino INTEGER, ctime_ns INTEGER, sha256 TEXT)",
    "CREATE TABLE IF NOT EXISTS facts (key TEXT PRIMARY KEY, value TEXT)",
)
_local = threading.local()


def cache_dir() -> Path:
    """$FEATCACHE_CACHE_DIR, else ~/.cache/featcache."""
    env = os.environ.get("FEATCACHE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "featcache"


def _connection() -> sqlite3.Connection | None:
    """One connection per (thread, process, cache file); None when the cache cannot be opened."""
    path = cache_dir() / "files.sqlite3"
    state = getattr(_local, "state", None)
    if state is not None and state[0] == (os.getpid(), path):
        return state[1]
    conn: sqlite3.Connection | None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")  # losing a cache row on power loss is harmless
        for statement in _SCHEMA:
            conn.execute(statement)
    except (OSError, sqlite3.Error):
        conn = None
    _local.state = ((os.getpid(), path), conn)
    return conn


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    """What changes whenever a file is rewritten or replaced, even with its mtime put back."""
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns


def file_key(path: Path) -> str:
    """'abs path|size|mtime_ns|inode|ctime_ns': changes whenever the file is rewritten or replaced."""
    return f"{path.resolve()}|{'|'.join(map(str, _stamp(path.stat())))}"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """sha256 of the file's bytes, served from the cache while path, size, mtime, inode and ctime
    are unchanged."""
    path = Path(path)
    stamp = _stamp(path.stat())
    resolved = str(path.resolve())
    conn = _connection()
    if conn is not None:
        try:
            row = conn.execute("SELECT size, mtime_ns, ino, ctime_ns, sha256 FROM digests2 WHERE path = ?",
                               (resolved,)).fetchone()
            if row is not None and tuple(row[:4]) == stamp:
                return str(row[4])
        except sqlite3.Error:
            conn = None
    digest = sha256_of(path)
    if conn is not None:
        try:
            conn.execute("INSERT OR REPLACE INTO digests2 VALUES (?, ?, ?, ?, ?, ?)",
                         (resolved, *stamp, digest))
        except sqlite3.Error:
            pass
    return digest


def digest_files(paths: list[Path], salt: str = "") -> str:
    """One sha256 over several files' digests (an image and its masks) plus a salt."""
    h = hashlib.sha256(salt.encode())
    for p in paths:
        h.update(file_digest(p).encode())
    return h.hexdigest()


def cached_fact(key: str, compute: Callable[[], str]) -> str:
    """Return the cached string for `key`, computing and storing it on a miss.

    Callers put file_key(...) of every input file into `key`, so a changed file is a miss.
    """
    conn = _connection()
    if conn is not None:
        try:
            row = conn.execute("SELECT value FROM facts WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return str(row[0])
        except sqlite3.Error:
            conn = None
    value = compute()
    if conn is not None:
        try:
            conn.execute("INSERT OR REPLACE INTO facts VALUES (?, ?)", (key, value))
        except sqlite3.Error:
            pass
    return value
