"""The ablation study: which part of the method earns its keep on the embedded demo data.

Configurations (each one adds one part to the previous, except 6):
  1 student alone, supervised (distill.enabled=false)
  2 + feature distillation from the real teacher (uniform weights, fixed loss weights, no return decoder)
  3 + teacher-level gate (real + uninformative teacher, adaptive gate)
  4 + loss-level gate (uncertainty weighting)
  5 + return decoder (the full method)
  6 the full method with the uninformative teacher only
Each runs per seed in the full-data regime and in a low-data regime (training.train_fraction).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featcache.distill.manifest import Manifest, manifest_from_dict
from featcache.errors import ConfigError
from featcache.study.runner import CellResult, Progress, ensure_extracted, run_cell


@dataclass(frozen=True)
class AblationConfig:
    number: int
    name: str
    teachers: tuple[str, ...]  # roles: "real", "uninformative"
    distill: dict[str, Any]


_FIXED = {"teacher_gate": "uniform", "loss_gate": "fixed", "return_decoder": False}
CONFIGS: tuple[AblationConfig, ...] = (
    AblationConfig(1, "student alone (supervised)", (), {"enabled": False}),
    AblationConfig(2, "+ real-teacher distillation", ("real",), dict(_FIXED)),
    AblationConfig(3, "+ teacher-level gate", ("real", "uninformative"),
                   {**_FIXED, "teacher_gate": "adaptive"}),
    AblationConfig(4, "+ loss-level gate", ("real", "uninformative"),
                   {**_FIXED, "teacher_gate": "adaptive", "loss_gate": "uncertainty"}),
    AblationConfig(5, "+ return decoder (full method)", ("real", "uninformative"),
                   {"teacher_gate": "adaptive", "loss_gate": "uncertainty", "return_decoder": True}),
    AblationConfig(6, "full method, uninformative teacher only", ("uninformative",),
                   {"teacher_gate": "adaptive", "loss_gate": "uncertainty", "return_decoder": True}),
)
BY_NUMBER = {c.number: c for c in CONFIGS}
REGIMES = ("full", "low")

# The demo's two teachers, as in manifests/demo.yaml.
REAL_TEACHER = {"name": "litemedsam", "levels": {"embedding": "dec3"}}
UNINFORMATIVE_TEACHER = {"name": "timm", "arch": "vit_tiny_patch16_224",
                         "options": {"random_init": True}, "levels": {"block11": "dec3"}}


@dataclass
class AblationSettings:
    """Everything an ablation run depends on. Defaults: the 2-core sizing (see pipelines/ablation.py)."""

    out: Path = Path("runs/ablation")
    store: str | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    configs: list[int] = field(default_factory=lambda: [c.number for c in CONFIGS])
    regimes: list[str] = field(default_factory=lambda: list(REGIMES))
    epochs: int = 6
    # None: 3 x epochs. A low-data epoch is one optimizer step (3 slices) against 4 in the full
    # regime (28 slices, batch 8), so 3x keeps the step counts close at a fraction of the time.
    low_data_epochs: int | None = None
    num_slices: int = 40
    low_data_fraction: float = 0.1
    image_size: int = 96
    batch_size: int = 8
    lr: float = 0.002
    dataset: dict[str, Any] = field(default_factory=lambda: {"name": "demo", "options": {}})
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
            raise ConfigError("--seeds needs at least one seed, e.g. --seeds 0,1,2")
        if not 0 < self.low_data_fraction <= 1:
            raise ConfigError(f"--low-data-fraction must lie in (0, 1]; got {self.low_data_fraction}")


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
            raise ConfigError(f"--low-data-fraction {settings.low_data_fraction} leaves fewer than 2 "
                              "training slices at any size; raise it")
    if n == settings.num_slices:
        return n, None
    return n, (f"low-data regime: num_slices raised from {settings.num_slices} to {n} so that "
               f"{settings.low_data_fraction:g} of the training slices is at least 2 slices")


def cell_manifest(settings: AblationSettings, number: int, regime: str, seed: int, num_slices: int
                  ) -> Manifest:
    """The distillation manifest of one (configuration, regime, seed)."""
    config = BY_NUMBER[number]
    low = regime == "low"
    epochs = (settings.low_data_epochs or 3 * settings.epochs) if low else settings.epochs
    data = {
        "store": settings.store,
        "run_dir": str(settings.out / "runs" / f"c{number}-{regime}-s{seed}"),
        "datasets": [{**copy.deepcopy(settings.dataset),
                      "options": {**settings.dataset.get("options", {}), "num_slices": num_slices}}],
        "teachers": [copy.deepcopy(settings.teachers[role]) for role in config.teachers],
        "student": {"image_size": settings.image_size, **settings.student},
        "distill": dict(config.distill),
        "training": {"epochs": epochs, "batch_size": settings.batch_size, "lr": settings.lr,
                     "warmup_epochs": 1, "seed": seed, "device": settings.device,
                     "train_fraction": settings.low_data_fraction if low else 1.0},
    }
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
    """Every cell in run order (regime, configuration, seed) and notes about the sizing."""
    settings.validate()
    cells, notes = [], []
    for regime in settings.regimes:
        n, note = regime_slices(settings, regime, count)
        n_train = count(settings.dataset, n)
        if note:
            notes.append(note)
        for number in sorted(settings.configs):
            for seed in settings.seeds:
                cells.append(AblationCell(number, regime, seed, n, n_train,
                                          cell_manifest(settings, number, regime, seed, n)))
    return cells, notes


def result_row(settings: AblationSettings, cell: AblationCell, result: CellResult) -> dict[str, Any]:
    """One results.csv row: test metrics (per-image means), size, time, gate weights per role."""
    dataset = settings.dataset["name"]
    g = result.groups.get(dataset) or next(iter(result.groups.values()), {})
    row = {
        "config": cell.number, "config_name": BY_NUMBER[cell.number].name, "regime": cell.regime,
        "seed": cell.seed, "train_fraction": cell.manifest.training.train_fraction,
        "num_slices": cell.num_slices,
        "train_slices": kept_training_slices(cell.n_train, cell.manifest.training.train_fraction),
        "epochs": result.epochs, "n_test": g.get("n"), "dice_mean": g.get("dice_mean"),
        "dice_std_images": g.get("dice_std"), "pooled_dice": g.get("pooled_dice"),
        "hd95_mean": g.get("hd95_mean"), "hd95_unit": g.get("hd95_unit"),
        "params": result.params, "train_seconds": round(result.train_seconds, 1),
        "best_val_dice": result.best_val_dice, "best_epoch": result.best_epoch + 1,
    }
    for role, spec in settings.teachers.items():
        row[f"gate_{role}"] = result.teacher_gate(spec["name"])
    for term in ("seg", "feat", "recon"):
        row[f"loss_w_{term}"] = result.loss_weights.get(term)
    row["run_dir"] = str(result.run_dir)
    return row


def extraction_manifest(settings: AblationSettings, num_slices: int) -> Manifest | None:
    """A manifest naming every teacher the selected configurations need, for one dataset size."""
    roles = list(dict.fromkeys(r for n in sorted(settings.configs) for r in BY_NUMBER[n].teachers))
    if not roles:
        return None
    data = {"store": settings.store,
            "datasets": [{**copy.deepcopy(settings.dataset),
                          "options": {**settings.dataset.get("options", {}), "num_slices": num_slices}}],
            "teachers": [copy.deepcopy(settings.teachers[r]) for r in roles]}
    return manifest_from_dict(data, "ablation extraction")


def run_ablation(settings: AblationSettings, progress: Progress | None = None
                 ) -> tuple[list[dict[str, Any]], list[str]]:
    """Extract what is missing, then train and evaluate every cell not yet finished.

    Returns (rows, notes); rows in plan order, one per (configuration, regime, seed)."""
    progress = progress or (lambda event, info: None)
    cells, notes = plan(settings)
    for num_slices in dict.fromkeys(c.num_slices for c in cells):  # cache hits when already there
        manifest = extraction_manifest(settings, num_slices)
        if manifest is not None:
            ensure_extracted(manifest, settings.store, progress, device=settings.device)
    rows = []
    progress("cells_start", {"total": len(cells)})
    for k, cell in enumerate(cells):
        label = f"config {cell.number} · {cell.regime} · seed {cell.seed}"
        progress("cell_start", {"label": label, "index": k})
        result = run_cell(cell.manifest, progress)
        row = result_row(settings, cell, result)
        rows.append(row)
        progress("cell_done", {"label": label, "index": k, "row": row, "skipped": result.skipped})
    return rows, notes
