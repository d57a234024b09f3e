"""Listing summaries and garbage collection across a store's entries."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from featcache.store.claims import Claims
from featcache.store.reader import EntryReader
from featcache.store.store import FeatureStore
from featcache.store.verify import missing_nodes

# arrays whose chunk grid along the sample axis is the shard grid (chunk k == shard k); entries of
# format 1 have no checksums: listing its prefix finds nothing
_SHARDED = ("frames", "view_params", "checksums")


@dataclass
class GcReport:
    claims_removed: int = 0
    shards_cleaned: list[tuple[str, int]] = field(default_factory=list)  # (entry, shard)
    bytes_freed: int = 0
    entries_removed: list[str] = field(default_factory=list)  # abandoned entries with no shard
    damaged: dict[str, str] = field(default_factory=dict)  # entries left alone: key -> why


def entry_summary(store: FeatureStore, key: str, reader: EntryReader | None = None) -> dict[str, Any]:
    """One row of `featcache ls`: who made it, what it holds, how far it got."""
    reader = reader or store.open(key, allow_incomplete=True)
    meta = reader.meta
    return {"key": key, "dataset": (meta.get("dataset") or {}).get("name", "?"),
            "teacher": (meta.get("teacher") or {}).get("name", "?"),
            # two checkpoints under one teacher name (two users' teacher.pth) are told apart here
            "weights": str((meta.get("teacher") or {}).get("weights_sha256") or "")[:8],
            "levels": list(reader.levels), "samples": reader.layout.num_samples,
            "views": reader.layout.views, "precision": reader.layout.precision,
            "complete_fraction": 1.0 if reader.complete else reader.committed_fraction,
            "complete": reader.complete, "bytes": store.size_on_disk(key),
            "created": meta.get("created_utc", "?"),
            "missing": missing_nodes(reader, store.backend)}  # arrays whose zarr.json is gone


def _shard_prefixes(reader: EntryReader) -> list[str]:
    names = [f"levels/{lv}" for lv in reader.levels]
    if reader.precision.quantized:
        names += [f"levels/{lv}__{part}" for lv in reader.levels for part in ("scale", "offset")]
    names += [f"report/{lv}" for lv in reader.levels]
    return names + list(_SHARDED)


def clean_shard(store: FeatureStore, reader: EntryReader, shard: int) -> int:
    """Delete every chunk object of one uncommitted shard; returns bytes freed."""
    freed = 0
    for name in _shard_prefixes(reader):
        chunk_dir = f"{reader.key}/{name}/c"
        sizes = store.backend.sizes(chunk_dir)
        for obj, size in sizes.items():
            if obj.startswith(f"{chunk_dir}/{shard}/") or obj == f"{chunk_dir}/{shard}":
                store.backend.delete(obj)
                freed += size
    return freed


def _abandoned(store: FeatureStore, reader: EntryReader, claims: Claims) -> bool:
    """An entry nobody will finish: no shard committed, no live claim, and created longer than a
    claim's lease ago (a writer claims its first shard right after creating the entry). What a
    failed extraction leaves behind; an entry with committed shards is kept, since re-running the
    extract resumes it."""
    if reader.complete or reader.committed.any() or claims.live():
        return False
    try:
        created = dt.datetime.fromisoformat(str(reader.meta.get("created_utc"))).timestamp()
    except ValueError:
        return False
    return time.time() - created >= store.claim_ttl_s


def gc(store: FeatureStore) -> GcReport:
    """Remove expired claims, the data of uncommitted shards nobody holds a live claim on, and
    abandoned entries (see _abandoned). Damaged entries are reported, never touched.

    gc claims each shard before deleting its data, so writers that claim shards (next_shard /
    claim) are safe to run alongside; a writer that writes without claiming is not.
    """
    store.backend.check_writable("collect garbage")
    report = GcReport()
    readers, report.damaged = store.scan()
    for key, reader in readers.items():
        claims = Claims(store.backend, key, owner="featcache-gc")
        report.claims_removed += claims.remove_expired()
        if _abandoned(store, reader, claims):
            report.bytes_freed += store.size_on_disk(key)
            store.remove(key)
            report.entries_removed.append(key)
            continue
        committed = reader.committed
        for shard in np.flatnonzero(~committed):
            shard = int(shard)
            if not claims.claim(shard):
                continue  # a live writer holds it
            try:
                if reader.group["committed"][shard]:  # committed just before our claim
                    continue
                freed = clean_shard(store, reader, shard)
            finally:
                claims.release(shard)
            if freed:
                report.shards_cleaned.append((key, shard))
                report.bytes_freed += freed
    return report
