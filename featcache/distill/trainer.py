"""The training loop: from a manifest to a run directory, reading only the store and the data.

Read top to bottom: `Trainer.__init__` builds the data, the model and the optimizer (plain
functions in build.py); `train` runs feature pretraining if asked (pretrain.py), then epochs of
`optimizer_step` (loop.py), each followed by a validation and the run's logs and checkpoints
(run.py owns every file). No teacher code is imported here: teacher features come from the store.
Under torchrun every process trains on its shard of each epoch's dataset-balanced draw
(DistributedDataParallel); validation is sharded and summed over ranks; only rank 0 writes the
run directory and reports progress.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from featcache.distill import distributed as dist
from featcache.distill.adapt import adapt_teachers
from featcache.distill.build import Training, build_training, epoch_batches, store_url
from featcache.distill.epoch_stats import EpochStats, train_row
from featcache.distill.guards import Interrupts, check_loss, check_weights
from featcache.distill.loaders import make_loader
from featcache.distill.loop import StepSettings, optimizer_step
from featcache.distill.precise_bn import PreciseBN
from featcache.distill.pretrain import pretrain
from featcache.distill.resident import make_resident
from featcache.distill.scoreboard import Scoreboard
from featcache.distill.state import resume_from, snapshot
from featcache.distill.tblog import open_log
from featcache.distill.validation import ValScores, validate
from featcache.events import EpochDone, ProgressFn, TrainingStarted, TrainingStep, ignore
from featcache.manifest import Manifest
from featcache.runs import Checkpoint, Run, check_run_dir
from featcache.student import count_params

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
    steps: int = 0  # optimizer steps trained in all (training.steps exactly, when set)
    val_scores: dict[str, float] = field(default_factory=dict)  # the kept epoch's val_ columns
    warnings: list[str] = field(default_factory=list)  # tasks that collapsed (scoreboard.py)


class Trainer:
    def __init__(self, manifest: Manifest, progress: ProgressFn | None = None) -> None:
        self.dist, self.device = dist.setup(manifest.training.device)
        try:
            self._build(manifest, progress if progress is not None and self.dist.is_main else ignore)
        except BaseException:
            dist.teardown(self.dist)  # a user error on one rank must not leave the group hanging
            raise

    def _build(self, manifest: Manifest, progress: ProgressFn) -> None:
        self.manifest, self.progress = manifest, progress
        self.built = build_training(manifest, self.dist, self.device)
        self.model, self.data = self.built.model, self.built.data
        self.settings = StepSettings.of(manifest.training, self.device)
        self.run = Run(manifest.run_dir)
        self.start_epoch = 0
        self.board = Scoreboard.of(self.model.tasks, self.data.sources)  # the checkpoint score, per dataset
        # Where training stands: (epoch under way, its optimizer steps done). An interrupt saves it.
        self.position = (0, 0)
        self._last_saved = time.perf_counter()
        self.stop = Interrupts()  # Ctrl-C and SIGTERM stop at a step boundary (guards.py)
        self._train: DataLoader | None = None
        self._val: DataLoader | None = None
        self.precise_bn = PreciseBN.of(self.data, manifest.training, self.device)  # None when off
        self.tb = open_log(manifest.training.log, self.run.tensorboard_dir, self.dist.is_main,
                           self.model.student, self.data.val_set, self.device)

    # --- what one epoch runs on ------------------------------------------------------------------
    def train_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One step of the labelled training with its optimizer and schedule."""
        b = self.built
        return optimizer_step(b.ddp, batch, b.optimizer, b.scheduler, self.settings)

    def _train_batches(self, start_epoch: int, skip: int = 0) -> Iterator[dict[str, Any]]:
        """Training batches from one loader iterator over all epochs: workers prefetch across
        epoch ends."""
        d, tr = self.data, self.manifest.training
        make_resident(d.train_set, tr.resident_features, self.device, self.progress, self.dist.world_size)
        self._train = make_loader(d.train_set, tr.batch_size, d.workers, tr.prefetch_factor, self.device,
                                  batches=epoch_batches(d, tr.batch_size, start_epoch, skip),
                                  low_priority=d.low_priority_workers)
        return iter(self._train)

    def _validate(self) -> ValScores:
        if self._val is None:  # one loader for the whole run: its workers persist between epochs
            d, tr = self.data, self.manifest.training
            self._val = make_loader(d.val_set, tr.batch_size, min(d.workers, 1), tr.prefetch_factor,
                                    self.device, low_priority=d.low_priority_workers)
        if self.precise_bn is not None:  # validate (and save) the network as trained
            self.precise_bn(self.model.student)
        return validate(self.model.student, self.board.tally, self._val, self.device, self.dist)

    # --- checkpoints -----------------------------------------------------------------------------
    def checkpoint(self, epoch: int, steps_into_next: int = 0) -> Checkpoint:
        return snapshot(self.built, self.manifest, epoch, self.board.best, self.board.best_epoch,
                        self.dist.world_size, steps_into_next)

    def resume(self) -> None:
        checkpoint = resume_from(self.built, self.run, self.manifest)
        self.start_epoch = checkpoint.epoch + 1
        self.position = (self.start_epoch, checkpoint.steps_into_next)
        self.board.resume(checkpoint.best_val_dice, checkpoint.best_epoch, self.run.metrics_csv,
                          self.start_epoch)
        if self.dist.is_main:  # rows of epochs after the checkpoint (killed mid-way) are redone
            self.run.truncate_logs(self.start_epoch)

    # --- the loop --------------------------------------------------------------------------------
    def train(self) -> TrainResult:
        d = self.data
        done = self.start_epoch * d.steps_per_epoch + self.position[1]  # steps before this session
        if self.dist.is_main:
            self.run.write_manifest(self.manifest.model_dump(mode="json"))
        prepared = self.position != (0, 0)  # resumed: the checkpoint holds what prepare made
        with self.stop.installed():
            try:
                if not prepared:
                    prepare(self.manifest, self.built, self.run, self.settings, self.progress)
                    prepared = True
                self.progress(TrainingStarted(d.epochs, d.steps_per_epoch, count_params(self.model.student),
                                              d.workers, self.start_epoch, str(self.device),
                                              self.dist.world_size, d.total_steps, done))
                t0 = time.perf_counter()
                with self.stop.deferred():
                    gates = self._epochs()
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: last.pt at the step reached, for --resume
                if prepared and self.dist.is_main and not self.stop.forced:  # (a half-done pretraining
                    epoch, steps = self.position  # starts again instead)
                    self.run.save_checkpoint("last", self.checkpoint(epoch - 1, steps))
                raise
        seconds = time.perf_counter() - t0
        steps = d.total_steps - done
        return TrainResult(self.run.path, d.epochs, self.board.best, self.board.best_epoch,
                           count_params(self.model.student), seconds, steps / max(seconds, 1e-9), gates,
                           self.model.loss_weights(), self.dist.world_size, d.total_steps,
                           self.board.kept(), self.board.warnings())

    def _epochs(self) -> dict[str, dict[str, float]]:
        """The epochs from self.position on; returns the last epoch's mean gate weights."""
        d, gates = self.data, {}
        stats_layout = ([s.dataset.name for s in d.sources],
                        {stage: [t.teacher for t in members] for stage, members in self.model.slots.items()})
        self.model.train()
        batches = self._train_batches(*self.position)
        for epoch in range(self.start_epoch, d.epochs):
            if self.dist.active:  # dropout differs per rank, reproducibly per epoch
                torch.manual_seed(self.manifest.training.seed * 1000 + epoch * 7919 + self.dist.rank)
            stats, t_epoch = EpochStats(*stats_layout), time.perf_counter()
            for step in range(self.position[1], d.steps_in(epoch)):
                self.stop.check()
                batch = next(batches)
                out = self.train_step(batch)
                loss = check_loss(float(out["loss"].detach()), epoch * d.steps_per_epoch + step + 1)
                self.position = (epoch, step + 1)
                stats.add(out, batch["dataset"])
                self.progress(TrainingStep(epoch, step + 1, loss))
            terms, gates = stats.reduce(self.dist)
            dist.sync_buffers(self.model, self.dist)
            row = train_row(epoch, terms, self.built.scheduler.get_last_lr()[0],
                            time.perf_counter() - t_epoch, self.model.loss_weights())
            self._end_epoch(epoch, row, gates)
        return gates

    def _end_epoch(self, epoch: int, row: dict[str, Any], gates: dict[str, dict[str, float]]) -> None:
        """Validate, then (rank 0) log the epoch and write its checkpoints."""
        check_weights(self.model, (epoch + 1) * self.data.steps_per_epoch)
        scores = self._validate()
        self.model.student_validated(scores.per_sample)  # output distillation trusts its probes (trust.py)
        val_row, improved = self.board.record(epoch, scores)
        if self.dist.is_main:
            self.run.log_epoch(epoch, row, val_row, gates, fresh=self.start_epoch == 0)
            if self.tb is not None:
                self.tb.log_epoch(epoch, row, val_row, gates)
            # The resume point: after the first and the last epoch, and otherwise at most once a
            # minute: a run of 100 one-step epochs would write its ~100 MB state 100 times.
            now = time.perf_counter()
            if epoch in (0, self.data.epochs - 1) or now - self._last_saved >= LAST_CHECKPOINT_EVERY_S:
                self.run.save_checkpoint("last", self.checkpoint(epoch))
                self._last_saved = now
            if improved:
                self.run.save_checkpoint("best", self.checkpoint(epoch))
        self.position = (epoch + 1, 0)
        self.progress(EpochDone(epoch, scores.score, self.board.best, row, gates))

    def close(self) -> None:
        """Stop loader workers and leave the process group (if this trainer joined it)."""
        self._train = self._val = self.precise_bn = None
        if self.tb is not None:
            self.tb.close()
        dist.teardown(self.dist)


def prepare(manifest: Manifest, built: Training, run: Run, settings: StepSettings,
            progress: ProgressFn, writes: bool | None = None) -> None:
    """What runs before the first labelled step: feature pretraining (pretrain.py) when asked for,
    then the task-adapted teachers of output distillation (adapt.py). Every torchrun rank computes
    both; only the one that `writes` (by default rank 0) saves them into the run."""
    writes = dist.env_rank() == 0 if writes is None else writes
    if built.pretrain_sources:
        pretrain(manifest, built, run, settings, progress, writes)
    if built.model.output_probes is not None:
        adapt_teachers(manifest, built, run, settings, writes)


def train(manifest: Manifest, resume: bool = False, progress: ProgressFn | None = None,
          overwrite: bool = False) -> TrainResult:
    check_run_dir(manifest.run_dir, store_url(manifest, True))
    run, main = Run(manifest.run_dir), dist.env_rank() == 0
    with run.exclusive(hold=main):  # before --overwrite removes anything: it may be another's run
        if not resume:
            run.claim(overwrite, remove=main)
        trainer = Trainer(manifest, progress)
        try:
            if resume:
                trainer.resume()
            return trainer.train()
        finally:
            trainer.close()
