import csv
import json
import socket

import torch
import torch.multiprocessing as mp
from torch.utils.data import WeightedRandomSampler

from featcache.distill.distributed import BalancedShardSampler
from featcache.runs import Run
from tests.distill import ddp_worker


def test_shards_are_disjoint_pieces_of_one_seeded_draw():
    weights = torch.tensor([1.0] * 6 + [3.0] * 4)
    ranks = [BalancedShardSampler(weights, 11, seed=5, rank=r, world_size=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(3)
    shards = [list(s) for s in ranks]
    draw = ranks[0].global_draw(3)
    assert len(shards[0]) == len(shards[1]) == len(ranks[0]) == 6  # padded: equal steps on every rank
    assert sorted(shards[0] + shards[1]) == sorted(draw) and len(draw) == 12
    assert shards[0] == draw[0::2] and shards[1] == draw[1::2]
    ranks[0].set_epoch(4)
    assert list(ranks[0]) != shards[0]  # reseeded per epoch
    ranks[0].set_epoch(3)
    assert list(ranks[0]) == shards[0]  # ... reproducibly (resume)
    single = BalancedShardSampler(weights, 10, seed=5)
    single.set_epoch(2)
    torch_sampler = WeightedRandomSampler(weights.double(), 10, generator=torch.Generator().manual_seed(5002))
    assert list(single) == list(torch_sampler)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_training(cached_store, tmp_path):
    """torchrun-style 2-rank training over gloo: ranks end with identical weights, each took half
    the steps of a single process, and only rank 0 reported progress and wrote the run."""
    run_dir, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    mp.spawn(ddp_worker.run, args=(2, _free_port(), cached_store.url, str(run_dir), str(out)),
             nprocs=2, join=True)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["params"] == ranks[1]["params"]  # gradients were averaged across ranks
    assert ranks[0]["steps_per_epoch"] == 1  # 12 items / 2 ranks / batch 4, last partial dropped
    assert ranks[0]["val_dice"] == ranks[1]["val_dice"]  # validation summed over both shards
    assert ranks[0]["events"] == ["EpochDone", "FeaturesResident", "TrainingStarted", "TrainingStep"]
    assert ranks[1]["events"] == []
    checkpoint = Run(run_dir).load_checkpoint("last")
    assert checkpoint.epoch == 1 and checkpoint.world_size == 2
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [(r["epoch"], r["split"]) for r in rows] == [("1", "train"), ("1", "val"), ("2", "train"),
                                                       ("2", "val")]
    assert not list(run_dir.glob("**/*.tmp"))
