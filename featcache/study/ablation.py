"""The ablation study: which part of the method earns its keep on the embedded demo data.

Configurations (each adds one part to the previous):
  1 student alone, random init (distill.enabled=false, student.encoder_weights=null)
  2 student alone, ImageNet-pretrained encoder (the fair baseline: same steps, views, augmentation)
  3 + distillation from the real teacher (its taps; uniform weights, fixed loss weights, no return decoder)
  4 + adaptive gates (the uninformative teacher present: teacher gate + bounded loss gate)
  5 + return decoder (the full method)
  6 + feature pretraining on unlabelled slices (every teacher, the labelled set's training slices
      and the coronal + sagittal pool's training slices; masks never read)
  7 (opt-in) 5 with the reconstruction loss kept off the student's features, compared with 5
Training regimes: all labelled training slices ("full") and a share of them ("low",
training.train_fraction). Every run is scored on two test sets: the labelled set's axial test
slices, and the coronal + sagittal test slices of the pool (orientation transfer: the student
never saw a labelled slice of those planes). All runs of one seed share its split; every run is
`steps` optimizer steps long.
"""

from __future__ import annotations

import copy
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featcache.distill.run import Run
from featcache.errors import ConfigError
from featcache.extract.settings import ExtractSettings
from featcache.manifest import DatasetSpec, Manifest, manifest_from_dict
from featcache.study.runner import CellResult, Progress, ensure_extracted, run_cell


@dataclass(frozen=True)
class AblationConfig:
    number: int
    name: str
    teachers: tuple[str, ...]  # roles: "real", "uninformative"
    distill: dict[str, Any]
    student: dict[str, Any] = field(default_factory=dict)
    pretrain: bool = False
    parent: int | None = None  # the configuration it changes one thing of (default: number - 1)

    @property
    def compared_to(self) -> int:
        return self.number - 1 if self.parent is None else self.parent


_FIXED = {"teacher_gate": "uniform", "loss_gate": "fixed", "return_decoder": False}
_GATED = {"teacher_gate": "adaptive", "loss_gate": "uncertainty", "return_decoder": False}
_FULL = {"teacher_gate": "adaptive", "loss_gate": "uncertainty", "return_decoder": True}
CONFIGS: tuple[AblationConfig, ...] = (
    AblationConfig(1, "student alone (random init)", (), {"enabled": False}, {"encoder_weights": None}),
    AblationConfig(2, "student alone (ImageNet-pretrained)", (), {"enabled": False}),
    AblationConfig(3, "+ distillation (real teacher)", ("real",), dict(_FIXED)),
    AblationConfig(4, "+ adaptive gates (uninformative teacher present)", ("real", "uninformative"),
                   dict(_GATED)),
    AblationConfig(5, "+ return decoder (full method)", ("real", "uninformative"), dict(_FULL)),
    AblationConfig(6, "+ feature pretraining on unlabelled slices", ("real", "uninformative"),
                   dict(_FULL), pretrain=True),
    # Not in the default run: whether the reconstruction loss should move the student's features.
    AblationConfig(7, "5, reconstruction kept off the student's features", ("real", "uninformative"),
                   {**_FULL, "recon_to_student": False}, parent=5),
)
DEFAULT_CONFIGS = (1, 2, 3, 4, 5, 6)
BY_NUMBER = {c.number: c for c in CONFIGS}
REGIMES = ("full", "low")
TEST_SETS = ("axial", "orientation")

# The demo's two teachers, as in manifests/demo.yaml.
REAL_TEACHER = {"name": "litemedsam", "levels": {"stage2": "enc3", "embedding": ["enc4", "dec3"]}}
UNINFORMATIVE_TEACHER = {"name": "timm", "arch": "vit_tiny_patch16_224",
                         "options": {"random_init": True}, "levels": {"block11": "dec3"}}


@dataclass
class AblationSettings:
    """Everything an ablation run depends on. Defaults: the 2-core sizing (see pipelines/ablation.py)."""

    out: Path = Path("runs/ablation")
    store: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    configs: list[int] = field(default_factory=lambda: list(DEFAULT_CONFIGS))
    regimes: list[str] = field(default_factory=lambda: list(REGIMES))
    steps: int = 40  # optimizer steps of every labelled run
    pretrain_steps: int = 100
    num_slices: int = 40
    low_data_fraction: float = 0.1
    image_size: int = 128
    batch_size: int = 4
    lr: float = 0.002
    dataset: dict[str, Any] = field(default_factory=lambda: {"name": "demo", "options": {}})
    # Unlabelled pool for pretraining (its train split) and the orientation test set (its test split).
    pool: dict[str, Any] = field(default_factory=lambda: {
        "name": "demo", "options": {"num_slices": 40, "planes": ["coronal", "sagittal"]}})
    teachers: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "real": copy.deepcopy(REAL_TEACHER), "uninformative": copy.deepcopy(UNINFORMATIVE_TEACHER)})
    student: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"

    def validate(self) -> None:
        unknown = sorted(set(self.configs) - set(BY_NUMBER))
        if unknown:
            raise ConfigError(f"unknown ablation configuration(s) {unknown}; use numbers 1-{len(CONFIGS)}")
        bad = sorted(set(self.regimes) - set(REGIMES))
        if bad:
            raise ConfigError(f"unknown regime(s) {bad}; use {', '.join(REGIMES)}")
        if not self.seeds:
            raise ConfigError("seeds needs at least one seed, e.g. seeds 0,1,2", fields=("seeds",))
        if not 0 < self.low_data_fraction <= 1:
            raise ConfigError(f"low_data_fraction must lie in (0, 1]; got {self.low_data_fraction}",
                              fields=("low_data_fraction",))
        if self.steps < 1 or self.pretrain_steps < 1:
            raise ConfigError("steps and pretrain_steps must be at least 1",
                              fields=("steps", "pretrain_steps"))


def kept_training_slices(n_train: int, fraction: float) -> int:
    """How many training samples distill keeps for train_fraction (featcache.distill.data rounds so)."""
    return n_train if fraction >= 1.0 else max(1, round(fraction * n_train))


def _train_count(dataset: dict[str, Any], num_slices: int) -> int:
    from featcache.data.registry import build_dataset

    options = {**dataset.get("options", {}), "num_slices": num_slices}
    return len(build_dataset(dataset["name"], dataset.get("root"), **options).split_indices("train"))


def regime_slices(settings: AblationSettings, regime: str, count: Callable[[dict, int], int] = _train_count
                  ) -> tuple[int, str | None]:
    """(num_slices, note) for a regime: the low-data regime raises num_slices until at least 2
    training slices remain after train_fraction, and says so in the note."""
    n = settings.num_slices
    if regime == "full":
        return n, None
    while kept_training_slices(count(settings.dataset, n), settings.low_data_fraction) < 2:
        n += 3  # the demo splits in blocks of 3 slices
        if n > 139:  # the demo has 139 slices with enough grey matter
            raise ConfigError(f"low_data_fraction {settings.low_data_fraction} leaves fewer than 2 "
                              "training slices at any size; raise it", fields=("low_data_fraction",))
    if n == settings.num_slices:
        return n, None
    return n, (f"low-data regime: num_slices raised from {settings.num_slices} to {n} so that "
               f"{settings.low_data_fraction:g} of the training slices is at least 2 slices")


def _dataset(spec: dict[str, Any], num_slices: int | None = None) -> dict[str, Any]:
    options = dict(spec.get("options", {}))
    if num_slices is not None:
        options["num_slices"] = num_slices
    return {**copy.deepcopy(spec), "options": options}


def cell_manifest(settings: AblationSettings, number: int, regime: str, seed: int, num_slices: int
                  ) -> Manifest:
    """The distillation manifest of one (configuration, regime, seed)."""
    config = BY_NUMBER[number]
    low = regime == "low"
    data = {
        "store": settings.store,
        "run_dir": str(settings.out / "runs" / f"c{number}-{regime}-s{seed}"),
        "datasets": [_dataset(settings.dataset, num_slices)],
        "teachers": [copy.deepcopy(settings.teachers[role]) for role in config.teachers],
        "student": {"image_size": settings.image_size, **settings.student, **config.student},
        "distill": dict(config.distill),
        "training": {"steps": settings.steps, "batch_size": settings.batch_size, "lr": settings.lr,
                     "warmup_epochs": 1, "seed": seed, "device": settings.device,
                     "train_fraction": settings.low_data_fraction if low else 1.0},
    }
    if config.pretrain:
        # The labelled set's own training slices (all of them, whatever the regime: no mask is
        # read) and the pool's training slices; the test slices of both stay unseen.
        data["pretrain"] = {"datasets": [_dataset(settings.dataset, num_slices), _dataset(settings.pool)],
                            "steps": settings.pretrain_steps}
    return manifest_from_dict(data, f"ablation config {number}")


@dataclass
class AblationCell:
    number: int
    regime: str
    seed: int
    num_slices: int
    n_train: int  # training slices before train_fraction
    manifest: Manifest


def plan(settings: AblationSettings, count: Callable[[dict, int], int] = _train_count
         ) -> tuple[list[AblationCell], list[str]]:
    """Every cell in run order (seed, regime, configuration) and notes about the sizing."""
    settings.validate()
    cells, notes = [], []
    sizes = {}
    for regime in settings.regimes:
        n, note = regime_slices(settings, regime, count)
        sizes[regime] = (n, count(settings.dataset, n))
        if note:
            notes.append(note)
    # Seed by seed: a study stopped part-way still holds complete pairs for the seeds it finished.
    for seed in settings.seeds:
        for regime in settings.regimes:
            n, n_train = sizes[regime]
            for number in sorted(settings.configs):
                cells.append(AblationCell(number, regime, seed, n, n_train,
                                          cell_manifest(settings, number, regime, seed, n)))
    return cells, notes


def result_rows(settings: AblationSettings, cell: AblationCell, result: CellResult,
                orientation: dict[str, Any]) -> list[dict[str, Any]]:
    """results.csv rows of one cell, one per test set: test metrics (per-image means), size, time,
    gate weights per role."""
    axial = result.groups.get(settings.dataset["name"]) or next(iter(result.groups.values()), {})
    base = {
        "config": cell.number, "config_name": BY_NUMBER[cell.number].name,
        "parent": BY_NUMBER[cell.number].compared_to, "regime": cell.regime,
        "seed": cell.seed, "train_fraction": cell.manifest.training.train_fraction,
        "num_slices": cell.num_slices,
        "train_slices": kept_training_slices(cell.n_train, cell.manifest.training.train_fraction),
        "steps": cell.manifest.training.steps, "epochs": result.epochs,
        "pretrain_steps": cell.manifest.pretrain.steps,
    }
    rows = []
    for test, g in (("axial", axial), ("orientation", orientation)):
        row = {**base, "test": test, "n_test": g.get("n"), "dice_mean": g.get("dice_mean"),
               "dice_std_images": g.get("dice_std"), "pooled_dice": g.get("pooled_dice"),
               "hd95_mean": g.get("hd95_mean"), "hd95_unit": g.get("hd95_unit"),
               "params": result.params, "train_seconds": round(result.train_seconds, 1),
               "best_val_dice": result.best_val_dice, "best_epoch": result.best_epoch + 1}
        for role, spec in settings.teachers.items():
            row[f"gate_{role}"] = result.teacher_gate(spec["name"])
        for term in ("seg", "feat", "recon"):
            row[f"loss_w_{term}"] = result.loss_weights.get(term)
        row["run_dir"] = str(result.run_dir)
        rows.append(row)
    return rows


def orientation_scores(settings: AblationSettings, run_dir: Path) -> dict[str, Any]:
    """The run's best checkpoint on the pool's test split (coronal + sagittal), written once to
    RUN/eval-orientation/summary.json and read back on a re-run."""
    from featcache.evaluate.accumulator import MetricAccumulator
    from featcache.evaluate.outputs import read_summary, write_metric_files
    from featcache.evaluate.predict import Predictor
    from featcache.evaluate.run_eval import score_dataset

    folder = Run(run_dir).orientation_eval.path
    summary = read_summary(folder)
    if summary is None:
        acc = MetricAccumulator()
        pool = DatasetSpec.model_validate(_dataset(settings.pool))
        score_dataset(Predictor.from_run(run_dir, "best"), pool, "test", acc)
        write_metric_files(folder, acc, {"checkpoint": "best", "split": "test"})
        summary = read_summary(folder)
    groups = summary["groups"]
    return next((g for g in groups if g.get("dataset") == settings.pool["name"]), groups[0])


def extraction_manifest(settings: AblationSettings, num_slices: int) -> Manifest | None:
    """A manifest naming every teacher the selected configurations need, over the labelled set
    (and the pool, when a configuration pretrains)."""
    roles = list(dict.fromkeys(r for n in sorted(settings.configs) for r in BY_NUMBER[n].teachers))
    if not roles:
        return None
    datasets = [_dataset(settings.dataset, num_slices)]
    if any(BY_NUMBER[n].pretrain for n in settings.configs):
        datasets.append(_dataset(settings.pool))
    data = {"store": settings.store, "datasets": datasets,
            "teachers": [copy.deepcopy(settings.teachers[r]) for r in roles]}
    return manifest_from_dict(data, "ablation extraction")


def _share_pretraining(cell: AblationCell, done: dict[int, Path]) -> None:
    """Regimes of one seed pretrain identically (masks are never read): copy the first regime's
    pretrained weights into the next run, where the trainer checks their recipe before use."""
    if not cell.manifest.pretrain.steps:
        return
    target = Run(cell.manifest.run_dir).pretrained_file
    source = done.get(cell.seed)
    if source is not None and source.is_file() and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    done.setdefault(cell.seed, target)


def run_ablation(settings: AblationSettings, progress: Progress | None = None
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    """Extract what is missing, then train and evaluate every cell not yet finished.

    Returns (rows, notes); rows in plan order, two per (configuration, regime, seed): one per test set."""
    progress = progress or (lambda event, info: None)
    cells, notes = plan(settings)
    for num_slices in dict.fromkeys(c.num_slices for c in cells):  # cache hits when already there
        manifest = extraction_manifest(settings, num_slices)
        if manifest is not None:
            ensure_extracted(manifest, settings.store, progress, ExtractSettings(device=settings.device))
    rows: list[dict[str, Any]] = []
    pretrained: dict[int, Path] = {}
    progress("cells_start", {"total": len(cells)})
    for k, cell in enumerate(cells):
        label = f"config {cell.number} · {cell.regime} · seed {cell.seed}"
        progress("cell_start", {"label": label, "index": k})
        _share_pretraining(cell, pretrained)
        result = run_cell(cell.manifest, progress)
        new = result_rows(settings, cell, result, orientation_scores(settings, result.run_dir))
        rows += new
        progress("cell_done", {"label": label, "index": k, "row": new[0], "skipped": result.skipped})
    return rows, notes


def total_train_seconds(rows: list[dict[str, Any]]) -> float:
    """Training seconds summed over distinct runs (each run has a row per test set)."""
    runs = {r["run_dir"]: r["train_seconds"] for r in rows}
    return float(sum(v for v in runs.values() if v is not None and math.isfinite(v)))
