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
from typing import Any

import torch

from featcache.distill.build import Training, build_optimizer, items_dataset
from featcache.distill.data import Source, training_items
from featcache.distill.distributed import BalancedShardSampler
from featcache.distill.guards import check_loss, check_weights, finite_state, learned, load_state
from featcache.distill.loaders import EpochBatches, make_loader
from featcache.distill.loop import StepSettings, optimizer_step
from featcache.distill.model import DistillModel
from featcache.errors import DatasetError
from featcache.events import PretrainReused, PretrainStarted, PretrainStep, ProgressFn
from featcache.manifest import Manifest
from featcache.runs import Pretrained, Run


def recipe(manifest: Manifest, num_datasets: int) -> str:
    """Everything the pretrained weights depend on (not the labelled data or its schedule)."""
    m = manifest
    parts: dict[str, Any] = {
        "pretrain": m.pretrain.model_dump(mode="json"),
        "teachers": [t.model_dump(mode="json") for t in m.teachers],
        "student": m.student.model_dump(mode="json"), "distill": m.distill.model_dump(mode="json"),
        "seed": m.training.seed, "augment": m.training.augment.model_dump(mode="json"),
        "batch_size": m.training.batch_size, "lr": m.training.lr, "views": m.training.views,
        "weight_decay": m.training.weight_decay, "grad_clip": m.training.grad_clip,
        "num_datasets": num_datasets,
    }
    return json.dumps(parts, sort_keys=True)


def _loader(manifest: Manifest, sources: list[Source], model: DistillModel, workers: int,
            low_priority: bool, device: torch.device) -> tuple[torch.utils.data.DataLoader, int]:
    """Batches of the unlabelled images for pretrain.steps steps, and how many images there are."""
    tr, spec = manifest.training, manifest.pretrain
    items = [it for s in sources for it in training_items(
        s, spec.datasets[s.index].train_split, tr.views, 1.0, tr.seed)]
    batch_size = spec.batch_size or tr.batch_size
    if len(items) < batch_size:
        raise DatasetError(f"pretrain.datasets hold {len(items)} images, fewer than one batch of "
                           f"{batch_size}; add unlabelled images or lower pretrain.batch_size")
    data = items_dataset(manifest, sources, items, model.targets, True, augment=True)
    sampler = BalancedShardSampler(torch.ones(len(items), dtype=torch.double), len(items), tr.seed + 1)
    per_epoch = len(items) // batch_size

    def draw(epoch: int) -> list[int]:
        return [epoch * len(items) + i for i in sampler.draw(epoch)]

    batches = EpochBatches(draw, batch_size, True, 0, math.ceil(spec.steps / per_epoch), per_epoch)
    return make_loader(data, batch_size, workers, tr.prefetch_factor, device, batches=batches,
                       low_priority=low_priority), len(items)


def pretrain(manifest: Manifest, built: Training, run: Run, settings: StepSettings,
             progress: ProgressFn, writes: bool = True) -> None:
    """Run (or reload) the feature-pretraining phase into built.model (one process: no DDP)."""
    model, data = built.model, built.data
    wanted = recipe(manifest, len(data.sources))
    saved = run.load_pretrained()
    if saved is not None and saved.recipe == wanted and finite_state(saved.model, learned(model)):
        load_state(model, saved.model, run.pretrained_file)
        progress(PretrainReused(str(run.pretrained_file)))
        return
    tr, spec = manifest.training, manifest.pretrain
    loader, images = _loader(manifest, built.pretrain_sources, model, data.workers, data.low_priority_workers,
                             settings.device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = build_optimizer(params, spec.lr or tr.lr, tr.weight_decay, spec.steps,
                                           max(1, spec.steps // 20), settings.device)
    progress(PretrainStarted(spec.steps, images))
    model.train()
    batches = iter(loader)
    for step in range(spec.steps):
        out = optimizer_step(model, next(batches), optimizer, scheduler, settings, labelled=False)
        loss = check_loss(float(out["loss"].detach()), step + 1, "feature pretraining")
        progress(PretrainStep(step + 1, spec.steps, loss))
    del batches, loader
    check_weights(model, spec.steps, "feature pretraining")
    if writes:
        run.save_pretrained(Pretrained(wanted, model.state_dict(), spec.steps))
