"""Batch norm's statistics recomputed before each validation ("precise BN", Wu & Johnson 2021,
*Rethinking "Batch" in BatchNorm*; detectron2's and pycls's PreciseBN hook).

Training updates each batch-norm layer's running mean and variance as a moving average (momentum
0.1) of the batches it sees, while the weights move under it; validation, the saved checkpoints,
`predict` and the exported model all normalise with those running statistics. With small,
composed batches the two drift apart: with batches of 2 labelled slices repeated every step beside
2 different unlabelled ones, a run reached a training loss of 0.07 while in evaluation mode it
predicted every pixel foreground (left hemisphere, the mean-teacher arm, seed 1: validation
pinned at 0.294; the same weights with their statistics re-estimated on the training images
scored 0.875). Recomputing them with the current weights, over a fixed set of training
images without augmentation, makes what is validated and served the network that was trained.

The statistics are the equal-weight mean over batches of each batch's mean and variance
(momentum None), as PreciseBN computes them; deterministic given the weights, so a resumed run
validates exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from featcache.distill.loaders import make_loader

if TYPE_CHECKING:
    from featcache.distill.build import TrainingData
    from featcache.manifest import TrainingSpec

_BatchNorm = nn.modules.batchnorm._BatchNorm


def recompute_batchnorm(student: nn.Module, batches: Iterable[dict[str, Any]], device: torch.device) -> int:
    """Replace the running statistics of every batch-norm layer of `student` with those of
    `batches` (finished loader batches with an "image"); returns the images seen (0: untouched)."""
    layers = [m for m in student.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not layers:
        return 0
    kept = [(m, m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
            for m in layers]
    was_training = student.training
    seen = 0
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average: every batch weighs the same
    student.train()
    try:
        with torch.no_grad():
            for batch in batches:
                if len(batch["image"]) < 2:  # a lone last image: batch norm has no batch statistics
                    continue  # of one value per channel (a 1x1 map), and training never saw one
                student(batch["image"].to(device))
                seen += len(batch["image"])
    finally:
        for m, momentum, mean, var, tracked in kept:
            m.momentum = momentum
            if not seen:  # nothing to estimate from: the statistics stay as they were
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(tracked)
        student.train(was_training)
    return seen


class PreciseBN:
    """The trainer's hook: recompute(student) before each validation over the run's bn images
    (TrainingData.bn_set), in batches of a training step's rows, labelled and unlabelled. The
    loader is made at the first call and its worker persists between validations."""

    def __init__(self, data: TrainingData, training: TrainingSpec, device: torch.device) -> None:
        self.data, self.training, self.device = data, training, device
        self._batches: Any = None

    @classmethod
    def of(cls, data: TrainingData, training: TrainingSpec, device: torch.device) -> PreciseBN | None:
        """The hook, or None when training.precise_bn is 0."""
        return None if data.bn_set is None else cls(data, training, device)

    def __call__(self, student: nn.Module) -> int:
        d, tr = self.data, self.training
        if self._batches is None:
            self._batches = make_loader(d.bn_set, tr.batch_size + d.unlabelled_batch, min(d.workers, 1),
                                        tr.prefetch_factor, self.device, low_priority=d.low_priority_workers)
        return recompute_batchnorm(student, self._batches, self.device)
