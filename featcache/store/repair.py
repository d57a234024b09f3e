"""Repairing an entry in place (`featcache extract ... --repair`): the shards that fail
verification are taken back out of the committed set and extracted again, under the same
protocol as a first extraction.

Order matters for readers running beside the repair: the entry is first marked incomplete, then
each damaged shard's commit marker is cleared (so nobody reads it as committed while it is being
rewritten), then its objects are deleted (a partial write into a corrupt shard object would have
to read it back, and a shard written from nothing is byte for byte what a fresh extraction
writes). The extraction then fills the uncommitted shards and finalizes the entry as usual.
"""

from __future__ import annotations

import json
from typing import Any

from featcache.errors import CorruptEntryError
from featcache.store.layout import EntryLayout
from featcache.store.maintenance import clean_shard
from featcache.store.store import FeatureStore
from featcache.store.verify import VERIFIED, verify_entry


def reopen_damaged(store: FeatureStore, key: str, layout: EntryLayout,
                   attrs: dict[str, Any]) -> list[int] | None:
    """Verify entry `key` and reopen it for repair: the damaged shards, now uncommitted, or None
    when it verifies (then nothing is written). [] when no shard needs extracting: a lost array
    node was recreated, or only the statistics are damaged or a shard of a complete entry lacks
    its marker (the entry is then incomplete, and the extraction finalizes it again). Damage that
    no shard re-extraction fixes (a wrong array shape, duplicate ids) is a CorruptEntryError
    naming what does."""
    if verify_entry(store.open(key, allow_incomplete=True), store.backend).ok:
        return None
    store.backend.delete(f"{key}/{VERIFIED}")  # the entry changes: the old outcome is stale
    _drop_garbled_nodes(store, key)
    _restore_sample_ids(store, key, layout)
    # reopening recreates array nodes whose zarr.json is gone, with the spec they were made with
    writer = store.create_entry(key, layout, attrs)
    reader = store.open(key, allow_incomplete=True)
    report = verify_entry(reader, store.backend)
    if report.unfixable:
        raise CorruptEntryError(f"entry {key} cannot be repaired shard by shard ({report.unfixable[0]}); "
                                f"`featcache rm {key}`, then the same `featcache extract`")
    if report.ok:
        return []
    meta = dict(writer.group.attrs["featcache"])
    meta["complete"] = False
    writer.group.attrs["featcache"] = meta
    shards = sorted(report.bad_shards)
    for shard in shards:
        writer.group["committed"][shard] = 0
        if writer.claim(shard):  # a live writer holding it would rewrite it anyway
            try:
                clean_shard(store, reader, shard)
            finally:
                writer.release(shard)
    return shards


def _drop_garbled_nodes(store: FeatureStore, key: str) -> None:
    """Delete the zarr.json of every node inside the entry that is no JSON object: zarr cannot
    even look past it, and reopening recreates an array node that is gone (the entry's own
    zarr.json is not touched: without it the entry cannot be opened at all)."""
    for name in store.backend.list(key):
        if not name.endswith("/zarr.json") or name == f"{key}/zarr.json":
            continue
        try:
            ok = isinstance(json.loads(store.backend.get(name) or b""), dict)
        except ValueError:
            ok = False
        if not ok:
            store.backend.delete(name)


def _restore_sample_ids(store: FeatureStore, key: str, layout: EntryLayout) -> None:
    """An edited `sample_ids` is restored from the recipe: the entry key is a hash of the dataset
    fingerprint, which covers every sample id, so the ids this key was extracted with are the
    layout's. The checksum record then tells whether each position's data is that sample's."""
    group = store.root[key]
    meta = dict(group.attrs["featcache"])
    stored = meta.get("layout")
    if meta.get("sample_ids") == list(layout.sample_ids) or not (
            isinstance(stored, dict) and layout.same_data(stored)):
        return
    meta["sample_ids"] = list(layout.sample_ids)
    group.attrs["featcache"] = meta


def repair_command(meta: dict[str, Any]) -> str:
    """The `featcache extract … --repair` that repairs an entry, from what the entry records:
    teacher, arch, dataset, root, split, views, view seed, precision and levels, then the options
    it does not record, named for the user to add as they extracted (teacher weights, a root)."""
    teacher, dataset = meta.get("teacher") or {}, meta.get("dataset") or {}
    layout, views = meta.get("layout") or {}, meta.get("views") or {}
    parts = ["featcache extract", f"--teacher {teacher.get('name', '?')}",
             f"--dataset {dataset.get('name', '?')}"]
    arch = teacher.get("arch")  # a stored arch with a suffix (`vit_b-custom(...)`) is no option value
    options = [("--arch", arch if arch and "(" not in str(arch) else None, None),
               ("--root", dataset.get("root"), None), ("--split", dataset.get("split"), "all"),
               ("--views", layout.get("views"), 1), ("--view-seed", views.get("seed"), 0),
               ("--precision", layout.get("precision"), "fp16"),
               ("--shard-size", layout.get("shard_size"), 16),  # the layout must match to reopen
               ("--levels", ",".join(lv["name"] for lv in layout.get("levels", [])) or None, None)]
    parts += [f"{flag} {value}" for flag, value, default in options if value not in (None, "", default)]
    unrecorded = ([] if dataset.get("root") else ["--root"]) + ["--checkpoint or --random-init"]
    return f"`{' '.join([*parts, '--repair'])}` with {', '.join(unrecorded)} as it was extracted"
