"""Full check of one entry: every array's chunks and checksums (levels, int8 scale/offset, frames,
view parameters, the checksum record that ties them to positions and sample ids, statistics,
precision reports, commit markers), shapes and ids."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featcache.errors import StoreError
from featcache.store.reader import EntryReader, _pool


@dataclass
class BadSample:
    index: int
    sample_id: str
    what: str  # the level or array that failed
    reason: str


@dataclass
class VerifyReport:
    key: str
    samples_checked: int = 0
    problems: list[str] = field(default_factory=list)  # entry-wide problems
    bad_samples: list[BadSample] = field(default_factory=list)
    # what `featcache extract --repair` needs (store/repair.py): committed shards whose data
    # failed, whether the statistics did, and the problems no shard re-extraction can fix
    bad_shards: set[int] = field(default_factory=set)
    stats_bad: bool = False
    unfixable: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.bad_samples

    @property
    def bad_ids(self) -> list[str]:
        return sorted({b.sample_id for b in self.bad_samples})


def expected_arrays(reader: EntryReader) -> dict[str, tuple[int, ...] | None]:
    """Every array an entry of this layout holds, with its shape (None: depends on precision)."""
    lay = reader.layout
    n, v = lay.num_samples, lay.views
    p = max(1, len(lay.view_param_names))
    expected = {"frames": (n, v, 4), "view_params": (n, v, p), "committed": (lay.num_shards,)}
    if reader.version >= 2:
        expected["checksums"] = None  # its column count depends on the precision
    for lv in lay.levels:
        expected[f"levels/{lv.name}"] = (n, v, lv.channels, lv.height, lv.width)
        expected[f"report/{lv.name}"] = (lay.num_shards, 4)
        if reader.precision.quantized:
            expected[f"levels/{lv.name}__scale"] = (n, v, lv.channels)
            expected[f"levels/{lv.name}__offset"] = (n, v, lv.channels)
    return expected


def missing_nodes(reader: EntryReader, backend) -> list[str]:
    """Arrays whose zarr.json is gone (zarr cannot open them at all): one small read each, so
    `ls` names this damage without reading any chunk."""
    if "committed" not in reader.group and not reader.meta.get("complete"):
        return []  # a writer is creating the arrays right now
    names = list(expected_arrays(reader))
    if reader.meta.get("complete"):  # statistics, written at finalize
        names += [f"stats/{key}" for key in sorted(reader.meta.get("stats_crc32c") or {})]
    return [name for name in names if backend.get(f"{reader.key}/{name}/zarr.json") is None]


def _check_shapes(reader: EntryReader, report: VerifyReport) -> bool:
    expected = expected_arrays(reader)
    good = True
    for name, shape in expected.items():
        try:
            found = tuple(reader.array(name).shape)
        except StoreError as exc:
            report.problems.append(str(exc))
            good = False
            continue
        if shape is not None and found != shape:
            report.problems.append(f"array {name} has shape {found}, layout says {shape}")
            report.unfixable.append(report.problems[-1])
            good = False
    return good


def _check_metadata(reader: EntryReader, report: VerifyReport) -> None:
    ids = reader.ids
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        report.problems.append(f"sample ids are not unique: {dupes[:5]}")
        report.unfixable.append(report.problems[-1])
    if reader.meta.get("complete") and not reader.committed.all():
        missing = np.flatnonzero(~reader.committed)
        report.problems.append(f"marked complete but shards {missing[:5].tolist()} have no commit marker")
    if reader.meta.get("complete"):
        for level in reader.levels:
            try:  # checks each statistic's crc32c and, format 2, the checksum recorded at finalize
                reader.stats(level)
            except StoreError as exc:
                report.problems.append(str(exc))
                report.stats_bad = True
    for level in reader.levels:  # per-shard precision sums: every chunk's crc32c
        try:
            rows = np.asarray(reader.array(f"report/{level}")[:])
        except Exception as exc:
            report.problems.append(f"array report/{level} is corrupt ({type(exc).__name__}: {exc})")
            report.bad_shards |= _bad_rows(reader.array(f"report/{level}"), reader.committed)
            continue
        # a deleted chunk reads as the fill value, NaN: lost data in a committed shard
        lost = [int(k) for k in np.flatnonzero(reader.committed) if np.isnan(rows[k]).any()]
        if lost:
            report.problems.append(f"array report/{level}: committed shard(s) {lost[:5]} have no "
                                   "precision report (chunk missing)")
            report.bad_shards |= set(lost)


def _bad_rows(array, committed: np.ndarray) -> set[int]:
    """Committed shards whose row (chunk) of a per-shard array cannot be read."""
    bad = set()
    for shard in np.flatnonzero(committed):
        try:
            np.asarray(array[int(shard)])
        except Exception:  # the chunk's crc32c or codec failed
            bad.add(int(shard))
    return bad


def _check_sample(reader: EntryReader, index: int, report: VerifyReport) -> None:
    checks = [(level, lambda lv=level: reader.read(index, lv)) for level in reader.levels]
    checks += [("frames", lambda: reader.frames(index)), ("view_params", lambda: reader.view_params(index))]
    for what, fn in checks:
        try:
            data = fn()
        except StoreError as exc:
            report.bad_samples.append(BadSample(index, reader.ids[index], what, str(exc)))
            continue
        if what == "frames" and not np.isfinite(data).all():
            report.bad_samples.append(BadSample(index, reader.ids[index], what,
                                                "frames missing (NaN) in a committed shard"))


def _check_objects(reader: EntryReader, backend, report: VerifyReport) -> set[int]:
    """Committed shards whose level data objects are missing (zarr would read them as zeros) or,
    on a local folder, are links that leave the store (their bytes may change under it)."""
    lost: set[int] = set()
    if backend is None:
        return lost
    for name in _links_out(reader, backend):
        report.problems.append(f"{name.removeprefix(reader.key + '/')} is a link to outside the store")
        array, _, chunk = name.removeprefix(reader.key + "/").partition("/c/")
        if array.startswith("stats/"):
            report.stats_bad = True  # recomputed by the repair
        elif chunk.split("/")[0].isdigit():  # chunked by shard: the shard is extracted again
            lost.add(int(chunk.split("/")[0]))
        else:
            report.unfixable.append(report.problems[-1])
    for lv in reader.levels:
        present = set(backend.list(f"{reader.key}/levels/{lv}/c"))
        for shard in np.flatnonzero(reader.committed):
            key = f"{reader.key}/levels/{lv}/c/{shard}/0/0/0/0"
            if key not in present:
                report.problems.append(f"level {lv}: committed shard {shard} has no data object")
                lost.add(int(shard))
    return lost


def _links_out(reader: EntryReader, backend) -> list[str]:
    """Objects of the entry that are symbolic links resolving outside the store's folder."""
    root = getattr(backend, "root", None)
    if root is None:  # object stores have no links
        return []
    store = os.path.realpath(root)
    out = []
    for dirpath, dirnames, files in os.walk(os.path.join(root, reader.key)):
        for name in files + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) and os.path.commonpath([store, os.path.realpath(path)]) != store:
                out.append(os.path.relpath(path, root).replace(os.sep, "/"))
    return sorted(out)


def verify_entry(reader: EntryReader, backend=None) -> VerifyReport:
    """Read every committed sample and view of every level (each chunk's crc32c is checked on
    read) plus markers, shapes, ids and statistics. `backend` (FeatureStore.backend) adds a check
    that no committed shard's data object is missing."""
    report = VerifyReport(reader.key)
    if not _check_shapes(reader, report):
        report.unfixable = report.unfixable or list(report.problems)  # a missing array
        return report
    _check_metadata(reader, report)
    lost = _check_objects(reader, backend, report)
    size = reader.layout.shard_size
    todo = [i for i in range(reader.layout.num_samples)
            if reader.committed[i // size] and i // size not in lost]
    # samples are independent: check them on the reader's thread pool (appends are thread-safe)
    list(_pool().map(lambda i: _check_sample(reader, i, report), todo))
    report.samples_checked = len(todo)
    report.bad_samples.sort(key=lambda b: (b.index, b.what))
    report.bad_shards |= lost | {b.index // size for b in report.bad_samples}
    return report


# The outcome of the entry's last `featcache verify` (or `ls --verify`): the attributes of a small
# group node inside the entry, so plain zarr listings stay clean (FORMAT.md). One object put:
# atomic, and never part of what extraction writes or compares.
VERIFIED = "verified/zarr.json"


def record_verification(backend, report: VerifyReport) -> None:
    """Write when `report` was made and what it found; skipped on a store opened read-only."""
    if backend.read_only:
        return
    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    body = {"utc": when, "ok": report.ok, "samples_checked": report.samples_checked,
            "bad_samples": len(report.bad_ids), "problems": len(report.problems)}
    node = {"zarr_format": 3, "node_type": "group", "attributes": {"featcache": {"verified": body}}}
    backend.put(f"{report.key}/{VERIFIED}", json.dumps(node).encode())


def last_verification(backend, key: str) -> dict[str, Any] | None:
    """What record_verification wrote for entry `key`, None if never (or unreadable)."""
    raw = backend.get(f"{key}/{VERIFIED}")
    try:
        body = json.loads(raw)["attributes"]["featcache"]["verified"] if raw else None
    except (ValueError, KeyError, TypeError):
        return None
    return body if isinstance(body, dict) else None
