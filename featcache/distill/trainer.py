"""The training loop: from a manifest to a run directory, reading only the store and the data.

No teacher code is imported here: teacher features come from the store.
"""

from __future__ import annotations

import csv
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, WeightedRandomSampler

from featcache.data.registry import build_dataset
from featcache.distill.checkpoint import load_checkpoint, save_checkpoint
from featcache.distill.data import DistillItems, Source, build_targets, resolve_entry, training_items
from featcache.distill.manifest import Manifest
from featcache.distill.model import DistillModel
from featcache.distill.student import Student, StudentConfig, count_params
from featcache.errors import CheckpointError, ConfigError, DatasetError
from featcache.store import FeatureStore, default_store_url

ProgressFn = Callable[[str, dict[str, Any]], None]


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"training.device {name!r}: no CUDA device here; use auto or cpu")
    return torch.device(name)


def build_sources(manifest: Manifest, with_teachers: bool) -> list[Source]:
    store = FeatureStore(manifest.store, read_only=True) if with_teachers else None
    sources = []
    for i, spec in enumerate(manifest.datasets):
        dataset = build_dataset(spec.name, spec.root, **spec.options)
        entries = {}
        if store is not None:
            fingerprint = dataset.fingerprint()
            entries = {t.name: resolve_entry(store, t, dataset, fingerprint) for t in manifest.teachers}
        views = min((e.layout.views for e in entries.values()), default=1)
        sources.append(Source(i, dataset, entries, views))
    return sources


def _collate_to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    teacher = {k[2:]: v.to(device) for k, v in batch.items() if k.startswith("t:")}
    valid = {k[2:]: v.to(device) for k, v in batch.items() if k.startswith("v:")}
    return {"image": batch["image"].to(device), "mask": batch["mask"].to(device),
            "dataset": batch["dataset"].to(device), "teacher": teacher, "valid": valid}


def _lr_lambda(epochs: int, warmup: int, steps_per_epoch: int) -> Callable[[int], float]:
    total, warm = epochs * steps_per_epoch, warmup * steps_per_epoch

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return f


def dice_per_image(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hard Dice per image (B,), empty prediction vs empty mask scored 1."""
    pred = (logits > 0).float()
    inter = (pred * mask).flatten(1).sum(1)
    total = pred.flatten(1).sum(1) + mask.flatten(1).sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp_min(1), torch.ones_like(total))


class Trainer:
    def __init__(self, manifest: Manifest, progress: ProgressFn | None = None) -> None:
        self.manifest = manifest
        self.progress = progress or (lambda event, info: None)
        tr = manifest.training
        seed_everything(tr.seed)
        self.device = pick_device(tr.device)
        self.with_teachers = manifest.distill.enabled and bool(manifest.teachers)
        self.sources = build_sources(manifest, self.with_teachers)
        self.store_url = (manifest.store or default_store_url()) if self.with_teachers else None
        st = manifest.student
        self.student_config = StudentConfig(encoder=st.encoder, in_channels=st.in_channels,
                                            decoder_channels=tuple(st.decoder_channels),
                                            encoder_weights=st.encoder_weights)
        student = Student(self.student_config)
        self.targets = build_targets(manifest, self.sources, student.stages) if self.with_teachers else []
        self.model = DistillModel(student, self.targets, manifest.distill, len(self.sources)).to(self.device)
        self.train_items = [it for s in self.sources for it in training_items(
            s, manifest.datasets[s.index].train_split, tr.views, tr.train_fraction, tr.seed)]
        self.val_items = [it for s in self.sources for it in training_items(
            s, manifest.datasets[s.index].val_split, 1, 1.0, tr.seed)]
        if len(self.train_items) < 2 or not self.val_items:
            raise DatasetError(f"too few samples: {len(self.train_items)} training items and "
                               f"{len(self.val_items)} validation items; use more data or splits")
        make = lambda items: DistillItems(  # noqa: E731
            self.sources, items, self.targets, st.image_size, st.in_channels,
            manifest.distill.normalisation, self.with_teachers)
        self.train_set, self.val_set = make(self.train_items), make(self.val_items)
        self.steps_per_epoch = math.ceil(len(self.train_items) / tr.batch_size)
        self.optimizer = torch.optim.AdamW(self._param_groups(), lr=tr.lr, weight_decay=tr.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(tr.epochs, tr.warmup_epochs, self.steps_per_epoch))
        self.run_dir = Path(manifest.run_dir)
        self.start_epoch, self.best_dice, self.best_epoch = 0, -1.0, -1

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
    def _train_loader(self, epoch: int) -> DataLoader:
        """Dataset-balanced sampling, seeded per epoch so a resumed run sees the same batches."""
        counts = {}
        for s, _, _ in self.train_items:
            counts[s] = counts.get(s, 0) + 1
        weights = torch.tensor([1.0 / counts[s] for s, _, _ in self.train_items], dtype=torch.double)
        gen = torch.Generator().manual_seed(self.manifest.training.seed * 1000 + epoch)
        sampler = WeightedRandomSampler(weights, len(self.train_items), replacement=True, generator=gen)
        return DataLoader(self.train_set, batch_size=self.manifest.training.batch_size,
                          sampler=sampler, num_workers=self.manifest.training.num_workers,
                          drop_last=len(self.train_items) > self.manifest.training.batch_size,
                          persistent_workers=False)

    # --- checkpoints ------------------------------------------------------------------------
    def _payload(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch, "student_config": self.student_config.to_dict(),
            "student": self.model.student.state_dict(),
            "distill": {k: v for k, v in self.model.state_dict().items() if not k.startswith("student.")},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(), "best_val_dice": self.best_dice,
            "best_epoch": self.best_epoch, "manifest": self.manifest.model_dump(mode="json"),
            "image_size": self.manifest.student.image_size,
            "store": self.store_url,
            "entries": {f"{s.dataset.name}/{t}": r.key for s in self.sources for t, r in s.entries.items()},
        }

    def resume(self) -> None:
        payload = load_checkpoint(self.run_dir / "checkpoints" / "last.pt")
        if payload["manifest"] != self.manifest.model_dump(mode="json"):
            raise CheckpointError(f"{self.run_dir}: the checkpoint was trained with a different manifest; "
                                  "resume with the same manifest and --set options, or use a new run_dir")
        self.model.load_state_dict({**{f"student.{k}": v for k, v in payload["student"].items()},
                                    **payload["distill"]})
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        torch.set_rng_state(payload["rng"])
        self.start_epoch = payload["epoch"] + 1
        self.best_dice, self.best_epoch = payload["best_val_dice"], payload["best_epoch"]

    # --- loop -------------------------------------------------------------------------------
    def _step(self, batch: dict[str, Any]) -> dict[str, Any]:
        b = _collate_to(batch, self.device)
        amp = self.manifest.training.amp and self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            out = self.model(b["image"], b["mask"], b["dataset"], b["teacher"], b["valid"])
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        if self.manifest.training.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.manifest.training.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        out["dataset"] = batch["dataset"]
        return out

    def _validate(self) -> float:
        self.model.eval()
        loader = DataLoader(self.val_set, batch_size=self.manifest.training.batch_size, shuffle=False)
        scores = []
        with torch.no_grad():
            for batch in loader:
                logits = self.model.student(batch["image"].to(self.device))
                scores.append(dice_per_image(logits.float().cpu(), batch["mask"]))
        self.model.train()
        return float(torch.cat(scores).mean())

    def train(self) -> TrainResult:
        tr = self.manifest.training
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "manifest.yaml").write_text(
            yaml.safe_dump(self.manifest.model_dump(mode="json"), sort_keys=False))
        self.progress("start", {"epochs": tr.epochs, "steps": self.steps_per_epoch,
                                "params": count_params(self.model.student),
                                "start_epoch": self.start_epoch, "device": str(self.device)})
        t0, steps = time.perf_counter(), 0
        gates: dict[str, dict[str, float]] = {}
        self.model.train()
        for epoch in range(self.start_epoch, tr.epochs):
            sums: dict[str, float] = {}
            gate_acc: dict[tuple[str, str, str], list[float]] = {}
            t_epoch = time.perf_counter()
            for step, batch in enumerate(self._train_loader(epoch)):
                out = self._step(batch)
                steps += 1
                for k, v in {"loss": out["loss"].detach(), **out["terms"]}.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                self._accumulate_gates(out, gate_acc)
                self.progress("step", {"epoch": epoch, "step": step + 1, "loss": float(out["loss"].detach())})
            n = max(1, self.steps_per_epoch)
            val_dice = self._validate()
            gates = {f"{d}/{s}": {} for d, s, _ in gate_acc}
            for (d, s, t), ws in gate_acc.items():
                gates[f"{d}/{s}"][t] = float(np.mean(ws))
            row = {"epoch": epoch, "split": "train", **{k: v / n for k, v in sums.items()},
                   "lr": self.scheduler.get_last_lr()[0], "seconds": time.perf_counter() - t_epoch,
                   **{f"w_{k}": v for k, v in self.model.loss_weights().items()}}
            self._append_csv("metrics.csv", [row, {"epoch": epoch, "split": "val", "val_dice": val_dice}])
            row["val_dice"] = val_dice
            self._append_csv("gates.csv", [{"epoch": epoch, "dataset": k.split("/")[0],
                                            "stage": k.split("/")[1], "teacher": t, "weight": w}
                                           for k, tw in gates.items() for t, w in tw.items()])
            improved = val_dice > self.best_dice
            if improved:
                self.best_dice, self.best_epoch = val_dice, epoch
            save_checkpoint(self.run_dir / "checkpoints" / "last.pt", self._payload(epoch))
            if improved:
                save_checkpoint(self.run_dir / "checkpoints" / "best.pt", self._payload(epoch))
            self.progress("epoch", {**row, "best": self.best_dice, "gates": gates})
        seconds = time.perf_counter() - t0
        return TrainResult(self.run_dir, tr.epochs, self.best_dice, self.best_epoch,
                           count_params(self.model.student), seconds, steps / max(seconds, 1e-9),
                           gates, self.model.loss_weights())

    def _accumulate_gates(self, out: dict[str, Any], acc: dict) -> None:
        names = [s.dataset.name for s in self.sources]
        for stage, w in out["gates"].items():
            teachers = [t.teacher for t in self.model.slots[stage]]
            for b in range(w.shape[0]):
                d = names[int(out["dataset"][b])]
                for j, t in enumerate(teachers):
                    acc.setdefault((d, stage, t), []).append(float(w[b, j]))

    def _append_csv(self, name: str, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        path = self.run_dir / name
        new = not path.exists() or self.start_epoch == 0 and rows[0].get("epoch") == 0
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with path.open("w" if new else "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, restval="")
            if new:
                writer.writeheader()
            writer.writerows(rows)


def train(manifest: Manifest, resume: bool = False, progress: ProgressFn | None = None) -> TrainResult:
    trainer = Trainer(manifest, progress)
    if resume:
        trainer.resume()
    return trainer.train()
