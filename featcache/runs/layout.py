"""Where a run directory keeps its files, the counterpart of the store's `EntryLayout`: the one
module that spells their names.

  RUN/manifest.yaml               the resolved manifest the run was trained with
  RUN/checkpoints/last.pt         the resume point (after the last epoch, else at most once a minute)
  RUN/checkpoints/best.pt         the epoch with the best validation Dice
  RUN/checkpoints/pretrained.pt   feature pretraining's result, with the recipe it came from
  RUN/checkpoints/probes.pt       output distillation's teacher probes, with their recipe
  RUN/probes.csv                  each probe's validation score, and which ones teach
  RUN/metrics.csv, RUN/gates.csv  per-epoch training curves (the report and a resume read them)
  RUN/tensorboard/                optional per-epoch TensorBoard events
  RUN/eval/                       `featcache eval` of the test split: per_image.csv, summary.json,
                                  overlays/DATASET/ID.png, per_image_classes.csv (classification)
  RUN/eval-SPLIT/                 `featcache eval --split SPLIT` of any other split (val, train, all)
  RUN/eval-orientation/           a study's scores on other orientations (the same files)
  RUN/report/                     `featcache report`: report.md, report.html and their pictures
  RUN/export/                     `featcache export`: the exported students (and their recipes)
  RUN/study_train.json            what training reported, for a study cell
  RUN/training.lock               held by the one training that writes the directory (host, pid)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from featcache.errors import CheckpointError, ConfigError

WHICH = ("best", "last")


@dataclass(frozen=True)
class ScoredFolder:
    """A folder of scores in eval's format: RUN/eval, RUN/eval-orientation, or the output folder
    of `featcache predict --masks` (the format itself is evaluate/outputs.py's)."""

    path: Path

    @property
    def per_image_csv(self) -> Path:
        return self.path / "per_image.csv"

    @property
    def summary_json(self) -> Path:
        return self.path / "summary.json"

    @property
    def per_image_classes_csv(self) -> Path:
        """Per-image class probabilities of the classification datasets."""
        return self.path / "per_image_classes.csv"

    @property
    def overlays_dir(self) -> Path:
        return self.path / "overlays"


class RunLayout:
    """A run directory's file paths; `featcache.runs.Run` adds reading and writing them."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @property
    def manifest_file(self) -> Path:
        return self.path / "manifest.yaml"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def gates_csv(self) -> Path:
        return self.path / "gates.csv"

    @property
    def probe_scores_csv(self) -> Path:
        return self.path / "probes.csv"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    @property
    def eval(self) -> ScoredFolder:
        """What `featcache eval` writes for the test split (what the report reads by default)."""
        return self.eval_of("test")

    def eval_of(self, split: str) -> ScoredFolder:
        """What `featcache eval --split SPLIT` writes: RUN/eval for the test split, RUN/eval-SPLIT
        for any other, so scoring the validation split never replaces the test scores."""
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", split):
            raise ConfigError(f"split {split!r} is not a split name (letters, digits, _ and -)",
                              fields=("split",))
        return ScoredFolder(self.path / ("eval" if split == "test" else f"eval-{split}"))

    @property
    def orientation_eval(self) -> ScoredFolder:
        """A study's scores on the orientations the run was not trained on."""
        return ScoredFolder(self.path / "eval-orientation")

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    @property
    def report_page(self) -> Path:
        return self.report_dir / "report.md"

    @property
    def report_html(self) -> Path:
        """The same page with its pictures embedded."""
        return self.report_dir / "report.html"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    def export_file(self, which: str, image_size: int, suffix: str) -> Path:
        """Where `featcache export` writes a student (suffix .onnx or .pt) when no --out is given."""
        return self.export_dir / f"student_{which}_{image_size}{suffix}"

    @property
    def lock_file(self) -> Path:
        """Held while a training writes the directory, so that two never mix their files."""
        return self.path / "training.lock"

    @property
    def study_train_file(self) -> Path:
        return self.path / "study_train.json"

    @property
    def pretrained_file(self) -> Path:
        return self.path / "checkpoints" / "pretrained.pt"

    @property
    def probes_file(self) -> Path:
        """Output distillation's task-adapted teacher probes, with the recipe they were fitted by."""
        return self.path / "checkpoints" / "probes.pt"

    def checkpoint_file(self, which: str = "best") -> Path:
        """checkpoints/best.pt or last.pt."""
        if which not in WHICH:
            raise CheckpointError(f"unknown checkpoint {which!r}; use best or last")
        return self.path / "checkpoints" / f"{which}.pt"

    def scored_folders(self) -> list[str]:
        """The names of the run's folders holding eval's scores (eval, eval-val, a study's eval-NAME)."""
        return sorted(p.name for p in self.path.glob("eval*") if ScoredFolder(p).summary_json.is_file())

    def eval_overlay(self, dataset: str, sample_id: str, split: str = "test") -> Path:
        """Where eval writes (and the report looks for) one sample's overlay, per split."""
        return self.eval_of(split).overlays_dir / dataset / f"{sample_id}.png"

    def training_files(self) -> list[Path]:
        """The files whose presence means the directory holds a run (started or finished)."""
        return [self.checkpoint_file("last"), self.checkpoint_file("best"), self.metrics_csv,
                self.gates_csv]
