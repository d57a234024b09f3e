"""Data-parallel training: process group set-up from torchrun's environment, and the
dataset-balanced sampler sharded across ranks.

`torchrun --nproc_per_node N -m featcache distill --manifest m.yaml` sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `setup` reads them and joins the group (gloo on CPU,
nccl on CUDA). Without them training runs as one process and nothing here changes it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from featcache.devices import resolve_device
from featcache.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # we initialised the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def env_rank() -> int:
    """This process's rank under torchrun (0 when not launched by it)."""
    return int(os.environ.get("RANK", "0"))


def setup(device_name: str) -> tuple[DistContext, torch.device]:
    """Join the process group if launched with WORLD_SIZE > 1; returns the context and the device
    this rank trains on (cuda:LOCAL_RANK with CUDA, else cpu)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = env_rank(), int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    plain = resolve_device(device_name, "training.device")
    cuda = plain.type == "cuda"
    if world <= 1:
        return DistContext(), plain
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise ConfigError(f"WORLD_SIZE={world} but MASTER_ADDR/MASTER_PORT are not set; "
                          "launch with `torchrun --nproc_per_node N -m featcache distill ...`")
    device = torch.device("cuda", local) if cuda else plain  # one GPU per rank
    owns = not dist.is_initialized()
    if owns:
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    return DistContext(rank, world, local, owns), device


def teardown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a float64 CPU tensor over ranks (identity for one process)."""
    if not ctx.active:
        return values
    backend_cuda = dist.get_backend() == "nccl"
    buf = values.to("cuda") if backend_cuda else values.clone()
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.cpu()


def sync_buffers(module: torch.nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank. DDP broadcasts them
    before each forward, so after the last step each rank holds its own; validation and the
    checkpoint must all use the same model."""
    if ctx.active:
        for buf in module.buffers():
            dist.broadcast(buf.data, src=0)


class BalancedShardSampler(Sampler[int]):
    """Dataset-balanced sampling with replacement, sharded over ranks.

    Each epoch every rank draws the same `num_samples` indices with probability proportional to
    `weights` from a generator seeded with (seed, epoch), pads the list to a multiple of the world
    size by repeating its head, and keeps every world_size-th index from its rank: the ranks'
    shards are disjoint pieces of one global draw, and a resumed run sees the same batches. With
    one rank this is exactly torch's WeightedRandomSampler with that generator.
    """

    def __init__(self, weights: torch.Tensor, num_samples: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> None:
        self.weights = weights.double()
        self.num_samples, self.seed = num_samples, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.per_rank = -(-num_samples // world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def global_draw(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 1000 + epoch)
        draw = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=gen).tolist()
        pad = self.per_rank * self.world_size - len(draw)
        return draw + draw[:pad]

    def draw(self, epoch: int) -> list[int]:
        """This rank's indices for `epoch` (what iterating after set_epoch(epoch) yields)."""
        return self.global_draw(epoch)[self.rank::self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.draw(self.epoch))

    def __len__(self) -> int:
        return self.per_rank
