"""Typed progress events: what long jobs (extraction, distillation, studies) report as they go.

The library emits these; only the CLI renders them (one renderer per event type, looked up by
type: tests/cli/test_events.py fails when an event has none). A callback takes one event:
`progress(event)`. Fields are plain values, so an event can be logged or forwarded as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """Base of every progress event."""


ProgressFn = Callable[[Event], None]


def ignore(event: Event) -> None:
    """The callback of a job nobody watches."""


# --- distillation --------------------------------------------------------------------------------
@dataclass(frozen=True)
class PretrainStarted(Event):
    steps: int
    images: int  # unlabelled training images


@dataclass(frozen=True)
class PretrainStep(Event):
    step: int  # 1-based
    steps: int
    loss: float


@dataclass(frozen=True)
class PretrainReused(Event):
    path: str  # the saved pretraining with the same recipe


@dataclass(frozen=True)
class FeaturesResident(Event):
    """Teacher targets being made resident in the training process (training.resident_features)."""

    done: int  # items decoded so far
    total: int  # items to decode (0: nothing fits, every teacher is read per step)
    mib: float  # memory they take
    where: str  # "RAM", "GPU cuda:0", ...
    streamed: tuple[str, ...] = ()  # teachers that did not fit: read from the store per step


@dataclass(frozen=True)
class TrainingStarted(Event):
    epochs: int
    steps_per_epoch: int
    params: int  # the student's, every head included
    workers: int  # loader workers per process
    start_epoch: int  # > 0 when resumed
    device: str
    world_size: int
    total_steps: int = 0  # the run's optimizer steps (0: epochs * steps_per_epoch)
    done_steps: int = 0  # of them, done before (a resumed run)

    @property
    def steps(self) -> int:
        return self.total_steps or self.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class TrainingStep(Event):
    epoch: int  # 0-based
    step: int  # 1-based within the epoch
    loss: float


def epoch_number(index: int) -> int:
    """The epoch as people count it: the first is epoch 1. Everything a person reads counts so
    (the console, metrics.csv, gates.csv, eval's summary.json, report.md, TensorBoard, a study's
    results.csv); indices in the code and in checkpoints count from 0."""
    return index + 1



@dataclass(frozen=True)
class EpochDone(Event):
    epoch: int  # 0-based
    val_score: float  # the validation score training selects on (mean over datasets)
    best: float
    terms: dict[str, Any] = field(default_factory=dict)  # metrics.csv's train row
    gates: dict[str, dict[str, float]] = field(default_factory=dict)  # "dataset/stage" -> weights


# --- extraction ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImagesExtracted(Event):
    done: int  # images (x views) committed or in flight, of `total`, as this process knows them
    total: int


@dataclass(frozen=True)
class ShardsCommitted(Event):
    done: int
    total: int


@dataclass(frozen=True)
class StatisticsRead(Event):
    """Shards committed by earlier or other runs, read back for the entry's statistics."""

    done: int
    total: int


# --- studies (pipelines/ablation.py, featcache study, pipelines/paper.py) -------------------------
@dataclass(frozen=True)
class ExtractionStarted(Event):
    label: str  # "teacher × dataset"; its extraction events follow


@dataclass(frozen=True)
class ExtractionDone(Event):
    teacher: str
    dataset: str
    key: str
    status: str  # cached, extracted, resumed, repaired
    seconds: float


@dataclass(frozen=True)
class RunsPlanned(Event):
    total: int


@dataclass(frozen=True)
class RunStarted(Event):
    label: str  # its training events follow
    index: int


@dataclass(frozen=True)
class EvaluationStarted(Event):
    run_dir: str


@dataclass(frozen=True)
class ImagesEvaluated(Event):
    done: int
    total: int


@dataclass(frozen=True)
class RunDone(Event):
    label: str
    index: int
    row: dict[str, Any]  # the run's first result row (test Dice, seconds)
    skipped: bool  # finished before: read back, not trained
