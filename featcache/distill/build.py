"""Plain functions that build what the training loop runs on: the data (sources, items, datasets,
the balanced sampler and the run's length), the model (student, projectors, gates) and the
optimizer with its schedule. Each takes the manifest and what earlier ones built; nothing here
trains. trainer.py calls them in order; feature pretraining (pretrain.py) reuses them.
"""

from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from featcache.data.photometric import Photometric
from featcache.data.registry import build_dataset
from featcache.distill.data import DistillItems, Source, build_targets, resolve_entry, training_items
from featcache.distill.distributed import BalancedShardSampler, DistContext
from featcache.distill.loaders import EpochBatches, low_priority_workers, resolve_workers
from featcache.distill.memory import check_fits, unlabelled_per_batch
from featcache.distill.model import DistillModel
from featcache.distill.schedule import adamw, warmup_cosine
from featcache.distill.targets import Target
from featcache.distill.task_batches import per_dataset_order
from featcache.distill.tasks import Classification, Segmentation, Task, Tasks
from featcache.errors import ConfigError, DatasetError
from featcache.manifest import DatasetSpec, Manifest
from featcache.store import FeatureStore, default_store_url
from featcache.student import Student

Item = tuple[int, int, int]  # (source index, sample index, view)


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


def labelled_sources(manifest: Manifest, with_teachers: bool) -> list[Source]:
    """build_sources for the labelled datasets, refusing one without masks."""
    sources = build_sources(manifest, with_teachers)
    for spec, source in zip(manifest.datasets, sources, strict=True):
        if not source.dataset.labelled:
            raise ConfigError(f"dataset {spec.name} has images but no masks: list it under "
                              "pretrain.datasets (feature pretraining), not datasets")
    return sources


def items_dataset(manifest: Manifest, sources: list[Source], items: list[Item], targets: list[Target],
                  teachers: bool, augment: bool, labelled: int | None = None) -> DistillItems:
    """Training or validation items as a torch Dataset (photometric augmentation if `augment`;
    items after the first `labelled` are unlabelled, see DistillItems)."""
    aug = manifest.training.augment
    photometric = Photometric(**aug.model_dump(exclude={"enabled"})) if augment and aug.enabled else None
    return DistillItems(sources, items, targets, manifest.student.image_size, manifest.student.in_channels,
                        manifest.distill.normalisation, teachers, photometric, manifest.training.seed,
                        labelled)


@dataclass
class TrainingData:
    """The labelled data of one run: items, datasets, the dataset-balanced sampler, and the run's
    length: total_steps optimizer steps in epochs of steps_per_epoch (the last one shorter when
    training.steps is not a whole number of epochs: steps are honoured exactly)."""

    sources: list[Source]
    train_items: list[Item]  # the labelled ones
    val_items: list[Item]
    train_set: DistillItems  # train_items, then unlabelled_items
    val_set: DistillItems  # this rank's shard; scored by the student alone, never augmented
    sampler: BalancedShardSampler
    drop_last: bool
    steps_per_epoch: int
    epochs: int
    workers: int  # loader processes per rank
    low_priority_workers: bool
    # Semi-supervised training (distill.unlabelled_batch): the train split's images left out of the
    # labelled set, and how many of them join each batch.
    unlabelled_items: list[Item] = dataclasses.field(default_factory=list)
    unlabelled_batch: int = 0
    total_steps: int = 0  # 0: epochs * steps_per_epoch
    per_dataset: bool = False  # training.batches: per_dataset (task_batches.py)
    # Training images batch norm's statistics are recomputed on before each validation
    # (training.precise_bn, precise_bn.py): images only, no augmentation; None when off.
    bn_set: DistillItems | None = None

    def __post_init__(self) -> None:
        self.total_steps = self.total_steps or self.epochs * self.steps_per_epoch

    def steps_in(self, epoch: int) -> int:
        """The optimizer steps of `epoch` (0-based)."""
        return max(0, min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch))


def _balance_weights(items: list[Item]) -> torch.Tensor:
    """Each dataset gets the same share of every epoch, whatever its size."""
    counts: dict[int, int] = {}
    for s, _, _ in items:
        counts[s] = counts.get(s, 0) + 1
    return torch.tensor([1.0 / counts[s] for s, _, _ in items], dtype=torch.double)


def build_data(manifest: Manifest, sources: list[Source], targets: list[Target], with_teachers: bool,
               ctx: DistContext, device: torch.device) -> TrainingData:
    tr = manifest.training
    train_items = [it for s in sources for it in training_items(
        s, manifest.datasets[s.index].train_split, tr.views, tr.train_fraction, tr.seed)]
    val_items = [it for s in sources for it in training_items(
        s, manifest.datasets[s.index].val_split, 1, 1.0, tr.seed)]
    extra = unlabelled_per_batch(manifest)  # the rule the memory preflight counts by
    unlabelled = [it for s in sources for it in training_items(
        s, manifest.datasets[s.index].train_split, tr.views, tr.train_fraction, tr.seed, left_out=True)
        ] if extra else []
    if len(train_items) < 2 or not val_items:
        raise DatasetError(f"too few samples: {len(train_items)} training items and "
                           f"{len(val_items)} validation items; use more data or splits")
    sampler = BalancedShardSampler(_balance_weights(train_items), len(train_items), tr.seed,
                                   ctx.rank, ctx.world_size)
    drop_last = sampler.per_rank > tr.batch_size
    steps_per_epoch = sampler.per_rank // tr.batch_size if drop_last else 1
    # training.steps fixes the run's length in optimizer steps whatever the data size; the last
    # epoch stops when they are done.
    epochs = math.ceil(tr.steps / steps_per_epoch) if tr.steps else tr.epochs
    return TrainingData(
        sources, train_items, val_items,
        items_dataset(manifest, sources, train_items + unlabelled, targets, with_teachers, augment=True,
                      labelled=len(train_items)),
        items_dataset(manifest, sources, val_items[ctx.rank::ctx.world_size], targets, False, augment=False),
        sampler, drop_last, steps_per_epoch, epochs, resolve_workers(tr.num_workers, ctx.world_size),
        low_priority_workers(tr.worker_priority, device), unlabelled, extra if unlabelled else 0,
        tr.steps or 0, per_dataset_batches(tr.batches, sources),
        _bn_items(manifest, sources, train_items + unlabelled))


def _bn_items(manifest: Manifest, sources: list[Source], items: list[Item]) -> DistillItems | None:
    """training.precise_bn images of the training items (all when fewer), a draw seeded by the
    run's seed: the same on every rank and after a resume."""
    count = manifest.training.precise_bn
    if not count:
        return None
    if count < len(items):
        keep = torch.randperm(len(items), generator=torch.Generator().manual_seed(manifest.training.seed))
        items = [items[int(i)] for i in keep[:count].sort().values]
    return items_dataset(manifest, sources, items, [], False, augment=False)


def per_dataset_batches(setting: str, sources: list[Source]) -> bool:
    """training.batches: "auto" is per-dataset batches when the datasets have different tasks,
    where one task's gradient can dwarf the other's in a mixed batch (task_batches.py)."""
    return setting == "per_dataset" or (setting == "auto" and len({s.dataset.task for s in sources}) > 1)


def epoch_batches(data: TrainingData, batch_size: int, start_epoch: int, skip: int = 0) -> EpochBatches:
    """The indices of epochs start_epoch.. in batches, the first `skip` batches left out. Each
    epoch's draw is seeded by the epoch, so a resumed run sees the same batches; indices carry
    the epoch (epoch * n + item, see DistillItems), which seeds the item's augmentation.
    Semi-supervised runs add data.unlabelled_batch unlabelled items to each batch, drawn per
    (seed, epoch, batch, rank): the labelled draw is the same as without them."""
    n, labelled = len(data.train_set), len(data.train_items)
    dataset_of = [s for s, _, _ in data.train_items]

    def draw(epoch: int) -> list[int]:
        picks = data.sampler.draw(epoch)
        if data.per_dataset:  # each batch one dataset's (task_batches.py)
            picks = per_dataset_order(picks, dataset_of, batch_size, data.steps_per_epoch, data.sampler.seed,
                                      epoch)
        return [epoch * n + i for i in picks]

    def unlabelled(epoch: int, batch: int) -> list[int]:
        count, u = data.unlabelled_batch, len(data.unlabelled_items)
        gen = torch.Generator().manual_seed(((data.sampler.seed * 1000 + epoch) * 1000 + batch) * 64
                                            + data.sampler.rank)
        picks = (torch.randperm(u, generator=gen)[:count] if count <= u
                 else torch.randint(u, (count,), generator=gen))
        return [epoch * n + labelled + int(i) for i in picks]

    return EpochBatches(draw, batch_size, data.drop_last, start_epoch, data.epochs, data.steps_per_epoch,
                        skip, unlabelled if data.unlabelled_batch else None)


def build_tasks(manifest: Manifest, sources: list[Source]) -> Tasks:
    """Each dataset's task, from what the dataset declares (`task`, `classes`)."""
    tasks: list[Task] = []
    for spec, source in zip(manifest.datasets, sources, strict=True):
        classes = len(source.dataset.classes)
        if source.dataset.task == "classification":
            tasks.append(Classification(spec.name, classes))
        else:
            tasks.append(Segmentation(classes))
    heads = [t.head for t in tasks if isinstance(t, Classification)]
    twice = sorted({h for h in heads if heads.count(h) > 1})
    if twice:
        raise ConfigError(f"datasets: two classification datasets are both named {twice[0]!r}; "
                          "one student cannot give them one classifier each")
    masks = sorted({t.classes for t in tasks if isinstance(t, Segmentation)})
    if len(masks) > 1:
        raise ConfigError(f"datasets: the segmentation datasets have {' and '.join(map(str, masks))} "
                          "classes; one mask decoder needs the same labels in each (set labels: in options)")
    return Tasks(tasks)


def build_student(manifest: Manifest, tasks: Tasks) -> Student:
    """The student the manifest asks for with the heads the tasks need, its image size checked
    against the encoder's stride."""
    masks = [t.classes for t in tasks.by_dataset if isinstance(t, Segmentation)]
    heads = {t.head: t.classes for t in tasks.by_dataset if isinstance(t, Classification)}
    config = manifest.student.model_copy(update={"mask_classes": masks[0] if masks else 1,
                                                 "classifiers": heads})
    student = Student(config)
    size = manifest.student.image_size
    if size % student.stride:
        nearest = max(1, round(size / student.stride)) * student.stride
        raise ConfigError(f"student.image_size {size} must be a multiple of {student.stride}, "
                          f"the stride of encoder {manifest.student.encoder}; e.g. {nearest}")
    return student


def build_model(manifest: Manifest, student: Student, targets: list[Target], num_datasets: int,
                ctx: DistContext, device: torch.device,
                tasks: Tasks | None = None) -> tuple[DistillModel, torch.nn.Module]:
    """The model (student + projectors, gates, return decoder) on `device`, and what the loop
    calls: the model itself, or its DistributedDataParallel wrapper under torchrun."""
    model = DistillModel(student, targets, manifest.distill, num_datasets, tasks).to(device)
    if not ctx.active:
        return model, model
    # With several task kinds a step can hold one task alone (per-dataset batches: every step),
    # leaving the other's head (the decoder, or a classifier) without a gradient.
    several = len(model.tasks.terms) > 1
    return model, DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None,
                                          find_unused_parameters=several)


def param_groups(model: DistillModel, lr: float) -> list[dict[str, Any]]:
    """The small auxiliary heads (teacher-relevance probes, teacher gates, loss-gate
    log-variances) get a 10x learning rate and no weight decay: they must track the student
    within a short run, and decay would pull every loss weight to 1 regardless of its loss."""
    fast, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            is_head = name == "log_vars" or name.startswith(("probes.", "gates."))
            (fast if is_head else rest).append(p)
    groups: list[dict[str, Any]] = [{"params": rest}]
    if fast:
        groups.append({"params": fast, "weight_decay": 0.0, "lr": 10 * lr})
    return groups


def build_optimizer(params: Any, lr: float, weight_decay: float, total_steps: int, warmup_steps: int,
                    device: torch.device) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW and its warm-up + cosine schedule over total_steps optimizer steps."""
    optimizer = adamw(params, lr, weight_decay, device)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total_steps, warmup_steps))


def store_url(manifest: Manifest, with_teachers: bool) -> str | None:
    """The store a run reads (recorded in its checkpoints); None for the supervised baseline."""
    return (manifest.store or default_store_url()) if with_teachers else None


@dataclass
class Training:
    """Everything a labelled training run steps over, built in the order that fixes the initial
    weights (seed, student, then projectors and gates)."""

    with_teachers: bool
    pretrain_sources: list[Source]  # feature pretraining's unlabelled datasets ([] when off)
    model: DistillModel
    ddp: torch.nn.Module  # what the loop calls: the model, or its DDP wrapper
    data: TrainingData
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR


def build_training(manifest: Manifest, ctx: DistContext, device: torch.device) -> Training:
    tr = manifest.training
    seed_everything(tr.seed)  # identical initial weights on every rank
    with_teachers = manifest.distill.enabled and bool(manifest.teachers)
    sources = labelled_sources(manifest, with_teachers)
    tasks = build_tasks(manifest, sources)
    student = build_student(manifest, tasks)
    check_fits(manifest, student, sources, device)  # before any loader worker allocates a batch
    if manifest.pretrain.steps and ctx.active:
        raise ConfigError("feature pretraining runs in one process: run it without torchrun first "
                          "(its checkpoints/pretrained.pt is then reused), or set pretrain.steps: 0")
    pretrain_sources = (build_sources(manifest, True, manifest.pretrain.datasets)
                        if with_teachers and manifest.pretrain.steps else [])
    targets = build_targets(manifest, sources + pretrain_sources, student.stages) if with_teachers else []
    model, ddp = build_model(manifest, student, targets, len(sources), ctx, device, tasks)
    data = build_data(manifest, sources, targets, with_teachers, ctx, device)
    steps = data.total_steps
    model.output_steps = steps
    optimizer, scheduler = build_optimizer(param_groups(model, tr.lr), tr.lr, tr.weight_decay, steps,
                                           tr.warmup_epochs * data.steps_per_epoch, device)
    return Training(with_teachers, pretrain_sources, model, ddp, data, optimizer, scheduler)
