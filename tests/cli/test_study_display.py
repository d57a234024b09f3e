"""The study's progress: one bar across runs, a bar per run's pretraining and training, a line per run."""

import io

from rich.console import Console

from featcache.cli.study_display import StudyDisplay
from featcache.events import (
    EpochDone,
    FeaturesResident,
    PretrainStarted,
    PretrainStep,
    RunDone,
    RunsPlanned,
    RunStarted,
    TrainingStarted,
    TrainingStep,
)


def test_one_bar_counts_the_runs_and_each_run_says_whether_it_was_reused():
    out = io.StringIO()
    with StudyDisplay(Console(file=out, width=120)) as display:
        display(RunsPlanned(2))
        for k in range(2):
            display(RunStarted(f"arm {k + 1} · full labels · seed 0", k))
            display(PretrainStarted(2, 5))
            display(PretrainStep(1, 2, 0.5))
            display(TrainingStarted(2, 1, 1000, 0, 0, "cpu", 1))
            display(TrainingStep(0, 1, 0.3))
            display(EpochDone(0, 0.5, 0.5))
            display(RunDone(f"arm {k + 1}", k, {"dice_mean": 0.5, "train_seconds": 3.0}, k == 1))
    text = out.getvalue()
    assert "arm 1: test Dice 0.5000, 3 s" in text
    assert "arm 2: test Dice 0.5000, reused (finished before)" in text
    assert "runs" in text and "2/2" in text


def test_training_lines_keep_their_name_after_features_are_made_resident():
    """Targets are made resident after training's bar starts; the steps after are training's."""
    out = io.StringIO()
    with StudyDisplay(Console(file=out, width=120)) as display:
        display(RunStarted("arm 1 · seed 0", 0))
        display(TrainingStarted(3, 1, 1000, 0, 0, "cpu", 1))
        display(FeaturesResident(0, 28, 1.0, "RAM"))
        display(FeaturesResident(28, 28, 1.0, "RAM"))
        for epoch in range(3):
            display(TrainingStep(epoch, 1, 0.3))
            display(EpochDone(epoch, 0.5, 0.5))
    lines = [line for line in out.getvalue().splitlines() if "val score" in line]
    assert lines and all("training: " in line and "resident" not in line for line in lines), lines
