"""Prefetching loaders over the store: worker processes decode images and read teacher features
ahead of the student, so a training step never waits on I/O; the training process finishes each
batch of training items as it arrives (batches.py: augmentation and teacher targets, batched, on
the training device).

Training batches of every epoch come from one loader iterator (`EpochBatches`), so workers keep
`prefetch_factor` batches ready each across epoch boundaries too; validation's loader keeps its
workers between epochs (persistent workers).
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from featcache.distill.batches import Finish
from featcache.distill.data import DistillItems
from featcache.errors import ConfigError
from featcache.store import single_threaded_decoding


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


class EpochBatches(Sampler[list[int]]):
    """The batches of epochs start..stop-1 back to back, each epoch's indices from
    `draw(epoch)` cut into batches (the last one dropped if short and drop_last).

    One loader iterator over all epochs lets the workers build the next epoch's first batches
    while the current epoch's last steps train. Re-iterating a loader per epoch instead left the
    student waiting at every epoch start for a batch built from scratch, by a worker competing
    with the training threads for the cores: 0.15-0.25 s, on one step in 7, for the demo on 2
    CPU cores."""

    def __init__(self, draw: Callable[[int], list[int]], batch_size: int, drop_last: bool,
                 start: int, stop: int, per_epoch: int, skip: int = 0,
                 extra: Callable[[int, int], list[int]] | None = None) -> None:
        """skip: batches of epoch `start` already trained on (a run interrupted mid-epoch);
        extra(epoch, batch number): indices appended to that batch (semi-supervised training's
        unlabelled images), None for none."""
        self.draw, self.batch_size, self.drop_last = draw, batch_size, drop_last
        self.start, self.stop, self.per_epoch, self.skip = start, stop, per_epoch, skip
        self.extra = extra

    def __iter__(self) -> Iterator[list[int]]:
        for epoch in range(self.start, self.stop):
            indices = self.draw(epoch)
            first = self.skip * self.batch_size if epoch == self.start else 0
            for k in range(first, len(indices), self.batch_size):
                batch = indices[k:k + self.batch_size]
                if len(batch) < self.batch_size and self.drop_last:
                    break
                yield batch + (self.extra(epoch, k // self.batch_size) if self.extra else [])

    def __len__(self) -> int:
        return max(0, max(0, self.stop - self.start) * self.per_epoch - self.skip)


def low_priority_workers(setting: str, device: torch.device) -> bool:
    """training.worker_priority: only "low" lowers it; "auto" keeps normal priority.

    "low" (nice 19) gains a few percent on a CPU box that runs nothing else (see _init_worker).
    On a shared machine it is a trap: with one other busy process beside training (a test
    suite, a second run) the worker got ~1/70 of a core and a 2-core demo step went from ~0.5 s
    to ~13 s, the student waiting on its batch. Hence opt-in."""
    return setting == "low"


def _init_worker(low_priority: bool, _: int) -> None:
    # torch already runs one thread in each worker; the store's decoder must not start more.
    single_threaded_decoding()
    # Ctrl-C reaches the whole process group: the training process stops at a step boundary
    # (guards.py) and then shuts its workers down; a worker dying first would fail that step.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if low_priority and hasattr(os, "nice"):
        # When the training threads use every core (CPU training), a worker woken for its next
        # batch preempted one of them, and the others then waited for it at their next
        # synchronisation: on 2 cores a distillation step took 18-27 ms longer with a batch being
        # built beside it than without. At nice 19 the worker waits for a free moment instead
        # (the step is then as fast as with no worker busy), and still gets a core whenever the
        # student waits for data. Raising one's own niceness needs no privilege.
        os.nice(19)


class FinishingLoader(DataLoader):
    """A DataLoader over DistillItems whose batches the training process finishes as they come."""

    def __init__(self, dataset: DistillItems, finish: Finish, **options: Any) -> None:
        super().__init__(dataset, **options)
        self.finish = finish

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return map(self.finish, super().__iter__())


def make_loader(dataset: Dataset, batch_size: int, workers: int, prefetch_factor: int,
                device: torch.device, batches: EpochBatches | None = None,
                low_priority: bool = False) -> DataLoader:
    """A DataLoader with persistent, prefetching workers when workers > 0 (at nice 19 if
    low_priority), in the order of `batches` if given, else in order in batches of batch_size.
    Over DistillItems its batches come finished (batches.Finish) on `device`."""
    extra = {"persistent_workers": True, "prefetch_factor": prefetch_factor} if workers > 0 else {}
    order = {"batch_sampler": batches} if batches is not None else {"batch_size": batch_size}
    # Its own generator: starting workers must not consume the global RNG (the gate's dropout),
    # or a resumed run (whose workers start at a later epoch) would diverge from an uninterrupted one.
    options = dict(shuffle=False, num_workers=workers,
                   worker_init_fn=functools.partial(_init_worker, low_priority),
                   generator=torch.Generator().manual_seed(0), pin_memory=device.type == "cuda",
                   **order, **extra)
    if isinstance(dataset, DistillItems):
        return FinishingLoader(dataset, Finish(dataset, device), **options)
    return DataLoader(dataset, **options)
