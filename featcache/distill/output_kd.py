"""Output-level distillation: task-adapted teachers from the cache, their predictions as soft labels.

A teacher that was never trained on the task cannot say what the mask is, but a small probe on its
cached features can learn it from the labelled images almost for free (no teacher forward, a 1x1
convolution per tap), and then predicts soft masks (or class probabilities) for every image the
student sees. `fit_probes` trains one probe per tap on the labelled TRAINING items only (never
validation or test: the items it is handed are the run's training items), and `ProbeSet` holds
them frozen. The student's probabilities at temperature T are matched to the gate-weighted mix of
the probes' (the teacher gate weighs teachers' predictions as it weighs their features), by MSE
on probabilities as the paper's code does; T decays linearly from distill.output_temperature[0] to
[1] over the run (the paper: 4 -> 1).

The probes are kept as RUN/checkpoints/probes.pt with their recipe (the store entries, the
training items by sample id and view, the settings): a run with the same recipe reuses them, and a
change of labelled set refits them.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from featcache.distill.targets import Target
from featcache.distill.targets import module_key as _mkey
from featcache.distill.tasks import hard_dice


def masked_pool(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W), valid (B, 1, H, W) -> (B, C) mean over valid positions. A weighted sum
    over positions is a matrix-vector product per sample: no (B, C, H, W) product map is made."""
    weighted = torch.bmm(x.flatten(2), valid.flatten(2).transpose(1, 2))[..., 0]
    return weighted / valid.sum((2, 3)).clamp_min(1.0)


class ProbeSet(nn.Module):
    """Per tap: a mask probe (1x1 conv to the student's mask channels) and, when a run has
    classification datasets, a class probe (linear on the pooled features, `classes` outputs)."""

    def __init__(self, targets: list[Target], mask_channels: int, classes: int) -> None:
        super().__init__()
        self.masks = nn.ModuleDict({_mkey(t.key): nn.Conv2d(t.channels, mask_channels, 1) for t in targets})
        self.classes = nn.ModuleDict({_mkey(t.key): nn.Linear(t.channels, classes) for t in targets}
                                     if classes else {})

    def mask_logits(self, t: Target, feature: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, M, h, w)."""
        return self.masks[_mkey(t.key)](feature)

    def class_logits(self, t: Target, feature: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, classes)."""
        return self.classes[_mkey(t.key)](masked_pool(feature, valid))


def mask_probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sigmoid (one channel) or softmax over channels, at `temperature`."""
    scaled = logits / temperature
    return torch.sigmoid(scaled) if logits.shape[1] == 1 else torch.softmax(scaled, dim=1)


def mask_target(mask: torch.Tensor, channels: int, grid: tuple[int, int]) -> torch.Tensor:
    """A (B, 1, S, S) mask (a label map for channels > 1) as per-cell class fractions on `grid`:
    (B, channels, h, w); one channel = the foreground fraction."""
    if channels == 1:
        return F.adaptive_avg_pool2d(mask, grid)
    onehot = F.one_hot(mask[:, 0].long(), channels).permute(0, 3, 1, 2).to(mask.dtype)
    return F.adaptive_avg_pool2d(onehot, grid)


def probe_loss(probes: ProbeSet, t: Target, feature: torch.Tensor, valid: torch.Tensor,
               mask: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The probe's training loss on one batch (mean): masks by (soft) cross-entropy against the
    cell fractions where the teacher saw the image, classes by cross-entropy."""
    logits = probes.mask_logits(t, feature)
    target = mask_target(mask, logits.shape[1], feature.shape[-2:])
    if logits.shape[1] == 1:
        per_cell = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    else:
        per_cell = -(target * torch.log_softmax(logits, dim=1)).sum(1, keepdim=True)
    per_sample = (per_cell * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1.0)
    seg = label < 0
    loss = per_sample[seg].sum()
    if probes.classes and bool((~seg).any()):
        cls = probes.class_logits(t, feature[~seg], valid[~seg])
        loss = loss + F.cross_entropy(cls, label[~seg], reduction="sum")
    return loss / len(label)


def fit_probes(probes: ProbeSet, targets: list[Target], batches: list[dict[str, Any]], steps: int,
               lr: float = 1e-2) -> list[float]:
    """Train the probes on `batches` (collated training items, as the loop's to_device gives
    them) for `steps` full passes; returns the loss per pass. The teacher features are fixed, so
    this is a convex fit per tap and the batches can stay in memory."""
    optimizer = torch.optim.Adam(probes.parameters(), lr=lr)
    history = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for b in batches:
            loss = sum(probe_loss(probes, t, b["teacher"][t.key], b["valid"][t.key], b["mask"], b["label"])
                       for t in targets) / max(1, len(targets))
            loss.backward()
            total += float(loss.detach())
        optimizer.step()
        history.append(total / max(1, len(batches)))
    for p in probes.parameters():
        p.requires_grad_(False)
    return history


@torch.no_grad()
def probe_scores(probes: ProbeSet, targets: list[Target], batches: list[dict[str, Any]]) -> dict[str, float]:
    """Each tap's probe scored on `batches` (the validation items): the mean over samples of its
    mask's foreground Dice at the mask's resolution (its logits upsampled bilinearly, as a soft
    label meets the student's output: probes on coarse and fine grids score alike), where the
    teacher saw the image (an empty mask predicted empty scores 1), and for classification
    samples whether its class is right. How well the probe generalises beyond the labelled items:
    a probe over many channels fitted on a few images can fit them and still fail elsewhere."""
    scores: dict[str, list[float]] = {t.key: [] for t in targets}
    for b in batches:
        seg = b["label"] < 0
        for t in targets:
            feature = b["teacher"][t.key]
            if bool(seg.any()):
                size = b["mask"].shape[-2:]
                logits = F.interpolate(probes.mask_logits(t, feature[seg]), size=size, mode="bilinear",
                                       align_corners=False)
                pred = logits[:, 0] > 0 if logits.shape[1] == 1 else logits.argmax(1) > 0
                truth = b["mask"][seg][:, 0] > 0
                ok = F.interpolate(b["valid"][t.key][seg], size=size, mode="nearest")[:, 0] > 0
                seen = ok[:, None].float()
                scores[t.key] += hard_dice(pred[:, None] * seen, truth[:, None] * seen).tolist()
            if probes.classes and bool((~seg).any()):
                cls = probes.class_logits(t, feature[~seg], b["valid"][t.key][~seg])
                scores[t.key] += (cls.argmax(1) == b["label"][~seg]).double().tolist()
    return {k: sum(v) / len(v) for k, v in scores.items() if v}


def probe_recipe(entries: dict[str, str], items: list[tuple[str, int]], targets: list[Target],
                 settings: dict[str, Any]) -> str:
    """What the probes depend on: the store entries, the labelled items (sample id, view) they are
    fitted on, the taps and the fitting settings."""
    return json.dumps({"entries": entries, "items": sorted(items), "settings": settings,
                       "targets": [[t.key, t.channels, list(t.loss_grid or t.grid)] for t in targets]},
                      sort_keys=True)


def output_loss(student_probs: torch.Tensor, teacher_probs: torch.Tensor, valid: torch.Tensor,
                kind: str = "mse") -> torch.Tensor:
    """The student's probabilities against the teachers' per sample (B,): over cells where the
    teachers saw the image (masks, (B, M, h, w)), or over classes ((B, n), valid ignored).
    kind "mse": the mean squared difference; "kl": KL(teachers || student), one channel read as
    the foreground probability of a binary mask (zero exactly where the two agree)."""
    if kind == "kl":
        d = _kl(teacher_probs, student_probs)
    else:
        d = ((student_probs - teacher_probs) ** 2).mean(1, keepdim=student_probs.ndim > 2)
    if d.ndim == 1:
        return d
    return (d * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1e-6)


def _kl(teacher: torch.Tensor, student: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """KL over the channel axis (dim 1), kept for masks ((B, 1, h, w)), summed away for classes."""
    if teacher.shape[1] == 1:  # a binary mask's foreground probability: add the background
        teacher, student = torch.cat([teacher, 1 - teacher], 1), torch.cat([student, 1 - student], 1)
    t, s = teacher.clamp(eps, 1.0), student.clamp(eps, 1.0)
    return (t * (t.log() - s.log())).sum(1, keepdim=teacher.ndim > 2)
