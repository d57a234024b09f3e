"""Progress events rendered: one method per event type, found by the event's type.

`Display.__call__` looks an event's class up in `renders`; an event type without a renderer is a
bug that tests/cli/test_events.py catches (every Event subclass must be rendered somewhere)."""

from __future__ import annotations

from typing import Any, ClassVar

from featcache.cli.app import console
from featcache.events import (
    EpochDone,
    Event,
    FeaturesResident,
    PretrainReused,
    PretrainStarted,
    PretrainStep,
    TrainingStarted,
    TrainingStep,
    epoch_number,
)


class Display:
    """A progress callback that renders each event with the method registered for its type."""

    renders: ClassVar[dict[type[Event], str]] = {}

    def __call__(self, event: Event) -> None:
        name = self.renders.get(type(event))
        if name is None:
            raise TypeError(f"{type(self).__name__} cannot render {type(event).__name__}")
        getattr(self, name)(event)


class TrainingDisplay(Display):
    """`featcache distill`'s bars: feature pretraining, then training with the validation score."""

    renders: ClassVar[dict[type[Event], str]] = {
        PretrainStarted: "pretrain_started", PretrainStep: "pretrain_step", PretrainReused: "pretrain_reused",
        TrainingStarted: "started", TrainingStep: "step", EpochDone: "epoch_done",
        FeaturesResident: "resident"}

    def __init__(self, bar: Any) -> None:
        self.bar, self.tasks = bar, {}

    def pretrain_started(self, e: PretrainStarted) -> None:
        self.tasks["pretrain"] = self.bar.add_task("feature pretraining", total=e.steps,
                                                   info=f"{e.images} unlabelled images")

    def pretrain_step(self, e: PretrainStep) -> None:
        self.bar.update(self.tasks["pretrain"], advance=1, info=f"loss {e.loss:.3f}")

    def pretrain_reused(self, e: PretrainReused) -> None:
        console.print(f"feature pretraining: reusing {e.path} (same recipe)")

    def resident(self, e: FeaturesResident) -> None:
        if e.done == 0:
            if e.streamed:
                console.print(f"teacher(s) {', '.join(e.streamed)}: their features do not fit "
                              "training.resident_features; read from the store every step")
            if e.total:
                self.tasks["resident"] = self.bar.add_task("resident features", total=e.total,
                                                           info=f"{e.mib:,.0f} MiB in {e.where}")
        else:
            self.bar.update(self.tasks["resident"], completed=e.done)

    def started(self, e: TrainingStarted) -> None:
        console.print(f"student: {e.params / 1e6:.2f}M parameters, device {e.device}, "
                      f"{e.steps_per_epoch} steps/epoch, {e.world_size} process(es), "
                      f"{e.workers} loader worker(s) each")
        self.tasks["train"] = self.bar.add_task("training", total=e.steps, completed=e.done_steps, info="")

    def step(self, e: TrainingStep) -> None:
        self.bar.update(self.tasks["train"], advance=1,
                        info=f"epoch {epoch_number(e.epoch)} loss {e.loss:.3f}")

    def epoch_done(self, e: EpochDone) -> None:
        self.bar.update(self.tasks["train"], milestone=True,  # a log line per epoch off a terminal
                        info=f"epoch {epoch_number(e.epoch)} val score {e.val_score:.3f} (best {e.best:.3f})")
