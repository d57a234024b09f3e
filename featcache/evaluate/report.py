"""`featcache report`: RUN/report/report.md with its plots beside it, and the same page as one
self-contained RUN/report/report.html (images embedded: it opens offline and can be sent as is).

It gathers what the run already holds: the eval metrics (RUN/eval/summary.json), training curves
(metrics.csv) and gate weights (gates.csv), the best and worst test cases with the overlays eval
wrote (RUN/eval/overlays/DATASET/ID.png), for classification datasets their metrics and a
confusion-matrix plot each, the student's size (every head included), and the provenance of every feature
store entry the run was trained from (the checkpoint's `entries`, read from its `store`).
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featcache.errors import FeatcacheError
from featcache.evaluate.accumulator import MEAN_CLASS
from featcache.evaluate.document import Block, Bullets, Heading, Para, Picture, Table, to_html, to_markdown
from featcache.evaluate.metrics import METRICS
from featcache.evaluate.outputs import read_eval_summary, read_per_image
from featcache.evaluate.plots import plot_confusion, plot_gates, plot_metrics
from featcache.evaluate.tables import fmt, mean_std
from featcache.evaluate.val_report import validation_section
from featcache.events import epoch_number
from featcache.runs import Checkpoint, Run
from featcache.student import count_params

_SKIP_META = {"layout", "sample_ids"}


@dataclass
class ReportResult:
    path: Path  # report.md
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was missing and left out
    html: Path | None = None  # report.html


def _metrics_section(summary: dict[str, Any] | None, run: Run, split: str, notes: list[str]) -> list[Block]:
    if summary is None:
        flag = "" if split == "test" else f" --split {split}"
        others = [name for name in run.scored_folders() if name != "eval"]
        also = f" (evaluated: {', '.join(others)}; `featcache report --split SPLIT` reports one)" \
            if others else ""
        notes.append(f"the {split} split is not evaluated: run `featcache eval --run {run.path}{flag}` "
                     f"for the metrics table{also}")
        return [Para(f"The {split} split is not evaluated yet: run `featcache eval{flag}`.", emphasis=True)]
    groups = summary.get("groups", [])
    if not groups:
        return []  # a classification-only run: its table follows
    classes = any("class" in g for g in groups)  # multi-class datasets: a row per class and the mean
    rows = [[str(g["dataset"]), str(g["split"]), *([str(g.get("class", ""))] if classes else []), str(g["n"])]
            + [f"{mean_std(g, m)} ({fmt(g.get(f'{m}_median'))})" for m in METRICS]
            + [fmt(g.get("pooled_dice"))] for g in groups]
    units = ", ".join(sorted({str(g.get("hd95_unit")) for g in groups}))
    return [Table(["dataset", "split", *(["class"] if classes else []), "n", *METRICS, "pooled Dice"], rows),
            Para(f"mean ± std (median), std with ddof=0; hd95 in {units}. "
                 f"Empty masks: {summary.get('empty_convention_text')}. "
                 f"Pooled Dice = {summary.get('pooled_dice_label')}: 2ΣTP/(Σ|P|+Σ|G|).")]


def _classification_section(summary: dict[str, Any] | None, out: Path,
                            result: ReportResult) -> list[Block]:
    """The classification metrics table and one confusion-matrix plot per (dataset, split)."""
    entries = (summary or {}).get("classification", [])
    if not entries:
        return []
    names = summary.get("classification_metrics", [])
    rows = [[str(e["dataset"]), str(e["split"]), str(e["n"]), *[fmt(e.get(m)) for m in names]]
            for e in entries]
    blocks: list[Block] = [
        Heading(2, "Classification"), Table(["dataset", "split", "n", *names], rows),
        Para("Precision, recall and F1 weighted by class support; AUC one-vs-rest, macro over the "
             "classes present; kappa quadratic-weighted, for graded labels only (— otherwise).")]
    for e in entries:
        png = out / "confusion" / f"{e['dataset']}_{e['split']}.png"
        result.plots.append(plot_confusion(e["confusion"], list(e["classes"]),
                                           f"{e['dataset']} · {e['split']} (n={e['n']})", png))
        blocks.append(Picture(png, f"confusion matrix {e['dataset']} {e['split']}"))
    return blocks


def _cases_section(run: Run, out: Path, k: int, split: str, notes: list[str]) -> list[Block]:
    # One row per image: a label map's per-class rows are left to the table, its mean ranks it.
    scored = read_per_image(run.path, split)
    rows = [r for r in scored or [] if r["class"] in ("", MEAN_CLASS)]
    if scored is not None and not rows:  # eval ran, on classification datasets only
        return [Para("No segmentation dataset was evaluated: no cases to show.", emphasis=True)]
    if not rows:
        notes.append("no eval/per_image.csv: no best and worst cases")
        return [Para("No per-image results: run `featcache eval`.", emphasis=True)]
    split = "test" if any(r["split"] == "test" for r in rows) else rows[0]["split"]
    scored = sorted((r for r in rows if r["split"] == split and not math.isnan(r["dice"])),
                    key=lambda r: r["dice"])
    picks = [("worst", r) for r in scored[:k]] + [("best", r) for r in scored[::-1][:k]
                                                 if r not in scored[:k]]
    fills = ("each predicted class in its colour, the ground truth of each class outlined"
             if any(r["class"] == MEAN_CLASS for r in rows)
             else "agreement green, false positive orange, false negative blue")
    blocks: list[Block] = [Para(f"Split `{split}`, ranked by Dice (the mean over classes for label maps). "
                                f"Fills: {fills} (legend under each picture).")]
    missing = 0
    for label, r in picks:
        blocks.append(Bullets([f"**{label}** `{r['dataset']}/{r['id']}`: Dice {fmt(r['dice'])}, "
                               f"HD95 {fmt(r['hd95'], 2)} {r['hd95_unit']}"]))
        source = run.eval_overlay(r["dataset"], r["id"], split)
        if source.is_file():
            target = out / "cases" / f"{label}_{r['dataset']}_{r['id']}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            blocks.append(Picture(target, r["id"]))
        else:
            missing += 1
    if missing:
        notes.append(f"{missing} case overlays not found under eval/overlays/ (eval writes them)")
    return blocks


def _flatten(meta: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    items: list[tuple[str, str]] = []
    for key, value in meta.items():
        if key in _SKIP_META:
            continue
        if isinstance(value, dict):
            items += _flatten(value, f"{prefix}{key}.")
        elif isinstance(value, str | int | float | bool) or value is None:
            items.append((f"{prefix}{key}", str(value)))
    return items


def _provenance_section(checkpoint: Checkpoint, notes: list[str]) -> list[Block]:
    url, keys = checkpoint.store, list(dict.fromkeys(checkpoint.entries.values()))
    if not keys:
        notes.append("the checkpoint names no store entries")
        return [Para("The checkpoint names no feature store entries.", emphasis=True)]
    blocks: list[Block] = [Para(f"Store: `{url or 'unknown'}`")]
    try:
        from featcache.store import FeatureStore

        store = FeatureStore(url, read_only=True) if url else None
    except FeatcacheError as exc:
        notes.append(f"store unreachable ({exc}); listing entry keys only")
        store = None
    for key in keys:
        blocks.append(Heading(3, f"`{key}`"))
        try:
            meta = store.open(key, allow_incomplete=True).meta if store else None
        except FeatcacheError as exc:
            meta = None
            notes.append(f"entry {key}: {exc}")
        blocks.append(Bullets([f"{k}: `{v}`" for k, v in _flatten(meta)] if meta
                              else ["(store unreachable: key only)"]))
    return blocks


def _student_section(run: Run, which: str) -> tuple[list[str], Checkpoint]:
    student, checkpoint = run.load_student(which)
    config = student.config.model_dump(mode="json")
    size = checkpoint.image_size
    lines = [f"checkpoint: `{which}` (epoch {epoch_number(checkpoint.epoch)}, best val Dice "
             f"{fmt(checkpoint.best_val_dice)})",
             f"parameters: {count_params(student):,}", f"input: {config['in_channels']} × {size} × {size}"]
    lines += [f"{k}: `{v}`" for k, v in config.items() if k not in ("in_channels", "image_size")]
    return lines, checkpoint


def _curves_sections(run: Run, out: Path, result: ReportResult) -> list[Block]:
    blocks: list[Block] = []
    for title, csv_path, plot, png in (("Training curves", run.metrics_csv, plot_metrics, "curves.png"),
                                       ("Gate weights", run.gates_csv, plot_gates, "gates.png")):
        blocks.append(Heading(2, title))
        if csv_path.is_file():
            result.plots.append(plot(csv_path, out / png))
            blocks.append(Picture(out / png, title))
        else:
            result.notes.append(f"no {csv_path.name}: {title.lower()} left out")
            blocks.append(Para(f"No {csv_path.name} in the run directory.", emphasis=True))
    return blocks


def build_report(run_dir: Path, which: str = "best", cases: int = 3, split: str = "test") -> ReportResult:
    """Write RUN/report/report.md (+ curves.png, gates.png, cases/) and report.html (the same page,
    self-contained) with `featcache eval`'s scores of `split` (its own folder: Run.eval_of);
    returns what was written."""
    run_dir = Path(run_dir)
    run = Run(run_dir)
    student_lines, checkpoint = _student_section(run, which)  # fails first on a bad run dir
    out = run.report_dir
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult(run.report_page, html=run.report_html)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    title = f"Run report: {run_dir.name}"
    summary = read_eval_summary(run_dir, split)
    blocks: list[Block] = [
        Heading(1, title), Para(f"Run directory `{run_dir}`, written {now}."),
        Heading(2, f"Metrics: the {split} split"), *_metrics_section(summary, run, split, result.notes),
        *_classification_section(summary, out, result),
        *validation_section(run, checkpoint),
        *_curves_sections(run, out, result),
        Heading(2, "Best and worst cases"), *_cases_section(run, out, cases, split, result.notes),
        Heading(2, "Student"), Bullets(student_lines),
        Heading(2, "Feature store entries (provenance)"), *_provenance_section(checkpoint, result.notes)]
    result.path.write_text(to_markdown(blocks, out))
    result.html.write_text(to_html(blocks, title), encoding="utf-8")
    return result
