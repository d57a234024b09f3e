"""Resident features: teacher targets decoded once, then every batch a gather from memory.

Medical datasets are small (BUSI 780 images, Kvasir-SEG 1,000, APTOS 3,662: a few GB of LiteMedSAM
features in fp16), so the training process can hold every training item's target on each tap's
loss grid (float16, as every batch carries it) in RAM or GPU memory, and a step reads none of the
store. Resampling is deterministic per (sample, view) (augmentation is photometric, applied to the
image only), so holding the targets instead of the stored maps changes no number, and the dec3-like
taps on the teacher's own grid and the coarse ones together take less than the maps themselves.

training.resident_features: "auto" (the default) holds a teacher's targets when they fit in half
of the memory free now (the GPU's when training on one, else RAM; RAM split between the ranks
under torchrun); a size in GiB caps them at that, never above what is free; "off" reads the
store every step. Teachers are taken in manifest order, each whole (all its taps on every item)
or not at all; one that does not fit is read per step, as before, and the run says so.

Every map is read through the store's verified path (EntryReader.read: checksums against the
commit record), so a damaged entry fails by name here, before the first step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch.utils.data import default_collate

from featcache.distill import memory
from featcache.distill.batches import Finish
from featcache.distill.data import DistillItems
from featcache.distill.resample import target_grid
from featcache.events import FeaturesResident, ProgressFn

GiB = 2**30
CHUNK = 32  # items decoded and resampled together
READ_THREADS = 4  # the store's decoders release the GIL


@dataclass
class ResidentTargets:
    """Per tap key: targets (items, C, gh, gw) float16 and validity (items, 1, gh, gw), row = the
    item's position in its DistillItems."""

    targets: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor]

    def gather(self, key: str, items: torch.Tensor, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
        held = self.targets[key]
        rows = items.to(held.device)
        nb = device.type == "cuda"
        return (held.index_select(0, rows).to(device, non_blocking=nb),
                self.valid[key].index_select(0, rows).to(device, non_blocking=nb))


def _shapes(items: DistillItems, teacher: str) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """tap key -> (target shape, validity shape) per item, for the taps of `teacher`."""
    out = {}
    for (name, _), taps in items.taps.items():
        for t in taps:
            if name == teacher:
                grid = target_grid(t.grid, t.loss_grid)
                out[t.key] = ((t.channels, *grid), (1, *grid))
    return out


def item_bytes(items: DistillItems, teacher: str) -> int:
    """Bytes one item's targets of `teacher` take resident: float16 targets, float32 validity."""
    total = 0
    for target, valid in _shapes(items, teacher).values():
        total += 2 * torch.Size(target).numel() + 4 * torch.Size(valid).numel()
    return total


def budgets(setting: float | str, device: torch.device, world_size: int = 1
            ) -> tuple[list[tuple[torch.device, int]], int]:
    """([(where, bytes it may hold)], the total cap) for training.resident_features: the GPU first
    when training on one, then RAM; "auto" half of what is free in each, a size in GiB at most
    that in all and never more than what is free; "off" nothing."""
    if setting == "off":
        return [], 0
    places = ([device] if device.type == "cuda" else []) + [torch.device("cpu")]
    pools = []
    for place in places:
        free, _ = memory.free_bytes(place)
        if place.type == "cpu":
            free //= max(1, world_size)  # the ranks of one box share its RAM
        pools.append((place, free // 2 if setting == "auto" else free))
    cap = sum(size for _, size in pools) if setting == "auto" else int(float(setting) * GiB)
    return pools, cap


def plan(items: DistillItems, setting: float | str, device: torch.device,
         world_size: int = 1) -> dict[str, torch.device]:
    """teacher -> where its targets are held, for the teachers that fit (manifest order)."""
    pools, cap = budgets(setting, device, world_size)
    placed: dict[str, torch.device] = {}
    used = 0
    for teacher in items.streamed_teachers():
        need = item_bytes(items, teacher) * len(items)
        if used + need > cap:
            continue
        for k, (place, left) in enumerate(pools):
            if need <= left:
                pools[k] = (place, left - need)
                placed[teacher], used = place, used + need
                break
    return placed


def make_resident(items: DistillItems, setting: float | str, device: torch.device, progress: ProgressFn,
                  world_size: int = 1) -> None:
    """Decode the targets of the teachers that fit into memory (once: a no-op when done before)."""
    if items.resident is not None or not items.with_teachers or setting == "off":
        return
    placed = plan(items, setting, device, world_size)
    teachers = [t for t in items.streamed_teachers() if t in placed]
    streamed = tuple(t for t in items.streamed_teachers() if t not in placed)
    mib = sum(item_bytes(items, t) for t in teachers) * len(items) / 2**20
    where = ", ".join(sorted({"RAM" if p.type == "cpu" else f"GPU {p}" for p in placed.values()})) or "-"
    progress(FeaturesResident(0, len(items) if teachers else 0, mib, where, streamed))
    if not teachers:
        return
    held = ResidentTargets({}, {})
    for teacher in teachers:
        place = placed[teacher]
        pin = device.type == "cuda" and place.type == "cpu"  # host memory a GPU copies from
        for key, (target, valid) in _shapes(items, teacher).items():
            held.targets[key] = torch.empty(len(items), *target, dtype=torch.float16, device=place,
                                            pin_memory=pin)
            held.valid[key] = torch.empty(len(items), *valid, device=place, pin_memory=pin)
    _fill(items, held, teachers, device, lambda done: progress(
        FeaturesResident(done, len(items), mib, where, streamed)))
    items.resident, items.resident_teachers = held, frozenset(teachers)


def _fill(items: DistillItems, held: ResidentTargets, teachers: list[str], device: torch.device,
          done: Callable[[int], None]) -> None:
    """Read `teachers`' maps of every item (threads), resample them in chunks on `device` as a
    training batch would be, and copy the targets into `held`."""
    finish = Finish(items, device)
    read = functools.partial(items.stored, teachers=teachers)
    read(0)  # the first read opens the readers' per-level state, before threads share it
    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="featcache-resident") as pool:
        for start in range(0, len(items), CHUNK):
            positions = list(range(start, min(len(items), start + CHUNK)))
            batch = default_collate(list(pool.map(read, positions)))
            batch["item"] = torch.tensor(positions)
            for key, value in finish.targets(batch, only=teachers).items():
                kind, tap = key.split(":", 1)
                (held.targets if kind == "t" else held.valid)[tap][start:start + len(positions)] = value
            done(positions[-1] + 1)
