"""One rank of the 2-process DDP test (spawned, so it registers the test dataset itself)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import torch


def run(rank: int, world: int, port: int, store_url: str, run_dir: str, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from featcache.data.registry import DATASETS
    from featcache.distill.trainer import Trainer
    from featcache.registry import Entry
    from tests.conftest import BlobDataset
    from tests.distill.conftest import make_manifest

    DATASETS["blobs"] = Entry(lambda root, **o: BlobDataset(**o), "test blobs")
    events: list[str] = []
    manifest = make_manifest(SimpleNamespace(url=store_url), run_dir,
                             training={"epochs": 2, "num_workers": 0, "device": "cpu"})
    trainer = Trainer(manifest, lambda event: events.append(type(event).__name__))
    try:
        result = trainer.train()
        params = {k: float(v.double().sum()) for k, v in trainer.model.student.state_dict().items()
                  if v.is_floating_point()}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps({
            "world_size": result.world_size, "events": sorted(set(events)), "params": params,
            "steps_per_epoch": trainer.data.steps_per_epoch, "val_dice": result.best_val_dice}))
    finally:
        trainer.close()
