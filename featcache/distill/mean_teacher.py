"""Teacher-free semi-supervised training: the mean teacher (Tarvainen & Valpola, 2017).

The baseline that says what the foundation models add beyond the unlabelled images themselves.
An exponential moving average of the student's own weights predicts every image of a batch (the
labelled ones and the distill.unlabelled_batch unlabelled ones), and the student matches those
soft predictions with the output term's loss (distill.output_loss) and temperature schedule:
output distillation with the student's average in place of the teachers' probes. It reads no
teacher and no store entry (distill.enabled: false; tests/distill/test_teacher_free.py).

Why the mean teacher and not confidence-thresholded self-training (FixMatch): FixMatch's signal
comes from a pair of augmentations, weak for the pseudo-label and strong (RandAugment, Cutout) for
the student, and this comparison keeps the distilling arms' one photometric augmentation; its
confidence threshold would be one more setting to choose (on two labelled images); and the mean
teacher's soft labels meet the student through the very loss the probes teach by, so the two arms
differ in where the soft labels come from and in nothing else.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn

from featcache.distill.output_kd import mask_probabilities, output_loss
from featcache.distill.tasks import Classification, Tasks


def consistency_rampup(done: float, rampup: float) -> float:
    """The consistency term's weight after a fraction `done` of the run: exp(-5 (1 - t)^2) with
    t = done / rampup (Laine & Aila 2017, Tarvainen & Valpola 2017, SSL4MIS's sigmoid_rampup),
    1 once t reaches 1 or when rampup is 0."""
    if rampup <= 0 or done >= rampup:
        return 1.0
    t = max(0.0, done) / rampup
    return math.exp(-5.0 * (1.0 - t) ** 2)


class MeanTeacher(nn.Module):
    """An exponential moving average of the student (frozen, always in evaluation mode)."""

    def __init__(self, student: nn.Module, decay: float) -> None:
        super().__init__()
        self.average = copy.deepcopy(student).requires_grad_(False).eval()
        self.decay = decay
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def train(self, mode: bool = True) -> MeanTeacher:
        """The average predicts as at evaluation (batch norm's running statistics, no dropout)."""
        super().train(mode)
        self.average.eval()
        return self

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """One step of the average towards the student's weights; buffers (batch norm's statistics)
        are copied. The decay ramps as min(decay, (1 + n) / (10 + n)), as in the paper's code, so
        that in a short run the average leaves the initial weights within the first steps."""
        n = int(self.updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        for mine, theirs in zip(self.average.parameters(), student.parameters(), strict=True):
            mine.lerp_(theirs.detach(), 1 - decay)
        for mine, theirs in zip(self.average.buffers(), student.buffers(), strict=True):
            mine.copy_(theirs)
        self.updates += 1

    def loss(self, student: nn.Module, logits: torch.Tensor, feats: dict[str, torch.Tensor],
             image: torch.Tensor, tasks: Tasks, dataset_index: torch.Tensor, temperature: float,
             kind: str) -> torch.Tensor:
        """The consistency term (batch mean over every row, labelled or not): the student's
        probabilities at `temperature` against the average's, masks per pixel, classes per image;
        KL is scaled by T^2 as the output term is."""
        with torch.no_grad():
            their_logits, their_feats = self.average.forward_features(image)
        theirs = mask_probabilities(their_logits.float(), temperature)
        mine = mask_probabilities(logits.float(), temperature)
        per_sample = output_loss(mine, theirs, torch.ones_like(mine[:, :1]), kind)
        for task, rows in tasks.groups(dataset_index):
            if isinstance(task, Classification):
                rows = torch.arange(len(image), device=image.device) if rows is None else rows
                theirs_c = torch.softmax(self.average.classify(their_feats, task.head)[rows] / temperature, 1)
                mine_c = torch.softmax(student.classify(feats, task.head)[rows] / temperature, 1)
                per_sample = per_sample.index_put((rows,), output_loss(mine_c, theirs_c, theirs_c, kind))
        scale = temperature ** 2 if kind == "kl" else 1.0
        return scale * per_sample.mean()
