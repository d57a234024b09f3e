"""A torch Dataset over one entry, plus a read-ahead iterator that overlaps reads with compute."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from torch.utils.data import Dataset

from featcache.errors import StoreError
from featcache.store.reader import EntryReader


class FeatureDataset(Dataset):
    """Items are (sample index, view) pairs of committed samples.

    item k -> {level: float32 tensor (C, H, W), "index": int, "view": int, "frame": (4,) tensor}
    """

    def __init__(self, reader: EntryReader, levels: Sequence[str] | None = None,
                 indices: Sequence[int] | None = None, views: Sequence[int] | None = None) -> None:
        self.reader = reader
        self.levels = list(levels or reader.levels)
        unknown = [lv for lv in self.levels if lv not in reader.levels]
        if unknown:
            raise StoreError(f"entry {reader.key} has no level {unknown[0]!r}; it has "
                             f"{', '.join(reader.levels)}")
        indices = range(len(reader.ids)) if indices is None else indices
        views = range(reader.layout.views) if views is None else views
        self.items = [(int(i), int(v)) for i in indices for v in views]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> dict[str, Any]:
        index, view = self.items[k]
        out: dict[str, Any] = {lv: torch.from_numpy(self.reader.read(index, lv, view)) for lv in self.levels}
        out["index"], out["view"] = index, view
        out["frame"] = torch.from_numpy(self.reader.frames(index)[view])
        return out


def prefetch(dataset: Dataset, order: Iterable[int] | None = None, depth: int = 8,
             workers: int = 4) -> Iterator[Any]:
    """Yield dataset[k] for k in `order` (default 0..len-1), keeping `depth` reads in flight on
    `workers` threads; order is preserved. Reads release the GIL (file I/O, blosc, zstd, crc32c)."""
    keys = iter(range(len(dataset)) if order is None else order)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="featcache-prefetch") as pool:
        pending: deque = deque()
        for k in keys:
            pending.append(pool.submit(dataset.__getitem__, k))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
