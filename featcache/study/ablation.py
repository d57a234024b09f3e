"""The paired study of `featcache study --manifest m.yaml`: arms x label fractions x seeds.

Each arm is the manifest with the arm's overrides (featcache/study/spec.py); each label fraction
sets training.train_fraction; each seed sets training.seed, so all arms of one (fraction, seed)
share the split, the kept labelled images and the step count: their differences are paired.
Every run is scored on the test split of the manifest's datasets and on each extra test set.
Runs go seed by seed, so a study stopped part-way holds complete pairs for the seeds it finished;
a finished run is read back, never retrained (see runner.run_cell).
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featcache.errors import ConfigError
from featcache.events import ProgressFn, RunDone, RunsPlanned, RunStarted, epoch_number, ignore
from featcache.extract.settings import ExtractSettings
from featcache.manifest import Manifest, apply_overrides, manifest_from_dict, parse_overrides
from featcache.runs import Run
from featcache.study.reference import TEACHER_ARM, reference_row, safe_probe_test_score, teacher_name
from featcache.study.runner import CellResult, ensure_extracted, run_cell
from featcache.study.spec import Arm, QuickSpec, StudySpec, TestSet, read_study, runs_problem, slug
from featcache.study.tables import CLASS_METRICS, fraction_label


@dataclass(frozen=True)
class StudyOptions:
    """What the command line may change of a manifest's study section (None: the section's)."""

    seeds: list[int] | None = None
    label_fractions: list[float] | None = None
    arms: list[int] | None = None  # 1-based arm numbers, as in the table
    quick: bool = False
    out: Path | None = None
    overrides: list[str] = field(default_factory=list)  # key.path=value on the base manifest


@dataclass
class StudyCell:
    arm: int  # the arm's 1-based number in the study section
    fraction: float
    seed: int
    manifest: Manifest


@dataclass
class StudyPlan:
    source: Path  # the manifest file
    out: Path
    arms: dict[int, Arm]  # the selected arms by number
    reference: int
    seeds: list[int]
    fractions: list[float]
    test_sets: list[TestSet]
    cells: list[StudyCell]  # in run order: seed, fraction, arm
    notes: list[str] = field(default_factory=list)
    teacher: str | None = None  # the teacher reference row's name (reference.py), once it is scored

    @property
    def names(self) -> dict[int, str]:
        return {**{k: a.name for k, a in self.arms.items()},
                **({TEACHER_ARM: self.teacher} if self.teacher else {})}

    def parent(self, number: int) -> int | None:
        """The arm `number` changes one thing of: its compared_to, else the arm before it."""
        named = self.arms[number].compared_to
        if named is not None:
            return next(k for k, a in self.arms.items() if a.name == named)
        return number - 1 if number > 1 else None

    @property
    def teachers(self) -> list[str]:
        """Labels of the teachers any distilling arm trains with (the gate columns)."""
        labels = [t.label for c in self.cells if c.manifest.distill.enabled for t in c.manifest.teachers]
        return list(dict.fromkeys(labels))


def _numbers(values: list[Any] | None, default: list[Any]) -> list[Any]:
    return list(default) if values is None else list(values)


def plan_study(path: Path, options: StudyOptions | None = None) -> StudyPlan:
    """Every run of the study, its manifest validated before anything trains."""
    options = options or StudyOptions()
    base, spec = read_study(path)
    apply_overrides(base, parse_overrides(options.overrides))
    manifest_from_dict(copy.deepcopy(base), str(path))  # the file's own manifest first: errors name it
    numbered = dict(enumerate(spec.arms, start=1))
    quick_arms = spec.quick.arms if options.quick and spec.quick.arms else None
    default = [k for k, a in numbered.items() if quick_arms is None or a.name in quick_arms]
    chosen = _numbers(options.arms, default)
    unknown = [k for k in chosen if k not in numbered]
    if unknown or not chosen:
        raise ConfigError(f"arms {unknown or chosen}: choose from 1-{len(numbered)} "
                          f"({'; '.join(f'{k} {a.name}' for k, a in numbered.items())})", fields=("arms",))
    reference = next(k for k, a in numbered.items() if a.name == spec.reference_arm)
    if reference not in chosen:
        raise ConfigError(f"arms must include the reference arm {reference} ({spec.reference_arm})",
                          fields=("arms",))
    seeds = _numbers(options.seeds, spec.quick.seeds if options.quick else spec.seeds)
    fractions = _numbers(options.label_fractions, spec.label_fractions)
    problem = runs_problem(seeds, fractions)
    if problem:
        raise ConfigError(problem[1], fields=(problem[0],))
    out = _out_dir(path, spec, options)
    arms = {k: numbered[k] for k in sorted(chosen)}
    cells = [StudyCell(k, f, s, cell_manifest(base, arms[k], f, s, out, spec.quick if options.quick else None,
                                              str(path)))
             for s in seeds for f in fractions for k in arms]
    _check_test_sets(spec.test_sets, cells)
    plan = StudyPlan(path, out, arms, reference, seeds, fractions, spec.test_sets, cells)
    plan.notes = label_notes(cells)
    return plan


def _out_dir(path: Path, spec: StudySpec, options: StudyOptions) -> Path:
    if options.out is not None:
        return Path(options.out)
    out = Path(spec.out) if spec.out else Path("runs") / f"study-{path.stem}"
    # Quick runs are other settings: their own folder, so they never meet the real study's runs.
    return out.with_name(out.name + "-quick") if options.quick else out


def cell_manifest(base: dict[str, Any], arm: Arm, fraction: float, seed: int, out: Path,
                  quick: QuickSpec | None, source: str) -> Manifest:
    """The manifest of one run: the base, the arm's overrides, the quick caps, then seed, label
    fraction and run directory."""
    data = copy.deepcopy(base)
    where = f"{source}, arm {arm.name!r}"
    try:
        apply_overrides(data, arm.overrides.items())
        if quick is not None:
            apply_overrides(data, _quick_caps(data, quick))
            apply_overrides(data, quick.overrides.items())
    except ConfigError as exc:  # name the arm, not --set
        raise ConfigError(f"{where}: {exc}") from None
    run_dir = out / "runs" / f"{slug(arm.name)}-f{fraction:g}-s{seed}"
    apply_overrides(data, [("training.seed", seed), ("training.train_fraction", float(fraction)),
                           ("run_dir", str(run_dir))])
    return manifest_from_dict(data, where)


def _quick_caps(data: dict[str, Any], quick: QuickSpec) -> list[tuple[str, Any]]:
    training, pretrain = data.get("training") or {}, data.get("pretrain") or {}
    steps = training.get("steps")
    caps: list[tuple[str, Any]] = [("training.steps", quick.max_steps if not isinstance(steps, int)
                                    else min(steps, quick.max_steps))]
    if isinstance(pretrain.get("steps"), int) and pretrain["steps"] > 0:
        caps.append(("pretrain.steps", min(pretrain["steps"], quick.max_pretrain_steps)))
    return caps


def _check_test_sets(test_sets: list[TestSet], cells: list[StudyCell]) -> None:
    """Before anything trains: names apart from the training datasets', masks to score against."""
    from featcache.data.registry import build_dataset

    names = {d.name for c in cells for d in c.manifest.datasets}
    clash = sorted(names & {t.name for t in test_sets})
    if clash:
        raise ConfigError(f"study test_sets: {clash[0]!r} is also a training dataset's name (its test "
                          "split is scored already); name the extra test set otherwise")
    for t in test_sets:
        d = t.dataset
        data = build_dataset(d.name, d.root, **d.options)
        named = {"train": d.train_split, "val": d.val_split, "test": d.test_split}.get(t.split, t.split)
        if not data.labelled or not data.split_indices(named):
            raise ConfigError(f"study test set {t.name!r}: dataset {d.name} has no labelled images in "
                              f"split {named!r}; name a labelled dataset and one of its splits")


def kept_training_slices(n_train: int, fraction: float) -> int:
    """How many training samples distill keeps for train_fraction (featcache.distill.data rounds so)."""
    return n_train if fraction >= 1.0 else max(1, round(fraction * n_train))


def label_notes(cells: list[StudyCell]) -> list[str]:
    """Per label fraction below 1: how many training images of each dataset it keeps."""
    from featcache.data.registry import build_dataset

    notes, sizes = [], {}
    for cell in cells:
        if cell.fraction >= 1 or any(n.startswith(f"{fraction_label(cell.fraction)}:") for n in notes):
            continue
        parts = []
        for d in cell.manifest.datasets:
            key = json.dumps(d.model_dump(mode="json"), sort_keys=True)
            if key not in sizes:
                sizes[key] = len(build_dataset(d.name, d.root, **d.options).split_indices(d.train_split))
            parts.append(f"{kept_training_slices(sizes[key], cell.fraction)} of {sizes[key]} {d.name}")
        notes.append(f"{fraction_label(cell.fraction)}: {', '.join(parts)} training images per run "
                     "(drawn with the run's seed)")
    return notes


def extraction_manifests(cells: list[StudyCell]) -> list[Manifest]:
    """Per store: every teacher a distilling arm uses over every dataset it reads (its labelled
    datasets and its pretraining ones); supervised arms need none."""
    by_store: dict[str | None, tuple[dict[str, Any], dict[str, Any]]] = {}
    for cell in cells:
        m = cell.manifest
        if not m.distill.enabled or not m.teachers:
            continue
        teachers, datasets = by_store.setdefault(m.store, ({}, {}))
        for t in m.teachers:
            teachers.setdefault(json.dumps(t.model_dump(mode="json"), sort_keys=True), t.model_dump())
        for d in [*m.datasets, *(m.pretrain.datasets if m.pretrain.steps else [])]:
            datasets.setdefault(json.dumps(d.model_dump(mode="json"), sort_keys=True), d.model_dump())
    return [manifest_from_dict({"store": store, "teachers": list(t.values()), "datasets": list(d.values())},
                               "study extraction") for store, (t, d) in by_store.items()]


def _share_pretraining(cell: StudyCell, done: dict[tuple[int, int], Path]) -> None:
    """Label fractions of one (arm, seed) pretrain identically (masks are never read): copy the
    first one's pretrained weights into the next run, where the trainer checks their recipe."""
    if not cell.manifest.pretrain.steps:
        return
    target = Run(cell.manifest.run_dir).pretrained_file
    source = done.get((cell.arm, cell.seed))
    if source is not None and source.is_file() and not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    done.setdefault((cell.arm, cell.seed), target)


def extra_scores(run_dir: Path, test: TestSet) -> dict[str, Any]:
    """The run's best checkpoint on an extra test set, written once to RUN/eval-NAME/summary.json
    and read back on a re-run: its summary row."""
    from featcache.evaluate.accumulator import MetricAccumulator
    from featcache.evaluate.outputs import read_summary, write_metric_files
    from featcache.evaluate.predictor import Predictor
    from featcache.evaluate.run_eval import score_dataset

    folder = Run(run_dir).path / f"eval-{test.name}"
    summary = read_summary(folder)
    if summary is None:
        acc = MetricAccumulator()
        score_dataset(Predictor.from_run(run_dir, "best"), test.dataset, test.split, acc)
        write_metric_files(folder, acc, {"checkpoint": "best", "split": test.split, "test_set": test.name})
        summary = read_summary(folder)
    groups = summary["groups"]
    return next((g for g in groups if g.get("dataset") == test.dataset.name), groups[0])


def _test_metrics(g: dict[str, Any]) -> dict[str, Any]:
    """A segmentation test set's results.csv columns (per-image means; the score is Dice)."""
    return {"metric": "dice", "score": g.get("dice_mean"), "n_test": g.get("n"),
            "dice_mean": g.get("dice_mean"), "dice_std_images": g.get("dice_std"),
            "pooled_dice": g.get("pooled_dice"), "hd95_mean": g.get("hd95_mean"),
            "hd95_unit": g.get("hd95_unit")}


def _class_metrics(c: dict[str, Any]) -> dict[str, Any]:
    """A classification test set's columns (eval's summary.json entry; the score is accuracy)."""
    return {"metric": "accuracy", "score": c.get("accuracy"), "n_test": c.get("n"),
            **{m: c.get(m) for m in CLASS_METRICS}}


def result_rows(plan: StudyPlan, cell: StudyCell, result: CellResult) -> list[dict[str, Any]]:
    """results.csv rows of one run, one per test set: test metrics (per-image means for masks,
    accuracy and the rest for classes), time, gates. `steps` is what the run trained (exactly
    training.steps)."""
    base = {"arm": cell.arm, "arm_name": plan.arms[cell.arm].name, "compared_to": plan.parent(cell.arm),
            "label_fraction": cell.fraction, "seed": cell.seed,
            "steps": result.steps if result.steps is not None else cell.manifest.training.steps,
            "epochs": result.epochs, "pretrain_steps": cell.manifest.pretrain.steps}
    tests = [(name, f"{name} test", _test_metrics(g)) for name, g in result.groups.items() if name != "all"]
    tests += [(name, f"{name} test (accuracy)", _class_metrics(c))
              for name, c in result.classification.items()]
    tests += [(t.name, t.heading, _test_metrics(extra_scores(result.run_dir, t))) for t in plan.test_sets]
    rows = []
    for name, heading, metrics in tests:
        row = {**base, "test": name, "test_title": heading, **metrics, "params": result.params,
               "train_seconds": round(result.train_seconds, 1), "best_val_score": result.best_val_dice,
               "best_epoch": epoch_number(result.best_epoch), "warnings": " | ".join(result.warnings)}
        for label in plan.teachers:
            row[f"gate_{label}"] = result.teacher_gate(label)
        for term, weight in sorted(result.loss_weights.items()):
            row[f"loss_w_{term}"] = weight
        rows.append({**row, "run_dir": str(result.run_dir)})
    return rows


def run_study(plan: StudyPlan, progress: ProgressFn | None = None) -> list[dict[str, Any]]:
    """Extract what the store lacks, then train and evaluate every run not yet finished.

    Returns the rows in plan order, one per (run, test set)."""
    progress = progress or ignore
    device = plan.cells[0].manifest.training.device
    for manifest in extraction_manifests(plan.cells):  # cache hits when already there
        ensure_extracted(manifest, manifest.store, progress, ExtractSettings(device=device))
    rows: list[dict[str, Any]] = []
    pretrained: dict[tuple[int, int], Path] = {}
    progress(RunsPlanned(len(plan.cells)))
    for k, cell in enumerate(plan.cells):
        label = f"arm {cell.arm} · {fraction_label(cell.fraction)} · seed {cell.seed}"
        progress(RunStarted(label, k))
        _share_pretraining(cell, pretrained)
        result = run_cell(cell.manifest, progress)
        new = result_rows(plan, cell, result)
        rows += new
        progress(RunDone(label, k, new[0], result.skipped))
    return rows + teacher_rows(plan, rows)


def teacher_rows(plan: StudyPlan, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The teacher's reference rows (reference.py): per (label fraction, seed) and dataset, the
    best probe of the first arm with output distillation, on that dataset's test split (extra test
    sets would need the teacher's features of their images: left out). Sets plan.teacher."""
    found_all, out = [], []
    for fraction in plan.fractions:
        for seed in plan.seeds:
            cell = next((c for c in plan.cells if c.fraction == fraction and c.seed == seed
                         and c.manifest.distill.enabled and c.manifest.distill.output), None)
            if cell is None:
                continue
            run = str(Run(cell.manifest.run_dir).path)
            for d, spec in enumerate(cell.manifest.datasets):
                base = next((r for r in rows if r["run_dir"] == run and r["test"] == spec.name), None)
                found = safe_probe_test_score(cell.manifest, cell.manifest.run_dir, d) if base else None
                if found is None:
                    continue
                found_all.append(found)
                keep = ("label_fraction", "seed", "steps", "test", "test_title", "run_dir")
                out.append(reference_row({k: base[k] for k in keep}, found))
    if found_all:
        plan.teacher = teacher_name(found_all)
        for row in out:
            row["arm_name"] = plan.teacher
    return out


def total_train_seconds(rows: list[dict[str, Any]]) -> float:
    """Training seconds summed over distinct runs (each run has a row per test set)."""
    runs = {r["run_dir"]: r["train_seconds"] for r in rows if int(r["arm"]) != TEACHER_ARM}
    return float(sum(v for v in runs.values() if v is not None and math.isfinite(v)))


def write_outputs(plan: StudyPlan, rows: list[dict[str, Any]]) -> list[Path]:
    """OUT/results.csv (every row, unrounded), OUT/table.md (paired differences with 95% intervals,
    gates, findings, notes) and OUT/study.png (per-seed Dice per arm, one panel per setting)."""
    from featcache.study.plots import ablation_plot
    from featcache.study.tables import ablation_markdown, write_csv

    table = plan.out / "table.md"
    table.parent.mkdir(parents=True, exist_ok=True)
    warned = {r["run_dir"]: r["warnings"] for r in rows if r.get("warnings")}
    notes = [*plan.notes, *(f"{Path(run).name}: a task collapsed in training: {said}"
                            for run, said in warned.items())]
    table.write_text(ablation_markdown(rows, plan.names, notes, plan.teachers, plan.reference))
    return [write_csv(plan.out / "results.csv", rows), table,
            ablation_plot(rows, plan.names, plan.out / "study.png")]
