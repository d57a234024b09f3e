"""Feature pretraining: the student learns to predict the teachers' cached features on unlabelled
images before it sees a mask.

Teachers need no labels, so the store can hold their features for every image a lab has (every
slice of every volume, a folder of images), while only a few are labelled. This phase trains the
student and its projectors (and return decoder) on `pretrain.datasets` with the feature and
reconstruction terms alone (fixed weights, teachers weighted uniformly: the gate learns from
masks), for `pretrain.steps` optimizer steps; the labelled training then starts from the result.

The result is saved as RUN/checkpoints/pretrained.pt with the recipe it came from; a run that
finds one with the same recipe (a resumed run, or a study that trains several label regimes from
one pretraining) loads it instead of pretraining again.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import torch

from featcache.distill.data import training_items
from featcache.distill.distributed import BalancedShardSampler
from featcache.distill.loaders import EpochBatches, make_loader
from featcache.distill.run import Pretrained
from featcache.distill.schedule import adamw, warmup_cosine
from featcache.errors import DatasetError

if TYPE_CHECKING:
    from featcache.distill.trainer import Trainer

def recipe(trainer: Trainer) -> str:
    """Everything the pretrained weights depend on (not the labelled data or its schedule)."""
    m = trainer.manifest
    parts: dict[str, Any] = {
        "pretrain": m.pretrain.model_dump(mode="json"),
        "teachers": [t.model_dump(mode="json") for t in m.teachers],
        "student": m.student.model_dump(mode="json"), "distill": m.distill.model_dump(mode="json"),
        "seed": m.training.seed, "augment": m.training.augment.model_dump(mode="json"),
        "batch_size": m.training.batch_size, "lr": m.training.lr, "views": m.training.views,
        "weight_decay": m.training.weight_decay, "grad_clip": m.training.grad_clip,
        "num_datasets": len(trainer.sources),
    }
    return json.dumps(parts, sort_keys=True)


def pretrain(trainer: Trainer) -> None:
    """Run (or reload) the feature-pretraining phase into trainer.model."""
    wanted = recipe(trainer)
    saved = trainer.run.load_pretrained()
    if saved is not None and saved.recipe == wanted:
        trainer.model.load_state_dict(saved.model)
        trainer.progress("pretrain_loaded", {"path": str(trainer.run.pretrained_file)})
        return
    m, tr = trainer.manifest, trainer.manifest.training
    spec = m.pretrain
    items = [it for s in trainer.pretrain_sources for it in training_items(
        s, spec.datasets[s.index].train_split, tr.views, 1.0, tr.seed)]
    batch_size = spec.batch_size or tr.batch_size
    if len(items) < batch_size:
        raise DatasetError(f"pretrain.datasets hold {len(items)} images, fewer than one batch of "
                           f"{batch_size}; add unlabelled images or lower pretrain.batch_size")
    data = trainer.items_dataset(trainer.pretrain_sources, items, True, augment=True)
    sampler = BalancedShardSampler(torch.ones(len(items), dtype=torch.double), len(items), tr.seed + 1)
    per_epoch = len(items) // batch_size
    epochs = math.ceil(spec.steps / per_epoch)

    def draw(epoch: int) -> list[int]:
        return [epoch * len(items) + i for i in sampler.draw(epoch)]

    loader = make_loader(data, batch_size, trainer.workers, tr.prefetch_factor, trainer.device,
                         batches=EpochBatches(draw, batch_size, True, 0, epochs, per_epoch),
                         low_priority=trainer.low_priority_workers)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    optimizer = adamw(params, spec.lr or tr.lr, tr.weight_decay, trainer.device)
    warmup = max(1, spec.steps // 20)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(spec.steps, warmup))
    trainer.progress("pretrain_start", {"steps": spec.steps, "images": len(items)})
    trainer.model.train()
    batches = iter(loader)
    for step in range(spec.steps):
        out = trainer.step(next(batches), optimizer, scheduler, labelled=False)
        trainer.progress("pretrain_step", {"step": step + 1, "steps": spec.steps,
                                           "loss": float(out["loss"].detach())})
    del batches, loader
    trainer.run.save_pretrained(Pretrained(wanted, trainer.model.state_dict(), spec.steps))
