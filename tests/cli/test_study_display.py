"""The study's progress: one bar across runs, a bar per run's pretraining and training, a line per run."""

import io

from rich.console import Console

from featcache.cli.study_display import StudyDisplay


def test_one_bar_counts_the_runs_and_each_run_says_whether_it_was_reused():
    out = io.StringIO()
    with StudyDisplay(Console(file=out, width=120)) as display:
        display("cells_start", {"total": 2})
        for k in range(2):
            display("cell_start", {"label": f"arm {k + 1} · full labels · seed 0", "index": k})
            display("train", {"event": "pretrain_start", "steps": 2, "images": 5})
            display("train", {"event": "pretrain_step", "step": 1, "steps": 2, "loss": 0.5})
            display("train", {"event": "start", "epochs": 2, "steps": 1, "start_epoch": 0})
            display("train", {"event": "step", "epoch": 0, "loss": 0.3})
            display("train", {"event": "epoch", "epoch": 0, "val_dice": 0.5})
            display("cell_done", {"label": f"arm {k + 1}", "index": k, "skipped": k == 1,
                                  "row": {"dice_mean": 0.5, "train_seconds": 3.0}})
    text = out.getvalue()
    assert "arm 1: test Dice 0.5000, 3 s" in text
    assert "arm 2: test Dice 0.5000, reused (finished before)" in text
    assert "runs" in text and "2/2" in text
