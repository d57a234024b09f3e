"""`torchrun --nproc_per_node N pipelines/ddp_smoke.py`: a process group of the backend featcache's
DDP training uses (featcache.distill.distributed: nccl on CUDA, gloo on the CPU), also for one
process (featcache itself skips the group then), and one all-reduce on the training device;
rank 0 prints `RESULT ddp_allreduce_ok 1` when every rank contributed."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def main() -> None:
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world)
    total = torch.ones(1, device=device)
    dist.all_reduce(total)
    ok = int(round(float(total.item())) == world)
    if rank == 0:
        print(f"ddp smoke: {world} process(es), backend {backend}, device {device}: all-reduce "
              f"{'ok' if ok else 'WRONG'}")
        print(f"RESULT ddp_allreduce_ok {ok}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
