"""The study's progress: one bar across runs, a bar per run's pretraining and training, a line per run."""

import io

from rich.console import Console

from featcache.cli.study_display import StudyDisplay
from featcache.events import (
    EpochDone,
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
