"""Reusing committed shards of an earlier, unfinished entry whose key changed.

The entry key is content-addressed, so fixing one bad file mid-dataset gives the re-run a new key.
Shards of the earlier partial entry whose samples are byte-identical (same ids, same content
digests, same teacher recipe) are copied into the new entry instead of being extracted again.
Every entry records one digest per shard (attrs featcache.dataset.shard_digests) for this.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from featcache.data.base import SegmentationDataset
from featcache.errors import FeatcacheError
from featcache.extract.pipeline import ShardRun, shard_stats
from featcache.store import EntryLayout, EntryWriter, FeatureStore


def shard_digests(dataset: SegmentationDataset, indices: list[int], layout: EntryLayout) -> list[str]:
    """sha256 per shard over its samples' (id, content digest), in entry order."""
    out = []
    for shard in range(layout.num_shards):
        h = hashlib.sha256()
        for pos in range(*layout.shard_range(shard)):
            index = indices[pos]
            h.update(f"{dataset.samples[index].id}\0{dataset.content_digest(index)}\n".encode())
        out.append(h.hexdigest())
    return out


def _same_recipe(meta: dict[str, Any], attrs: dict[str, Any], layout: EntryLayout) -> bool:
    """Compression may differ: it is lossless, and adopted shards are decoded and re-encoded."""
    mine = layout.to_dict()
    theirs = dict(meta.get("layout", {}))
    return (meta.get("teacher", {}).get("fingerprint") == attrs["teacher"]["fingerprint"]
            and meta.get("views") == attrs["views"]
            and all(theirs.get(k) == mine.get(k) for k in ("views", "shard_size", "precision", "levels",
                                                            "view_param_names")))


def adopt_shards(store: FeatureStore, writer: EntryWriter, attrs: dict[str, Any]) -> ShardRun:
    """Copy committed, content-identical shards of other incomplete entries into `writer`'s entry."""
    run = ShardRun()
    wanted = {attrs["dataset"]["shard_digests"][k]: k for k in writer.missing_shards()}
    prefix = writer.key.split(".", 1)[0] + "."
    for key in store.entries():
        if not wanted or key == writer.key or not key.startswith(prefix):
            continue
        try:
            old = store.open(key, allow_incomplete=True)
        except FeatcacheError:
            continue
        if old.complete or not _same_recipe(old.meta, attrs, writer.layout):
            continue
        committed = np.asarray(old.group["committed"][:]).astype(bool)
        for j, digest in enumerate(old.meta.get("dataset", {}).get("shard_digests", [])):
            k = wanted.get(digest)
            if k is None or not committed[j] or not writer.claim(k):
                continue
            rows = list(range(*old.layout.shard_range(j)))
            features = {lv.name: old.read_many(rows, lv.name) for lv in writer.layout.levels}
            frames = np.stack([old.frames(i) for i in rows])
            params = np.stack([old.view_params(i) for i in rows])
            written = writer.write_shard(k, features, frames, params)
            run.add(k, written.nbytes, shard_stats(written.values))
            del wanted[digest]
    return run
