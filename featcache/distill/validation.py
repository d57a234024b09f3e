"""Validation per dataset: each dataset scored by its own metric, and the one score that keeps the
checkpoint.

A run over several datasets used to keep the checkpoint with the best mean over *samples* of a
per-sample score (Dice, or 1 for a right class): a classification set that is easy to get right
then hid a segmentation set at Dice 0. Here every dataset gets its own numbers:

* segmentation: per-image mean Dice, nnU-Net's convention: an image where a class is absent from
  both the prediction and the mask is left out of that class's mean (it is not scored 1: an empty
  slice predicted empty says nothing about the target); a prediction on an empty mask, or an empty
  prediction on a non-empty one, scores 0. Per class, then the mean over the classes that were
  scored. Pooled Dice (2 sum TP / (sum |P| + sum |G|) over the split, per class, then the mean
  over classes) beside it. A multi-class dataset also logs each class's per-image Dice.
* classification: accuracy (the score), balanced accuracy (the mean recall over the classes
  present: a head that answers one class for everything sits at 1 / classes) and macro F1.

The checkpoint score is the geometric mean over datasets of their scores (Dice or accuracy; a
score is floored at 0.001). Ranking epochs by it is ranking them by the mean over datasets of the
log of each score relative to that dataset's best, whatever the bests are (they only add a
constant), so it is "each dataset relative to its own best" without a yardstick that moves as
training finds new bests; and a dataset at 0 takes the score to ~0, so a checkpoint that gave a
task up never beats one that kept them all. With one dataset it is that dataset's score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from featcache.distill import distributed as dist
from featcache.distill.distributed import DistContext
from featcache.distill.tasks import Classification, Segmentation, Tasks

FLOOR = 1e-3  # a score of 0 enters the geometric mean as this


@dataclass
class DatasetScore:
    """One dataset's validation: its score and every number logged for it."""

    name: str
    metric: str  # "dice" or "accuracy": what `score` is
    score: float  # NaN when the split gave nothing to score (no class anywhere)
    values: dict[str, float] = field(default_factory=dict)  # metric (or "dice/CLASS") -> value


@dataclass
class ValScores:
    datasets: list[DatasetScore]
    score: float  # the checkpoint score (the geometric mean above)
    # The mean over samples of Tasks.scores (per-image Dice with empty = 1, 1 for a right class):
    # the scale output distillation's probes are scored on (output_kd.probe_scores), which trust.py
    # compares with the student. Not a checkpoint rule: it hides a failing task behind an easy one.
    per_sample: float = math.nan

    def row(self) -> dict[str, float]:
        """metrics.csv's val columns: val_score, then val_METRIC/DATASET[/CLASS]."""
        out = {"val_score": self.score}
        for d in self.datasets:
            for key, value in d.values.items():
                metric, _, cls = key.partition("/")
                out[f"val_{metric}/{d.name}" + (f"/{cls}" if cls else "")] = value
        return out


def checkpoint_score(scores: list[float]) -> float:
    """The geometric mean of the datasets' scores (NaN ones left out; 0 when none is left)."""
    kept = [max(s, FLOOR) for s in scores if not math.isnan(s)]
    if len(kept) == 1:  # the score itself, not exp(log(score)) an ulp away from it
        return kept[0]
    return math.exp(sum(map(math.log, kept)) / len(kept)) if kept else 0.0


def unique_names(names: list[str]) -> list[str]:
    """Dataset names as columns: a name used twice (two `nnunet` roots) gets #2, #3."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out


class ValidationTally:
    """Sums per dataset over the validation batches: per class of a segmentation dataset (sum of
    per-image Dice, images scored, TP, |P| + |G|), a confusion matrix per classification one."""

    def __init__(self, tasks: Tasks, names: list[str], class_names: list[tuple[str, ...]]) -> None:
        self.tasks, self.names, self.class_names = tasks, unique_names(names), class_names
        self.sizes = [_size(t) for t in tasks.by_dataset]
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        self.sums = torch.zeros(sum(self.sizes) + 2, dtype=torch.float64)  # + per-sample sum, count

    def add(self, student: torch.nn.Module, logits: torch.Tensor, feats: dict[str, torch.Tensor],
            mask: torch.Tensor, label: torch.Tensor, dataset: torch.Tensor) -> None:
        """One batch: logits (B, 1 | K+1, S, S) on the CPU, mask (B, 1, S, S), label (B,), dataset (B,)."""
        per_sample = self.tasks.scores(student, logits, feats, mask, label, dataset)
        self.sums[-2:] += torch.tensor([float(per_sample.sum()), len(per_sample)], dtype=torch.float64)
        for d in sorted(set(dataset.tolist())):
            rows = torch.nonzero(dataset == d)[:, 0]
            task, at = self.tasks.by_dataset[d], self.offsets[d]
            if isinstance(task, Segmentation):
                part = _seg_sums(task, logits[rows], mask[rows])
            else:
                predicted = student.classify(feats, task.head)[rows.to(logits.device)].argmax(1).cpu()
                part = torch.bincount(label[rows].long() * task.classes + predicted,
                                      minlength=task.classes ** 2).double()
            self.sums[at:at + len(part)] += part

    def reduce(self, ctx: DistContext) -> ValScores:
        sums = dist.all_reduce_sum(self.sums, ctx)
        datasets = []
        for name, task, at, size, classes in zip(self.names, self.tasks.by_dataset, self.offsets, self.sizes,
                                                 self.class_names, strict=True):
            part = sums[at:at + size]
            datasets.append(_seg_scores(name, part, classes) if isinstance(task, Segmentation)
                            else _class_scores(name, part.view(task.classes, task.classes)))
        return ValScores(datasets, checkpoint_score([d.score for d in datasets]),
                         float(sums[-2] / sums[-1].clamp_min(1)))


def _size(task: Segmentation | Classification) -> int:
    return 4 * task.classes if isinstance(task, Segmentation) else task.classes ** 2


def _seg_sums(task: Segmentation, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(4 K,): per class k, [sum of per-image Dice, images scored, TP, |P| + |G|]."""
    if task.classes == 1:
        pred, true = (logits > 0)[:, :1].float(), (mask > 0.5).float()
    else:
        k = task.classes + 1
        pred = F.one_hot(logits.argmax(1), k)[..., 1:].permute(0, 3, 1, 2).float()
        true = F.one_hot(mask[:, 0].long(), k)[..., 1:].permute(0, 3, 1, 2).float()
    inter = (pred * true).flatten(2).sum(2).double()  # (B, K)
    total = (pred.flatten(2).sum(2) + true.flatten(2).sum(2)).double()
    scored = total > 0
    dice = torch.where(scored, 2 * inter / total.clamp_min(1), torch.zeros_like(total))
    return torch.stack([dice.sum(0), scored.sum(0).double(), inter.sum(0), total.sum(0)], 1).flatten()


def _seg_scores(name: str, part: torch.Tensor, classes: tuple[str, ...]) -> DatasetScore:
    per = part.view(-1, 4)
    means = [float(s / n) if n > 0 else math.nan for s, n in zip(per[:, 0], per[:, 1], strict=True)]
    pooled = [float(2 * i / t) if t > 0 else math.nan for i, t in zip(per[:, 2], per[:, 3], strict=True)]
    dice, pooled_dice = _nanmean(means), _nanmean(pooled)
    values = {"dice": dice, "pooled_dice": pooled_dice}
    if len(means) > 1:
        values.update({f"dice/{c}": v for c, v in zip(classes, means, strict=True)})
    return DatasetScore(name, "dice", dice, values)


def _class_scores(name: str, confusion: torch.Tensor) -> DatasetScore:
    """confusion (n, n): row = true class, column = predicted."""
    total = float(confusion.sum())
    hits = confusion.diagonal()
    true, predicted = confusion.sum(1), confusion.sum(0)
    accuracy = float(hits.sum()) / total if total else math.nan
    present = true > 0
    recall = hits[present] / true[present]
    balanced = float(recall.mean()) if bool(present.any()) else math.nan
    either = present | (predicted > 0)
    f1 = 2 * hits[either] / (true[either] + predicted[either])
    macro_f1 = float(f1.mean()) if bool(either.any()) else math.nan
    return DatasetScore(name, "accuracy", accuracy,
                        {"accuracy": accuracy, "balanced_accuracy": balanced, "macro_f1": macro_f1})


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def validate(student: torch.nn.Module, tally: ValidationTally, batches: Any, device: torch.device,
             ctx: DistContext) -> ValScores:
    """Score the validation split: each rank its shard, the sums added up over ranks."""
    tally.sums.zero_()
    student.eval()
    with torch.no_grad():
        for batch in batches:
            logits, feats = student.forward_features(batch["image"].to(device))
            tally.add(student, logits.float().cpu(), feats, batch["mask"].cpu(), batch["label"].cpu(),
                      batch["dataset"].cpu())
    student.train()
    return tally.reduce(ctx)
