"""The training loop: from a manifest to a run directory, reading only the store and the data.

No teacher code is imported here: teacher features come from the store. Under torchrun every
process trains on its shard of each epoch's dataset-balanced draw (DistributedDataParallel);
validation is sharded and summed over ranks; only rank 0 writes the run directory and reports
progress.
"""

from __future__ import annotations

import csv
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from featcache.data.photometric import Photometric
from featcache.data.registry import build_dataset
from featcache.distill import distributed as dist
from featcache.distill.data import DistillItems, Source, build_targets, resolve_entry, training_items
from featcache.distill.distributed import BalancedShardSampler
from featcache.distill.epoch_stats import EpochStats
from featcache.distill.loaders import EpochBatches, low_priority_workers, make_loader, resolve_workers
from featcache.distill.memory import check_fits
from featcache.distill.model import DistillModel
from featcache.distill.pretrain import pretrain
from featcache.distill.run import Checkpoint, Run, TrainingState, check_run_dir
from featcache.distill.schedule import adamw, warmup_cosine
from featcache.distill.student import Student, count_params
from featcache.distill.tblog import open_log
from featcache.errors import CheckpointError, ConfigError, DatasetError
from featcache.manifest import DatasetSpec, Manifest, same_settings
from featcache.store import FeatureStore, default_store_url

ProgressFn = Callable[[str, dict[str, Any]], None]
LAST_CHECKPOINT_EVERY_S = 60.0


@dataclass
class TrainResult:
    run_dir: Path
    epochs: int
    best_val_dice: float
    best_epoch: int
    student_params: int
    seconds: float
    steps_per_s: float
    gates: dict[str, dict[str, float]]  # "dataset/stage" -> teacher -> mean weight (last epoch)
    loss_weights: dict[str, float]
    world_size: int = 1  # processes that trained together; steps_per_s is per process


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_sources(manifest: Manifest, with_teachers: bool,
                  datasets: list[DatasetSpec] | None = None) -> list[Source]:
    """The manifest's datasets (or `datasets`), each with its teachers' store entries.

    Without teachers (the supervised baseline) a dataset has as many views as training.views
    asks for (1 for "all"), replayed as extraction stores them, so both arms see the same views."""
    store = FeatureStore(manifest.store, read_only=True) if with_teachers else None
    sources = []
    for i, spec in enumerate(manifest.datasets if datasets is None else datasets):
        dataset = build_dataset(spec.name, spec.root, **spec.options)
        entries = {}
        if store is not None:
            fingerprint = dataset.fingerprint()
            entries = {t.label: resolve_entry(store, t, dataset, fingerprint) for t in manifest.teachers}
        asked = manifest.training.views
        views = min((e.layout.views for e in entries.values()),
                    default=asked if isinstance(asked, int) else 1)
        sources.append(Source(i, dataset, entries, views))
    return sources


def _collate_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    nb = device.type == "cuda"  # pinned by the loader: copy while the previous step runs
    teacher = {k[2:]: v.to(device, non_blocking=nb).float() for k, v in batch.items() if k.startswith("t:")}
    valid = {k[2:]: v.to(device, non_blocking=nb) for k, v in batch.items() if k.startswith("v:")}
    return {"image": batch["image"].to(device, non_blocking=nb),
            "mask": batch["mask"].to(device, non_blocking=nb), "dataset": batch["dataset"].to(device),
            "teacher": teacher, "valid": valid}


def dice_per_image(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hard Dice per image (B,), empty prediction vs empty mask scored 1."""
    pred = (logits > 0).float()
    inter = (pred * mask).flatten(1).sum(1)
    total = pred.flatten(1).sum(1) + mask.flatten(1).sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))


class Trainer:
    def __init__(self, manifest: Manifest, progress: ProgressFn | None = None) -> None:
        tr = manifest.training
        self.dist, self.device = dist.setup(tr.device)
        try:
            self._build(manifest, progress)
        except BaseException:
            dist.teardown(self.dist)  # a user error on one rank must not leave the group hanging
            raise

    def _build(self, manifest: Manifest, progress: ProgressFn | None) -> None:
        self.manifest = manifest
        main = self.dist.is_main
        self.progress = progress if progress is not None and main else (lambda event, info: None)
        tr, st = manifest.training, manifest.student
        seed_everything(tr.seed)  # identical initial weights on every rank
        self.with_teachers = manifest.distill.enabled and bool(manifest.teachers)
        self.sources = build_sources(manifest, self.with_teachers)
        for spec, source in zip(manifest.datasets, self.sources, strict=True):
            if not source.dataset.labelled:
                raise ConfigError(f"dataset {spec.name} has images but no masks: list it under "
                                  "pretrain.datasets (feature pretraining), not datasets")
        self.store_url = (manifest.store or default_store_url()) if self.with_teachers else None
        student = Student(st)
        self.student_config = student.config  # with the input normalisation resolved
        stride = max(r for _, r in student.stages.values())
        if st.image_size % stride:
            nearest = max(1, round(st.image_size / stride)) * stride
            raise ConfigError(f"student.image_size {st.image_size} must be a multiple of {stride}, "
                              f"the stride of encoder {st.encoder}; e.g. {nearest}")
        check_fits(manifest, student, self.sources, self.device)
        if manifest.pretrain.steps and self.dist.active:
            raise ConfigError("feature pretraining runs in one process: run it without torchrun first "
                              "(its checkpoints/pretrained.pt is then reused), or set pretrain.steps: 0")
        self.pretrain_sources = (build_sources(manifest, True, manifest.pretrain.datasets)
                                 if self.with_teachers and manifest.pretrain.steps else [])
        self.targets = (build_targets(manifest, self.sources + self.pretrain_sources, student.stages)
                        if self.with_teachers else [])
        self.model = DistillModel(student, self.targets, manifest.distill, len(self.sources)).to(self.device)
        self.ddp: torch.nn.Module = self.model
        if self.dist.active:
            ids = [self.device] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)
        self.train_items = [it for s in self.sources for it in training_items(
            s, manifest.datasets[s.index].train_split, tr.views, tr.train_fraction, tr.seed)]
        self.val_items = [it for s in self.sources for it in training_items(
            s, manifest.datasets[s.index].val_split, 1, 1.0, tr.seed)]
        if len(self.train_items) < 2 or not self.val_items:
            raise DatasetError(f"too few samples: {len(self.train_items)} training items and "
                               f"{len(self.val_items)} validation items; use more data or splits")
        # Validation scores the student alone, as it is: no teacher features, no augmentation.
        self.train_set = self.items_dataset(self.sources, self.train_items, self.with_teachers, augment=True)
        self.val_set = self.items_dataset(self.sources, self.val_items[self.dist.rank::self.dist.world_size],
                                          False, augment=False)
        self.sampler = BalancedShardSampler(self._balance_weights(), len(self.train_items), tr.seed,
                                            self.dist.rank, self.dist.world_size)
        self.drop_last = self.sampler.per_rank > tr.batch_size
        self.steps_per_epoch = self.sampler.per_rank // tr.batch_size if self.drop_last else 1
        # training.steps fixes the run's length in optimizer steps whatever the data size.
        self.epochs = math.ceil(tr.steps / self.steps_per_epoch) if tr.steps else tr.epochs
        self.workers = resolve_workers(tr.num_workers, self.dist.world_size)
        self.low_priority_workers = low_priority_workers(tr.worker_priority, self.device)
        self._train: DataLoader | None = None
        self._val: DataLoader | None = None
        self.optimizer = adamw(self._param_groups(), tr.lr, tr.weight_decay, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_cosine(
            self.epochs * self.steps_per_epoch, tr.warmup_epochs * self.steps_per_epoch))
        self.run = Run(manifest.run_dir)
        self.start_epoch, self.best_dice, self.best_epoch = 0, -1.0, -1
        self._last_saved = time.perf_counter()
        self.tb = open_log(tr.log, self.run.tensorboard_dir, main, self.model.student, self.val_set,
                           self.device)

    def items_dataset(self, sources: list[Source], items: list[tuple[int, int, int]], teachers: bool,
                      augment: bool) -> DistillItems:
        m = self.manifest
        aug = m.training.augment
        photometric = (Photometric(**aug.model_dump(exclude={"enabled"}))
                       if augment and aug.enabled else None)
        return DistillItems(sources, items, self.targets, m.student.image_size, m.student.in_channels,
                            m.distill.normalisation, teachers, photometric, m.training.seed)

    def _param_groups(self) -> list[dict[str, Any]]:
        """The small auxiliary heads (teacher-relevance probes, teacher gates, loss-gate
        log-variances) get a 10x learning rate and no weight decay: they must track the student
        within a short run, and decay would pull every loss weight to 1 regardless of its loss."""
        fast, rest = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                is_head = name == "log_vars" or name.startswith(("probes.", "gates."))
                (fast if is_head else rest).append(p)
        groups = [{"params": rest}]
        if fast:
            groups.append({"params": fast, "weight_decay": 0.0, "lr": 10 * self.manifest.training.lr})
        return groups

    # --- data -------------------------------------------------------------------------------
    def _balance_weights(self) -> torch.Tensor:
        """Each dataset gets the same share of every epoch, whatever its size."""
        counts: dict[int, int] = {}
        for s, _, _ in self.train_items:
            counts[s] = counts.get(s, 0) + 1
        return torch.tensor([1.0 / counts[s] for s, _, _ in self.train_items], dtype=torch.double)

    def _val_loader(self) -> DataLoader:
        """One validation loader for the whole run, so its workers persist between epochs."""
        if self._val is None:
            tr = self.manifest.training
            self._val = make_loader(self.val_set, tr.batch_size, min(self.workers, 1),
                                    tr.prefetch_factor, self.device,
                                    low_priority=self.low_priority_workers)
        return self._val

    def epoch_batches(self, start_epoch: int) -> EpochBatches:
        """The indices of epochs start_epoch.. in batches (steps_per_epoch each). Each epoch's
        draw is seeded by the epoch (dataset-balanced sampling), so a resumed run sees the same
        batches. Indices carry the epoch (epoch * n + item, see DistillItems), which seeds the
        item's augmentation."""
        tr = self.manifest.training
        n = len(self.train_items)

        def draw(epoch: int) -> list[int]:
            return [epoch * n + i for i in self.sampler.draw(epoch)]

        return EpochBatches(draw, tr.batch_size, self.drop_last, start_epoch, self.epochs,
                            self.steps_per_epoch)

    def _train_batches(self, start_epoch: int) -> Iterator[dict[str, Any]]:
        """Training batches of epochs start_epoch.. back to back, from one loader iterator, so
        workers prefetch across epoch ends."""
        tr = self.manifest.training
        self._train = make_loader(self.train_set, tr.batch_size, self.workers, tr.prefetch_factor,
                                  self.device, batches=self.epoch_batches(start_epoch),
                                  low_priority=self.low_priority_workers)
        return iter(self._train)

    # --- checkpoints ------------------------------------------------------------------------
    def _checkpoint(self, epoch: int) -> Checkpoint:
        state = TrainingState(
            distill={k: v for k, v in self.model.state_dict().items() if not k.startswith("student.")},
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            rng=torch.get_rng_state())
        return Checkpoint(
            epoch=epoch, student_config=self.student_config, student=self.model.student.state_dict(),
            saved_manifest=self.manifest.model_dump(mode="json"),
            best_val_dice=self.best_dice, best_epoch=self.best_epoch,
            entries={f"{s.dataset.name}/{t}": r.key for s in self.sources for t, r in s.entries.items()},
            store=self.store_url, world_size=self.dist.world_size, training=state)

    def resume(self) -> None:
        checkpoint = self.run.load_checkpoint("last")
        state = checkpoint.training
        if state is None:
            raise CheckpointError(f"{checkpoint.path} holds no training state to resume from; "
                                  "use a new run_dir")
        if not same_settings(checkpoint.saved_manifest, self.manifest):
            raise CheckpointError(f"{self.run.path}: the checkpoint was trained with a different manifest; "
                                  "resume with the same manifest and override options, or use a new run_dir",
                                  fields=("override",))
        self.model.load_state_dict({**{f"student.{k}": v for k, v in checkpoint.student.items()},
                                    **state.distill})
        self.optimizer.load_state_dict(state.optimizer)
        self.scheduler.load_state_dict(state.scheduler)
        torch.set_rng_state(state.rng)
        self.start_epoch = checkpoint.epoch + 1
        self.best_dice, self.best_epoch = checkpoint.best_val_dice, checkpoint.best_epoch
        if self.dist.is_main:  # rows of epochs after the checkpoint (killed mid-way) are redone
            for path in (self.run.metrics_csv, self.run.gates_csv):
                self._truncate_csv(path, self.start_epoch)

    # --- loop -------------------------------------------------------------------------------
    def step(self, batch: dict[str, Any], optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler, labelled: bool = True) -> dict[str, Any]:
        """One optimizer step; labelled=False is feature pretraining (the batch's masks unused)."""
        b = _collate_to(batch, self.device)
        amp = self.manifest.training.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            out = self.ddp(b["image"], b["mask"] if labelled else None, b["dataset"], b["teacher"],
                           b["valid"])
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        if self.manifest.training.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.manifest.training.grad_clip)
        optimizer.step()
        scheduler.step()
        out["dataset"] = batch["dataset"]
        return out

    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One step of the labelled training with its optimizer and schedule."""
        return self.step(batch, self.optimizer, self.scheduler)

    def _validate(self) -> float:
        """Mean per-image Dice over the whole validation split (each rank scores its shard)."""
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64)
        with torch.no_grad():
            for batch in self._val_loader():
                logits = self.model.student(batch["image"].to(self.device))
                d = dice_per_image(logits.float().cpu(), batch["mask"])
                total += torch.tensor([float(d.sum()), len(d)], dtype=torch.float64)
        self.model.train()
        total = dist.all_reduce_sum(total, self.dist)
        return float(total[0] / total[1].clamp_min(1))

    def train(self) -> TrainResult:
        tr = self.manifest.training
        main = self.dist.is_main
        if main:
            self.run.path.mkdir(parents=True, exist_ok=True)
            self.run.manifest_file.write_text(
                yaml.safe_dump(self.manifest.model_dump(mode="json"), sort_keys=False))
        if self.start_epoch == 0 and self.pretrain_sources:
            pretrain(self)
        self.progress("start", {"epochs": self.epochs, "steps": self.steps_per_epoch,
                                "params": count_params(self.model.student), "workers": self.workers,
                                "start_epoch": self.start_epoch, "device": str(self.device),
                                "world_size": self.dist.world_size})
        t0, steps = time.perf_counter(), 0
        gates: dict[str, dict[str, float]] = {}
        names = [s.dataset.name for s in self.sources]
        slots = {stage: [t.teacher for t in members] for stage, members in self.model.slots.items()}
        self.model.train()
        batches = self._train_batches(self.start_epoch)
        for epoch in range(self.start_epoch, self.epochs):
            if self.dist.active:  # dropout differs per rank, reproducibly per epoch
                torch.manual_seed(tr.seed * 1000 + epoch * 7919 + self.dist.rank)
            stats = EpochStats(names, slots)
            t_epoch = time.perf_counter()
            for step in range(self.steps_per_epoch):
                batch = next(batches)
                out = self.train_step(batch)
                steps += 1
                stats.add(out, batch["dataset"])
                self.progress("step", {"epoch": epoch, "step": step + 1, "loss": float(out["loss"].detach())})
            terms, gates = stats.reduce(self.dist)
            dist.sync_buffers(self.model, self.dist)
            val_dice = self._validate()
            improved = val_dice > self.best_dice
            if improved:
                self.best_dice, self.best_epoch = val_dice, epoch
            row = {"epoch": epoch, "split": "train", **terms,
                   "lr": self.scheduler.get_last_lr()[0], "seconds": time.perf_counter() - t_epoch,
                   **{f"w_{k}": v for k, v in self.model.loss_weights().items()}}
            if main:
                self._write_epoch(epoch, row, val_dice, gates, improved)
            row["val_dice"] = val_dice
            self.progress("epoch", {**row, "best": self.best_dice, "gates": gates})
        seconds = time.perf_counter() - t0
        return TrainResult(self.run.path, self.epochs, self.best_dice, self.best_epoch,
                           count_params(self.model.student), seconds, steps / max(seconds, 1e-9),
                           gates, self.model.loss_weights(), self.dist.world_size)

    def _write_epoch(self, epoch: int, row: dict[str, Any], val_dice: float,
                     gates: dict[str, dict[str, float]], improved: bool) -> None:
        self._append_csv(self.run.metrics_csv, [row, {"epoch": epoch, "split": "val", "val_dice": val_dice}])
        self._append_csv(self.run.gates_csv, [{"epoch": epoch, "dataset": k.split("/")[0],
                                        "stage": k.split("/")[1], "teacher": t, "weight": w}
                                       for k, tw in gates.items() for t, w in tw.items()])
        if self.tb is not None:
            self.tb.log_epoch(epoch, row, val_dice, gates)
        # The resume point: after the last epoch, and otherwise at most once a minute: a run of
        # 100 one-step epochs (a few labelled images) would write its ~100 MB state 100 times.
        now = time.perf_counter()
        if epoch == self.epochs - 1 or now - self._last_saved >= LAST_CHECKPOINT_EVERY_S:
            self.run.save_checkpoint("last", self._checkpoint(epoch))
            self._last_saved = now
        if improved:
            self.run.save_checkpoint("best", self._checkpoint(epoch))

    def _append_csv(self, path: Path, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        new = not path.exists() or self.start_epoch == 0 and rows[0].get("epoch") == 0
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w" if new else "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, restval="")
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def _truncate_csv(self, path: Path, start_epoch: int) -> None:
        if not path.exists():
            return
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], [r for r in reader if int(r["epoch"]) < start_epoch]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    def close(self) -> None:
        """Stop loader workers and leave the process group (if this trainer joined it)."""
        self._train = self._val = None
        if self.tb is not None:
            self.tb.close()
        dist.teardown(self.dist)


def claim_run_dir(run_dir: Path, overwrite: bool, remove: bool = True) -> None:
    """A fresh run never writes over another: a run_dir holding one is reused only with --resume
    (the caller resumes) or --overwrite (its training files are removed here first, by the one
    process that `remove`s: every torchrun rank checks, rank 0 deletes)."""
    run = Run(run_dir)
    found = [path for path in run.training_files() if path.exists()]
    if not found:
        return
    if not overwrite:
        held = found[0].relative_to(run.path)
        raise ConfigError(f"{run_dir} already holds a run ({held}); pass resume to continue it, "
                          "overwrite to replace it, or set another run_dir", fields=("resume", "overwrite"))
    for path in found if remove else ():
        path.unlink(missing_ok=True)


def train(manifest: Manifest, resume: bool = False, progress: ProgressFn | None = None,
          overwrite: bool = False) -> TrainResult:
    check_run_dir(manifest.run_dir, manifest.store or default_store_url())
    if not resume:
        claim_run_dir(Path(manifest.run_dir), overwrite, remove=dist.env_rank() == 0)
    trainer = Trainer(manifest, progress)
    try:
        if resume:
            trainer.resume()
        return trainer.train()
    finally:
        trainer.close()
