"""Projectors, return decoder, teacher-level gate and loss-level gate around the student.

Targets are (teacher, level, student stage) taps: a teacher level can be matched from several
student stages (encoder and decoder), each with its own projector. Teachers matched at the same
stage ("slot") compete in that slot's gate.

The teacher-level gate (per sample, per slot) sees the pooled student feature, a learned dataset
embedding and the student-teacher cosine similarity, and outputs a softmax over teachers. Unlike the
paper's code it is trained, and not by the feature loss it weights (which would reward collapsing
onto whichever teacher is easiest to imitate): it learns to predict teacher *relevance*, measured
by how well a linear probe on each teacher's cached features explains the ground-truth mask for
that sample, plus a balance regulariser (KL of the batch-mean weights from uniform) against
trivial collapse.

The loss-level gate is uncertainty weighting, sum_i exp(-s_i) * L_i + s_i: a term's weight can only
shrink by paying s_i, so it cannot win by zeroing a term. Its optimum is exp(-s_i) = 1/L_i, which
hands the easiest term (the reconstruction, often 10x smaller than the others) the largest weight
without bound; so s_i = b * tanh(raw_i / b) with b = ln(loss_gate_max_weight) keeps every weight
within [1/max, max] (default [0.25, 4]) while staying smooth and trainable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from featcache.distill.heads import Projector, ReturnDecoder, pointwise
from featcache.distill.losses import feature_loss, relative_reconstruction_loss
from featcache.distill.mean_teacher import MeanTeacher, consistency_rampup
from featcache.distill.output_kd import ProbeSet, mask_probabilities, output_loss
from featcache.distill.output_kd import masked_pool as _masked_pool
from featcache.distill.resample import area_pool
from featcache.distill.targets import Target
from featcache.distill.targets import module_key as _mkey
from featcache.distill.tasks import OUT, Classification, Tasks
from featcache.distill.trust import trust
from featcache.manifest import DistillSpec
from featcache.student import Student


def _to_grid(target: torch.Tensor, valid: torch.Tensor,
             grid: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher features (B, C, H, W) and validity (B, 1, H, W) area-averaged onto `grid` when it
    is coarser; validity becomes the fraction of each cell the teacher saw (a loss weight).
    Features are averaged with their validity so padding (zeros) does not dim border cells.
    The loader normally delivers targets on the loss grid already (Target.loss_grid); this
    covers the rest (an image size the stage stride does not divide, callers passing raw maps)."""
    if tuple(target.shape[-2:]) == tuple(grid):
        return target, valid
    pooled_valid = F.adaptive_avg_pool2d(valid, grid)
    pooled = F.adaptive_avg_pool2d(target * valid, grid) / pooled_valid.clamp_min(1e-6)
    return pooled, pooled_valid


# The paper's code (main_multi_teacher_split_by_datasets.py): task 0.94, feature KD 0.01, output
# KD 0.05; its return decoder's reconstruction is weighted like the feature term here.
PAPER_WEIGHTS = {"seg": 0.94, "cls": 0.94, "feat": 0.01, "recon": 0.01, "out": 0.05}


class TeacherGate(nn.Module):
    def __init__(self, student_channels: int, num_teachers: int, num_datasets: int,
                 hidden: int) -> None:
        super().__init__()
        self.dataset_embedding = nn.Embedding(num_datasets, 16)
        self.mlp = nn.Sequential(nn.Linear(student_channels + 16 + num_teachers, hidden), nn.ReLU(),
                                 nn.Dropout(0.1), nn.Linear(hidden, num_teachers))

    def forward(self, pooled: torch.Tensor, dataset_index: torch.Tensor,
                similarity: torch.Tensor) -> torch.Tensor:
        """pooled (B, C), dataset_index (B,), similarity (B, T) -> weights (B, T) summing to 1."""
        z = torch.cat([pooled, self.dataset_embedding(dataset_index), similarity], dim=1)
        return torch.softmax(self.mlp(z), dim=1)


@dataclass
class _Slot:
    """One student stage's teachers in a forward pass."""

    members: list[Target]
    feat: torch.Tensor  # the gate-weighted feature loss (batch mean)
    recon: list[torch.Tensor]  # the return decoder's per-sample losses
    aux: torch.Tensor  # gate and relevance-probe losses
    weights: torch.Tensor  # (B, T) gate weights, detached
    grids: list[tuple[torch.Tensor, torch.Tensor]]  # per teacher: (target, validity) on the loss grid


class DistillModel(nn.Module):
    def __init__(self, student: Student, targets: list[Target], spec: DistillSpec,
                 num_datasets: int, tasks: Tasks | None = None) -> None:
        """tasks: each dataset's task (default: binary segmentation for all)."""
        super().__init__()
        self.student, self.targets, self.spec = student, targets, spec
        self.tasks = tasks or Tasks.binary(num_datasets)
        # The teacher-free baseline's own average (mean_teacher.py): its consistency term is "out".
        self.mean_teacher = (MeanTeacher(student, spec.self_teacher_decay)
                             if spec.self_teacher == "mean_teacher" else None)
        # The loss terms: the tasks' (seg, cls), then distillation's (out only when asked for).
        soft_labels = spec.output or self.mean_teacher is not None
        self.terms = (*self.tasks.terms, "feat", "recon", *((OUT,) if soft_labels else ()))
        classes = [t.classes for t in self.tasks.by_dataset if isinstance(t, Classification)]
        self.cls_classes = max(classes, default=0)
        use = spec.enabled and bool(targets)
        self.distilling = use
        self.projectors = nn.ModuleDict()
        self.inverse = nn.ModuleDict()
        self.probes = nn.ModuleDict()
        self.gates = nn.ModuleDict()
        self.slots: dict[str, list[Target]] = {}
        if use:
            for t in targets:
                cs = student.stages[t.stage][0]
                self.projectors[_mkey(t.key)] = Projector(cs, t.channels, spec.projector)
                if spec.return_decoder:
                    self.inverse[_mkey(t.key)] = ReturnDecoder(t.channels, cs, spec.projector)
                self.slots.setdefault(t.stage, []).append(t)
            if spec.teacher_gate == "adaptive":
                for t in targets:
                    self.probes[_mkey(t.key)] = nn.Conv2d(t.channels, 1, 1)
                    if self.cls_classes:  # relevance for classification: a pooled linear probe
                        self.probes[_mkey(t.key) + "__cls"] = nn.Linear(t.channels, self.cls_classes)
                for stage, members in self.slots.items():
                    self.gates[stage] = TeacherGate(student.stages[stage][0], len(members),
                                                    num_datasets, spec.gate_hidden)
        # Output distillation's task-adapted teachers: fitted before training (output_kd.py), frozen.
        self.output_probes: ProbeSet | None = None
        self.output_steps = 1  # the run's optimizer steps (build_training sets it): T's schedule
        if soft_labels:
            self.register_buffer("output_step", torch.zeros((), dtype=torch.long))
        self.register_buffer("output_trust", None)  # (set below) None: fixed trust, not in the state
        if use and spec.output:
            probes = ProbeSet(targets, student.mask_channels, self.cls_classes)
            self.output_probes = probes.requires_grad_(False)
            # Which taps teach (output_probes "best", set by adapt.adapt_teachers); None: all
            # (a None buffer is not in the state dict, so checkpoints of "all" runs are as before).
            self.register_buffer("output_taps", torch.ones(len(targets), dtype=torch.bool)
                                 if spec.output_probes == "best" else None)
            if spec.output_trust == "validation":  # trust.py: each probe's weight, and its score
                self.output_trust = torch.ones(len(targets))
                self.register_buffer("probe_val", torch.full((len(targets),), math.nan))
        # Only trainable when it weighs something: a parameter that never receives a gradient
        # (the supervised baseline has one term) breaks DistributedDataParallel's reduction.
        self.log_vars = nn.Parameter(torch.zeros(len(self.terms)),
                                     requires_grad=use and spec.loss_gate == "uncertainty")

    def forward(self, image: torch.Tensor, mask: torch.Tensor | None, dataset_index: torch.Tensor,
                teacher: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
                label: torch.Tensor | None = None, has_mask: torch.Tensor | None = None) -> dict:
        """Returns the total loss, each term (batch mean), and gate weights per slot (B, T).

        label (B,): the class of classification samples (-1 elsewhere; None: no classification).
        mask None: feature pretraining on unlabelled images. Only the feature and reconstruction
        terms, teachers weighted uniformly (the gate learns from masks), fixed loss weights.
        has_mask (B,) bool: a semi-supervised batch, where only those samples are labelled: the
        task terms and the gate's training see those; the feature and output terms see all."""
        logits, feats = self.student.forward_features(image)
        labelled = mask is not None
        if label is None:
            label = torch.full_like(dataset_index, -1)
        terms = (self.tasks.losses(self.student, logits, feats, mask, label, dataset_index, has_mask)
                 if labelled else {})
        aux = torch.zeros((), device=image.device)  # gate + probe losses: train only those heads
        gate_weights: dict[str, torch.Tensor] = {}
        if self.distilling:
            labels = (mask, label, has_mask) if labelled else None
            slots = [self._slot(stage, members, feats, teacher, valid, labels, dataset_index)
                     for stage, members in self.slots.items()]
            for stage, slot in zip(self.slots, slots, strict=True):
                gate_weights[stage] = slot.weights
                aux = aux + slot.aux
            terms["feat"] = torch.stack([slot.feat for slot in slots]).mean()
            recon = [r for slot in slots for r in slot.recon]
            if recon:
                terms["recon"] = torch.stack(recon).mean()
            if self.output_probes is not None and labelled:
                terms[OUT] = self._output_term(logits, feats, slots, dataset_index)
                self.output_step += int(self.training)
        if self.mean_teacher is not None and labelled:
            if self.training:  # the average of the weights the last step left
                self.mean_teacher.update(self.student)
            ramp = consistency_rampup(self._run_done(), self.spec.self_teacher_rampup)
            consistency = self.mean_teacher.loss(self.student, logits, feats, image, self.tasks,
                                                 dataset_index, self.temperature(), self.spec.output_loss)
            terms[OUT] = ramp * consistency
            self.output_step += int(self.training)
        total = (self._combine(terms) if labelled else self._fixed(terms)) + aux
        logged = {k: v.detach() for k, v in terms.items()}
        if OUT in terms and self.output_trust is not None:  # metrics.csv's out_trust: not a loss term
            logged["out_trust"] = self._mean_trust()
        return {"loss": total, "logits": logits, "terms": logged, "gates": gate_weights}

    def _slot(self, stage: str, members: list[Target], feats: dict[str, torch.Tensor],
              teacher: dict[str, torch.Tensor], valid: dict[str, torch.Tensor],
              labels: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None,
              dataset_index: torch.Tensor) -> _Slot:
        """The teachers matched at one student stage: their feature losses weighted by the gate
        (trained here on the probes' relevance when labels are given: (mask, label, has_mask),
        on the labelled rows), the reconstruction terms, and what output distillation needs
        (each teacher's target on the loss grid)."""
        gated = bool(self.gates) and labels is not None
        rows = slice(None) if labels is None or labels[2] is None else labels[2]
        per_teacher, sims, relevance, recon, grids = [], [], [], [], []
        aux = torch.zeros((), device=feats[stage].device)
        for t in members:
            p, r = self._project(t, feats[stage])
            target, ok = _to_grid(teacher[t.key], valid[t.key], p.shape[-2:])
            grids.append((target, ok))
            per_teacher.append(feature_loss(p, target, ok, self.spec.feature_loss))
            if r is not None:
                recon.append(r)
            if gated:
                # Pool only where the teacher saw the image: padding is zeros after the warp.
                sims.append(F.cosine_similarity(_masked_pool(p.detach(), ok), _masked_pool(target, ok),
                                                dim=1))
                probe_loss = self._probe_loss(t, target, ok, *labels[:2])
                aux = aux + probe_loss[rows].mean()
                # Scale-free relevance: the target is proportional to probe_loss^(-1/T).
                relevance.append(-torch.log(probe_loss.detach() + 1e-6))
        losses = torch.stack(per_teacher, dim=1)  # (B, T)
        if gated:
            w = self.gates[stage](feats[stage].detach().mean((2, 3)), dataset_index, torch.stack(sims, dim=1))
            aux = aux + self._gate_loss(w[rows], torch.stack(relevance, dim=1)[rows])
        else:
            w = torch.full_like(losses, 1.0 / losses.shape[1])
        return _Slot(members, (w.detach() * losses).sum(1).mean(), recon, aux, w.detach(), grids)

    def _output_term(self, logits: torch.Tensor, feats: dict[str, torch.Tensor], slots: list[_Slot],
                     dataset_index: torch.Tensor) -> torch.Tensor:
        """Output distillation (see output_kd.py): per slot, the student's probabilities against
        the gate-weighted mix of its teachers' probe predictions; the mean over slots and samples."""
        temperature = self.temperature()
        per_slot = []
        for slot in map(self._teaching, slots):
            if not slot.members:
                continue
            slot, trusted = self._trusted(slot)
            # teachers of one stage may meet it on different grids: mix them on the coarsest
            grid = min((target.shape[-2:] for target, _ in slot.grids), key=lambda g: g[0] * g[1])
            ok = torch.stack([F.adaptive_avg_pool2d(v, grid) for _, v in slot.grids]).mean(0)
            mixed = self._mixed_masks(slot, grid, temperature)
            if self.spec.output_confidence:  # only the cells the teachers are sure of (at T = 1)
                at_one = self._mixed_masks(slot, grid, 1.0)
                sure = (torch.maximum(at_one, 1 - at_one) if at_one.shape[1] == 1
                        else at_one.amax(1, keepdim=True))
                ok = ok * (sure >= self.spec.output_confidence)
            student = F.adaptive_avg_pool2d(mask_probabilities(logits, temperature), grid)
            per_sample = output_loss(student, mixed, ok, self.spec.output_loss)
            for task, rows in self.tasks.groups(dataset_index):
                if isinstance(task, Classification):
                    if rows is None:  # a batch of this task alone: every row
                        rows = torch.arange(len(dataset_index), device=dataset_index.device)
                    per_sample = per_sample.index_put(
                        (rows,), self._class_output(task, rows, feats, slot, temperature))
            per_slot.append((per_sample if trusted is None else per_sample * trusted).mean())
        # KL's gradient shrinks as 1/T^2 with the temperature: scaled back as in Hinton et al.
        scale = temperature ** 2 if self.spec.output_loss == "kl" else 1.0
        return scale * torch.stack(per_slot).mean()

    def _teaching(self, slot: _Slot) -> _Slot:
        """The slot restricted to the taps whose probes teach (distill.output_probes), the gate's
        weights renormalised over them."""
        if self.output_taps is None:
            return slot
        keep = [j for j, t in enumerate(slot.members) if bool(self.output_taps[self.targets.index(t)])]
        if len(keep) == len(slot.members):
            return slot
        w = slot.weights[:, keep]
        return replace(slot, members=[slot.members[j] for j in keep],
                       grids=[slot.grids[j] for j in keep],
                       weights=w / w.sum(1, keepdim=True).clamp_min(1e-12))

    def _trusted(self, slot: _Slot) -> tuple[_Slot, torch.Tensor | None]:
        """With output_trust "validation": the slot's gate weights times each probe's trust
        (trust.py), renormalised, and their sum per sample (B,), which scales the slot's term: a
        slot whose probes are all untrusted teaches nothing. (slot, None) when trust is fixed."""
        if self.output_trust is None:
            return slot, None
        tau = self.output_trust[[self.targets.index(t) for t in slot.members]]
        w = slot.weights * tau
        mass = w.sum(1)
        return replace(slot, weights=w / mass.clamp_min(1e-12)[:, None]), mass

    def student_validated(self, score: float) -> None:
        """After each validation: every probe's trust from its validation score and the student's
        best so far (trust.py): trust only falls, so a dip of the student's score does not hand
        the student back to a probe it has already beaten."""
        if self.output_trust is not None:
            now = trust(self.probe_val, score, self.spec.output_trust_margin)
            self.output_trust.copy_(torch.minimum(self.output_trust, now))

    def _mixed_masks(self, slot: _Slot, grid: tuple[int, int], temperature: float) -> torch.Tensor:
        """The gate-weighted mix of the slot's teachers' probe probabilities on `grid`."""
        return sum(slot.weights[:, j, None, None, None] * F.adaptive_avg_pool2d(mask_probabilities(
            self.output_probes.mask_logits(t, target), temperature), grid) for j, (t, (target, _)) in
            enumerate(zip(slot.members, slot.grids, strict=True)))

    def temperature(self) -> float:
        """Output distillation's temperature now: linear from output_temperature[0] at the first
        step to [1] at the last."""
        first, last = self.spec.output_temperature
        return first + (last - first) * self._run_done()

    def _run_done(self) -> float:
        """The fraction of the run's output-term steps done, 0 at the first and 1 at the last:
        what the temperature and the mean teacher's ramp-up follow."""
        return min(1.0, float(self.output_step) / max(1, self.output_steps - 1))

    def _class_output(self, task: Classification, rows: torch.Tensor, feats: dict[str, torch.Tensor],
                      slot: _Slot, temperature: float) -> torch.Tensor:
        """The classification samples' output term (len(rows),): class probabilities."""
        n = task.classes
        mixed = sum(slot.weights[rows, j, None] * torch.softmax(
            self.output_probes.class_logits(t, target[rows], ok[rows])[:, :n] / temperature, dim=1)
            for j, (t, (target, ok)) in enumerate(zip(slot.members, slot.grids, strict=True)))
        student = torch.softmax(self.student.classify(feats, task.head)[rows]
                                / temperature, dim=1)
        return output_loss(student, mixed, mixed, self.spec.output_loss)

    def _project(self, t: Target, native: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Student stage (B, Cs, h, w) -> projection (B, C_t, gh, gw) and the return decoder's
        per-sample reconstruction loss (B,) (None without a return decoder).

        The projector runs on the coarser of the two grids. A teacher grid finer than the stage
        (LiteMedSAM's 64x64 from a 32x32 stage) is, with feature_grid "coarser", met by
        averaging the teacher down (see _to_grid): the projection of a 32x32 stage holds no
        detail that upsampling it to 64x64 could add, and the loss then touches 4x fewer values.
        With "teacher" (the paper's and RADIO's choice) the projection is upsampled bilinearly."""
        k = _mkey(t.key)
        base = native
        if native.shape[-2] * native.shape[-1] > t.grid[0] * t.grid[1]:
            base = area_pool(native, t.grid)  # a stage finer than the teacher: exact cell means
        projection, hidden = self.projectors[k](base)
        p = projection
        if self.spec.feature_grid == "teacher" and tuple(p.shape[-2:]) != tuple(t.grid):
            p = F.interpolate(projection, size=t.grid, mode="bilinear", align_corners=False)
        if not self.spec.return_decoder:
            return p, None
        if not self.spec.recon_to_student:
            # The same projection of a detached stage: its gradient stops before the student.
            projection, hidden = self.projectors[k](base.detach())
        recon = self.inverse[k](projection, hidden, self.projectors[k])
        return p, relative_reconstruction_loss(recon, base.detach())

    def _probe_loss(self, t: Target, target: torch.Tensor, ok: torch.Tensor,
                    mask: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """How well a linear probe on this teacher's features predicts the sample's labels: (B,).
        Masks: a per-position probe for the foreground (any class); classes (label >= 0): a
        linear probe on the features pooled where the teacher saw the image."""
        foreground = mask if self.student.mask_channels == 1 else (mask > 0).to(mask.dtype)
        small = F.adaptive_avg_pool2d(foreground, target.shape[-2:])
        probe = self.probes[_mkey(t.key)]
        logit = pointwise(target.detach(), probe.weight, probe.bias)
        bce = F.binary_cross_entropy_with_logits(logit, small, reduction="none")
        loss = (bce * ok).flatten(1).sum(1) / ok.flatten(1).sum(1).clamp_min(1.0)
        if not self.cls_classes:
            return loss
        pooled = self.probes[_mkey(t.key) + "__cls"](_masked_pool(target.detach(), ok))
        ce = F.cross_entropy(pooled, label.clamp_min(0), reduction="none")
        return torch.where(label >= 0, ce, loss)

    def _gate_loss(self, w: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
        target = torch.softmax(relevance / self.spec.gate_temperature, dim=1)
        fit = -(target * torch.log(w + 1e-8)).sum(1).mean()
        mean_w = w.mean(0)
        uniform = torch.full_like(mean_w, 1.0 / len(mean_w))
        balance = (uniform * (torch.log(uniform) - torch.log(mean_w + 1e-8))).sum()
        return fit + self.spec.gate_balance_weight * balance

    def fixed_weight(self, term: str) -> float:
        """A term's weight under fixed weighting: the paper's (loss_gate: paper), else
        distill.loss_weights (1 for a term it does not name)."""
        if self.spec.loss_gate == "paper":
            return PAPER_WEIGHTS[term]
        return self.spec.loss_weights.get(term, 1.0)

    def _fixed(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The terms at their fixed weights (pretraining, or loss_gate: fixed or paper)."""
        return sum(self.fixed_weight(name) * value for name, value in terms.items())

    def _combine(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        if not self.distilling:
            total = sum(terms[name] for name in self.tasks.terms if name in terms)
            return total + self.fixed_weight(OUT) * terms[OUT] if OUT in terms else total
        total = torch.zeros((), device=next(iter(terms.values())).device)
        log_vars = self.bounded_log_vars()
        for i, name in enumerate(self.terms):
            if name not in terms:
                continue
            if self.spec.loss_gate == "uncertainty":
                total = total + torch.exp(-log_vars[i]) * terms[name] + log_vars[i]
        if self.spec.loss_gate != "uncertainty":
            total = total + self._fixed(terms)
        return total

    def bounded_log_vars(self) -> torch.Tensor:
        """s = b * tanh(raw / b), b = ln(max weight): every weight exp(-s) lies in [1/max, max]."""
        bound = math.log(self.spec.loss_gate_max_weight)
        if bound == 0:
            return torch.zeros_like(self.log_vars)
        return bound * torch.tanh(self.log_vars / bound)

    def active_terms(self) -> tuple[str, ...]:
        if not self.distilling:
            return (*self.tasks.terms, *((OUT,) if self.mean_teacher is not None else ()))
        return tuple(t for t in self.terms if t != "recon" or self.spec.return_decoder)

    def loss_weights(self) -> dict[str, float]:
        """The weight each loss term currently gets (only the terms this model computes)."""
        active = self.active_terms()
        if not self.distilling:
            return {n: 1.0 if n in self.tasks.terms else self.fixed_weight(n) for n in active}
        if self.spec.loss_gate == "uncertainty":
            return {n: math.exp(-float(v)) for n, v in zip(self.terms, self.bounded_log_vars().detach(),
                                                             strict=True) if n in active}
        return {n: self.fixed_weight(n) for n in active}

    def _mean_trust(self) -> torch.Tensor:
        """The mean trust of the probes that teach (all, or output_probes "best"'s one)."""
        teaching = (torch.ones_like(self.output_trust, dtype=torch.bool) if self.output_taps is None
                    else self.output_taps)
        return self.output_trust[teaching].mean()
