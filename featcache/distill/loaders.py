"""Prefetching loaders over the store: worker processes decode images and read teacher features
ahead of the student, so a training step never waits on I/O.

Workers persist across epochs (the sampler is re-seeded per epoch in the main process, so the
same loader serves every epoch) and keep `prefetch_factor` batches ready each.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from featcache.errors import ConfigError


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def resolve_workers(setting: int | str, world_size: int = 1) -> int:
    """"auto" -> min(4, CPUs per rank - 1): one core stays with the training process."""
    if setting == "auto":
        return max(0, min(4, available_cpus() // max(1, world_size) - 1))
    if not isinstance(setting, int) or setting < 0:
        raise ConfigError(f"training.num_workers {setting!r}: use a count >= 0 or auto")
    return setting


def make_loader(dataset: Dataset, batch_size: int, workers: int, prefetch_factor: int,
                device: torch.device, sampler: Sampler | None = None, drop_last: bool = False
                ) -> DataLoader:
    """A DataLoader with persistent, prefetching workers when workers > 0 (order = sampler's)."""
    extra = {"persistent_workers": True, "prefetch_factor": prefetch_factor} if workers > 0 else {}
    # Its own generator: starting workers must not consume the global RNG (the gate's dropout),
    # or a resumed run (whose workers start at a later epoch) would diverge from an uninterrupted one.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                      num_workers=workers, drop_last=drop_last, generator=torch.Generator().manual_seed(0),
                      pin_memory=device.type == "cuda", **extra)
