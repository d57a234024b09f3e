"""What distillation matches: (teacher, level, student stage) taps, and the grid each one's
loss is computed on. The loader (data.py) resamples every teacher level straight onto its tap's
loss grid; the model (model.py) builds a projector per tap."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    """A teacher level, as the loader reads it and (with a stage) as distillation matches it."""

    teacher: str
    level: str
    channels: int
    grid: tuple[int, int]  # the teacher's
    stage: str = ""  # the student stage it is matched from; "" when no student reads it (the API)
    # The grid the loss is computed on, when known before the student runs (see `loss_grid`):
    # the loader then resamples the teacher straight onto it. None: the teacher's grid.
    loss_grid: tuple[int, int] | None = None

    @property
    def key(self) -> str:
        return f"{self.teacher}/{self.level}@{self.stage}"


def loss_grid(teacher_grid: tuple[int, int], image_size: int, stride: int,
              feature_grid: str) -> tuple[int, int]:
    """Where `_project` meets a teacher matched from a student stage of this stride: the stage's
    grid if it is coarser than the teacher's and feature_grid is "coarser", else the teacher's.
    The stage grid is image_size / stride; an image size it does not divide leaves the teacher's
    grid here (the model then pools the batch itself, see _to_grid)."""
    if feature_grid != "coarser" or image_size % stride:
        return teacher_grid
    stage = (image_size // stride,) * 2
    return stage if stage[0] * stage[1] < teacher_grid[0] * teacher_grid[1] else teacher_grid


def module_key(key: str) -> str:
    """A target key as an nn.ModuleDict key (which cannot hold '.' or '/')."""
    return key.replace("/", "__").replace(".", "_")
