"""Shared steps of the study pipelines: extract what a manifest needs, then train and evaluate one
run ("cell") unless it already finished.

A cell is finished when its run directory holds both `study_train.json` (what training reported)
and `eval/summary.json` (what evaluation wrote); a re-run then reads them instead of retraining.
A run whose training stopped part-way resumes from its last checkpoint, or is trained again when
it left none (killed before its first resume point).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from featcache.errors import CheckpointError, ConfigError
from featcache.events import (
    EvaluationStarted,
    ExtractionDone,
    ExtractionStarted,
    ImagesEvaluated,
    ProgressFn,
    ignore,
)
from featcache.extract.settings import ExtractSettings
from featcache.manifest import Manifest, same_settings
from featcache.runs import Run


@dataclass
class ExtractionRecord:
    teacher: str
    dataset: str
    key: str
    status: str  # "cached", "extracted" or "resumed"
    seconds: float


def ensure_extracted(manifest: Manifest, store_url: str | None, progress: ProgressFn | None = None,
                     settings: ExtractSettings | None = None, *,
                     labels: list[str] | None = None) -> list[ExtractionRecord]:
    """Run every (teacher, dataset) of the manifest into the store; complete entries are cache hits.

    Only when distillation is enabled: a supervised run needs no teacher at all. `labels` names
    the manifest's datasets in records and progress (default: their loader names)."""
    from featcache.extract.jobs import manifest_jobs, run_job

    progress = progress or ignore
    if not manifest.distill.enabled:
        return []
    settings = settings or ExtractSettings()
    records = []
    titles = labels or [d.name for d in manifest.datasets]
    titles = [title for _ in manifest.teachers for title in titles]  # manifest_jobs is teacher-major
    for job, title in zip(manifest_jobs(manifest, store_url), titles, strict=True):
        label = f"{job.teacher} × {title}"
        progress(ExtractionStarted(label))
        result = run_job(job, settings, store_url=store_url, progress=progress)
        record = ExtractionRecord(job.teacher, title, result.key, result.status, result.seconds)
        progress(ExtractionDone(**asdict(record)))
        records.append(record)
    return records


@dataclass
class CellResult:
    """What one finished run reports: training figures and the test summary rows per dataset."""

    run_dir: Path
    params: int
    train_seconds: float
    epochs: int
    best_val_dice: float
    gates: dict[str, dict[str, float]]  # "dataset/stage" -> teacher -> weight
    loss_weights: dict[str, float]
    groups: dict[str, dict[str, Any]]  # dataset (or "all") -> summary row of eval/summary.json
    best_epoch: int = -1  # 0-based epoch of the checkpoint evaluated ("best" by the validation score)
    skipped: bool = False  # True when read back from a finished run
    extra: dict[str, Any] = field(default_factory=dict)
    # classification dataset -> its summary.json "classification" entry on the split
    classification: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: int | None = None  # optimizer steps trained (None: a run finished before it was recorded)
    warnings: list[str] = field(default_factory=list)  # tasks that collapsed in training

    def teacher_gate(self, teacher: str) -> float:
        """Mean gate weight of `teacher` over the datasets and student stages where it competes
        with another teacher (a stage it has to itself always weighs 1); NaN when there are none."""
        values = [tw[teacher] for tw in self.gates.values() if teacher in tw and len(tw) > 1]
        return sum(values) / len(values) if values else math.nan


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read ({exc}); delete the run directory to redo it") from None


def _finished(run: Run) -> bool:
    return run.study_train_file.is_file() and run.eval.summary_json.is_file()


def _train(manifest: Manifest, progress: ProgressFn) -> dict[str, Any]:
    from featcache.distill.trainer import train

    run = Run(manifest.run_dir)
    resume = _resumable(run)
    # A cell's run_dir is the study's own (check_same_manifest): what a killed run left without a
    # resume point (metrics.csv, best.pt) is trained again, not a reason to stop the study.
    result = train(manifest, resume=resume, overwrite=not resume, progress=progress)
    info = {"params": result.student_params, "seconds": result.seconds, "epochs": result.epochs,
            "best_val_dice": result.best_val_dice, "best_epoch": result.best_epoch, "gates": result.gates,
            "loss_weights": result.loss_weights, "resumed": resume, "steps": result.steps,
            "val_scores": result.val_scores, "warnings": result.warnings}
    run.study_train_file.write_text(json.dumps(info, indent=2) + "\n")
    return info


def _resumable(run: Run) -> bool:
    """Whether the run holds a resume point that loads (last.pt with its training state)."""
    try:
        run.load_resume_point()
    except CheckpointError:
        return False
    return True


def check_same_manifest(manifest: Manifest) -> None:
    """A run directory belongs to one manifest: reusing it with other settings would mix results."""
    path = Run(manifest.run_dir).manifest_file
    if path.is_file() and not same_settings(yaml.safe_load(path.read_text()), manifest):
        raise ConfigError(f"{manifest.run_dir} was trained with different settings (see {path}); "
                          "pick another output folder or delete that run to redo it")


def run_cell(manifest: Manifest, progress: ProgressFn | None = None, split: str = "test") -> CellResult:
    """Train (or resume) and evaluate the manifest's run on `split`; reuse a finished run as is."""
    from featcache.evaluate.run_eval import evaluate_run

    progress = progress or ignore
    run = Run(manifest.run_dir)
    run_dir = run.path
    check_same_manifest(manifest)
    skipped = _finished(run)
    if not skipped:
        info = (_read_json(run.study_train_file) if run.study_train_file.is_file()
                else _train(manifest, progress))
        progress(EvaluationStarted(str(run_dir)))
        evaluate_run(run_dir, split=split, which="best", overlays=False,
                     progress=lambda done, total: progress(ImagesEvaluated(done, total)))
    info = _read_json(run.study_train_file)
    summary = _read_json(run.eval.summary_json)
    # one row per dataset: a multi-class dataset's per-class rows are left to its "mean" row
    groups = {g["dataset"]: g for g in summary.get("groups", [])
              if g.get("split") == split and g.get("class", "mean") == "mean"}
    classes = {c["dataset"]: c for c in summary.get("classification", []) if c.get("split") == split}
    return CellResult(run_dir, int(info["params"]), float(info["seconds"]), int(info["epochs"]),
                      float(info["best_val_dice"]), info.get("gates", {}), info.get("loss_weights", {}),
                      groups, int(info.get("best_epoch", -1)), skipped, classification=classes,
                      steps=info.get("steps"), warnings=list(info.get("warnings", [])))
