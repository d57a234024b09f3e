"""Progress off a terminal: under nohup or a scheduler, live bars print nothing until they end, so
long jobs log plain lines instead: one per tenth of the work, one per `every_s` seconds at most
apart, one per milestone (an epoch's end), one at the end."""

from __future__ import annotations

from featcache.cli import common
from featcache.cli.common import LineProgress


class _Lines:
    def __init__(self):
        self.lines: list[str] = []

    def print(self, text, **_):
        self.lines.append(text)


def test_extraction_logs_a_line_per_tenth_and_at_the_end():
    out = _Lines()
    with LineProgress(out) as bar:
        task = bar.add_task("litemedsam × busi", total=780, info="")
        for done in [*range(8, 780, 8), 780]:  # batches of 8 images
            bar.update(task, completed=done, info="2.1 img/s")
    assert len(out.lines) == 10, out.lines
    assert out.lines[0].startswith("litemedsam × busi: 80/780 (10%) 2.1 img/s [0:00:00 elapsed, about ")
    assert out.lines[-1].startswith("litemedsam × busi: 780/780 (100%)")


def test_a_slow_job_says_something_every_interval(monkeypatch):
    clock = iter(range(0, 10_000, 30))  # every update 30 s after the last
    monkeypatch.setattr(common.time, "monotonic", lambda: next(clock))
    out = _Lines()
    bar = LineProgress(out, every_s=60)
    task = bar.add_task("sam × busi", total=10_000)
    for _ in range(6):
        bar.update(task, advance=1)
    assert len(out.lines) == 3  # 6 updates 30 s apart, nowhere near a tenth: a line a minute


def test_milestones_and_unknown_totals():
    out = _Lines()
    with LineProgress(out) as bar:
        task = bar.add_task("training", total=1000)
        bar.update(task, advance=1, info="epoch 1 loss 0.5")
        bar.update(task, milestone=True, info="epoch 1 val Dice 0.7")
        count = bar.add_task("evaluating test", total=None)
        bar.update(count, completed=5)
    assert out.lines[0] == "training: 1/1000 (0%) epoch 1 val Dice 0.7" + out.lines[0].split("0.7", 1)[1]
    assert out.lines[-1].startswith("evaluating test: 5 [")  # said at the end, without a total


def test_progress_bar_is_lines_off_a_terminal(monkeypatch):
    monkeypatch.setattr(type(common.console), "is_terminal", property(lambda self: False))
    with common.progress_bar() as bar:
        assert isinstance(bar, LineProgress)
