"""What each dataset asks of the student: a head and a loss, and the score validation keeps.

A task kind plugs in here and nowhere in the training loop: `Segmentation` (binary masks, one
sigmoid channel, the paper's 0.5 BCE + 0.5 Dice; or K classes, K+1 softmax channels, 0.5 CE +
0.5 Dice over the foreground classes) and `Classification` (one label per image, a linear head
per dataset on the pooled last encoder stage, cross-entropy). `Tasks` maps every dataset of a run
to its task, computes each task's loss on that task's samples of a batch (batches may mix
datasets) and scores validation samples in [0, 1] (per-image Dice, or 1 for a correct class), so
the run keeps the checkpoint with the best mean score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from featcache.distill.losses import seg_loss

SEG, CLS = "seg", "cls"  # the loss terms the two kinds add
OUT = "out"  # output distillation's term (output_kd.py), beside the tasks'.


@dataclass(frozen=True)
class Segmentation:
    classes: int = 1  # foreground classes; 1 = binary

    term = SEG

    def loss(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """logits (B, 1 | K+1, S, S), mask (B, 1, S, S) (a label map for K >= 2) -> (B,)."""
        if self.classes == 1:
            return seg_loss(logits, mask)
        target = mask[:, 0].long()
        ce = F.cross_entropy(logits, target, reduction="none").mean((1, 2))
        prob = torch.softmax(logits, dim=1)[:, 1:]
        onehot = F.one_hot(target, self.classes + 1).permute(0, 3, 1, 2)[:, 1:].to(prob.dtype)
        inter = (prob * onehot).sum((2, 3))
        dice = 1 - (2 * inter + 1) / (prob.sum((2, 3)) + onehot.sum((2, 3)) + 1)
        return 0.5 * ce + 0.5 * dice.mean(1)

    def score(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hard Dice per image (B,), the mean over foreground classes for K >= 2; a class empty in
        both prediction and mask scores 1."""
        if self.classes == 1:
            return hard_dice((logits > 0).float(), mask)
        pred = F.one_hot(logits.argmax(1), self.classes + 1)[..., 1:].permute(0, 3, 1, 2).float()
        true = F.one_hot(mask[:, 0].long(), self.classes + 1)[..., 1:].permute(0, 3, 1, 2).float()
        return hard_dice(pred, true).mean(1)


def hard_dice(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """pred, true (B, C, H, W) in {0, 1} -> Dice (B, C) (or (B,) for C = 1); empty vs empty = 1."""
    inter = (pred * true).flatten(2).sum(2)
    total = pred.flatten(2).sum(2) + true.flatten(2).sum(2)
    dice = torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))
    return dice[:, 0] if dice.shape[1] == 1 else dice


@dataclass(frozen=True)
class Classification:
    head: str  # the student's classifier for this dataset (the dataset's name)
    classes: int

    term = CLS

    def loss(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """logits (B, n), label (B,) -> cross-entropy (B,)."""
        return F.cross_entropy(logits.float(), label, reduction="none")

    def score(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """1 where the predicted class is right (B,)."""
        return (logits.argmax(1) == label).float()


Task = Segmentation | Classification


class Tasks:
    """The task of every dataset of a run, by source index."""

    def __init__(self, tasks: list[Task]) -> None:
        self.by_dataset = tasks
        self.terms = tuple(dict.fromkeys(t.term for t in tasks))  # seg before cls when both

    @classmethod
    def binary(cls, num_datasets: int) -> Tasks:
        return cls([Segmentation()] * num_datasets)

    def losses(self, student: torch.nn.Module, logits: torch.Tensor, feats: dict[str, torch.Tensor],
               mask: torch.Tensor, label: torch.Tensor, dataset: torch.Tensor,
               has_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Each task term: the mean over the batch's samples of that task (a term is left out when
        the batch has none of its samples). has_mask (B,) bool: only those samples are labelled
        (semi-supervised batches); None: all are."""
        per_term: dict[str, list[torch.Tensor]] = {}
        for task, rows in self.groups(dataset):
            if has_mask is not None:  # an unlabelled sample's mask or class never reaches a loss
                rows = torch.nonzero(has_mask)[:, 0] if rows is None else rows[has_mask[rows]]
                if not len(rows):
                    continue
            if isinstance(task, Segmentation):
                value = task.loss(logits, mask) if rows is None else task.loss(logits[rows], mask[rows])
            else:
                value = task.loss(_rows_of(student.classify(feats, task.head), rows), _rows_of(label, rows))
            per_term.setdefault(task.term, []).append(value)
        return {term: torch.cat(values).mean() for term, values in per_term.items()}

    def scores(self, student: torch.nn.Module, logits: torch.Tensor, feats: dict[str, torch.Tensor],
               mask: torch.Tensor, label: torch.Tensor, dataset: torch.Tensor) -> torch.Tensor:
        """Validation scores (B,) in [0, 1], in batch order."""
        out = torch.zeros(len(dataset), dtype=torch.float32)
        for task, rows in self.groups(dataset):
            where = slice(None) if rows is None else rows
            if isinstance(task, Segmentation):
                out[where] = task.score(_rows_of(logits, rows), _rows_of(mask, rows)).float().cpu()
            else:
                out[where] = task.score(_rows_of(student.classify(feats, task.head), rows),
                                        _rows_of(label, rows)).cpu()
        return out

    def groups(self, dataset: torch.Tensor) -> list[tuple[Task, torch.Tensor | None]]:
        """(task, row indices of its samples) per distinct task in the batch; rows None = all."""
        found = sorted(set(dataset.tolist()))
        tasks = [self.by_dataset[d] for d in found]
        if len(set(tasks)) == 1:
            return [(tasks[0], None)]
        groups: dict[Task, list[int]] = {}
        for d, task in zip(found, tasks, strict=True):
            groups.setdefault(task, []).append(d)
        return [(task, torch.nonzero(torch.isin(dataset, torch.tensor(ds, device=dataset.device)))[:, 0])
                for task, ds in groups.items()]


def _rows_of(x: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """x's rows of one task's samples. Classifiers run on the whole batch and are cut here (a
    classifier is per sample: pool + linear): cutting every student stage first copied the
    full-resolution decoder maps for a few rows."""
    return x if rows is None else x[rows]
