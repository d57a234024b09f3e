"""The paper pipeline: extract every teacher over every dataset, distil one student jointly,
evaluate it per dataset, and write a paper-style table.

Outputs in OUT: table.md and table.tex (one row per dataset: test images, per-image Dice
mean ± std over images (ddof=0), pooled Dice, HD95 mean over the images where it is defined),
results.csv (the same rows, unrounded), cache.csv (one row per store entry: teacher, dataset,
key, status, size on disk), and run/ (the distillation run).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featcache.data.registry import build_dataset
from featcache.errors import ConfigError, StoreError
from featcache.evaluate.outputs import read_per_image
from featcache.events import ProgressFn
from featcache.runs import Run
from featcache.store import FeatureStore, default_store_url
from featcache.study.paper_config import StudyConfig, StudyDataset, require_paths, study_manifest
from featcache.study.runner import ExtractionRecord, ensure_extracted, run_cell
from featcache.study.tables import CLASS_METRICS, fmt, md_table, write_csv


@dataclass
class PaperResult:
    out: Path
    rows: list[dict[str, Any]]  # one per segmentation dataset
    cache: list[dict[str, Any]]  # one per store entry
    student_params: int
    teacher_params: dict[str, int]  # teacher name -> parameters (from the store's provenance)
    classification: list[dict[str, Any]] = field(default_factory=list)  # one per classification dataset

    @property
    def compression(self) -> float:
        """Teachers' combined parameters / student parameters (NaN without teachers)."""
        total = sum(self.teacher_params.values())
        return total / self.student_params if total else math.nan


def cache_rows(store_url: str, records: list[ExtractionRecord]
               ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Per entry: teacher, dataset, key, status, MiB on disk, teacher params; and params per teacher."""
    store = FeatureStore(store_url, read_only=True)
    rows, params = [], {}
    for r in records:
        meta = store.open(r.key).meta.get("teacher", {})
        if "params" not in meta:
            raise StoreError(f"entry {r.key} records no teacher parameter count; re-extract it with "
                             "this featcache version")
        params[r.teacher] = int(meta["params"])
        rows.append({"teacher": r.teacher, "dataset": r.dataset, "key": r.key, "status": r.status,
                     "size_mib": round(store.size_on_disk(r.key) / 2**20, 3),
                     "teacher_params": int(meta["params"]), "extract_seconds": round(r.seconds, 1)})
    return rows, params


def _test_ids(d: StudyDataset) -> set[str]:
    data = build_dataset(d.name, d.root, **d.options)
    return {data.samples[i].id for i in data.split_indices("test")}


def is_classification(d: StudyDataset) -> bool:
    return build_dataset(d.name, d.root, **d.options).task == "classification"


def classification_rows(config: StudyConfig, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per classification dataset of the study: its test-split metrics from eval's
    summary.json (accuracy, balanced accuracy, weighted F1, macro one-vs-rest AUC, quadratic
    weighted kappa for graded labels, as the paper reports them)."""
    scored = {(c["dataset"], c["split"]): c for c in summary.get("classification", [])}
    rows = []
    for d in config.datasets:
        c = scored.get((d.name, "test"))
        if c is not None:
            rows.append({"dataset": d.title, "n_test": c["n"],
                         **{m: math.nan if c.get(m) is None else c[m] for m in CLASS_METRICS}})
    return rows


def dataset_rows(config: StudyConfig, per_image: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per study dataset, in the study's order, from eval's per-image rows.

    Rows are attributed by loader name and test sample id, so two uses of one loader (two MSD
    tasks) stay apart. Pooled Dice recovers each image's true positives as dice·(|P|+|G|)/2."""
    rows, owner = [], {}
    for d in config.datasets:
        for sid in _test_ids(d):
            if (d.name, sid) in owner:
                raise ConfigError(f"datasets {owner[(d.name, sid)]!r} and {d.title!r} share test sample "
                                  f"{sid}; they cannot be told apart in the evaluation")
            owner[(d.name, sid)] = d.title
    for d in config.datasets:
        if is_classification(d):
            continue  # classification_rows
        mine = [r for r in per_image if owner.get((r["dataset"], r["id"])) == d.title]
        dice = np.array([r["dice"] for r in mine], dtype=np.float64)
        hd95 = np.array([r["hd95"] for r in mine], dtype=np.float64)
        hd95 = hd95[np.isfinite(hd95)]
        sizes = [int(r["pred_pixels"]) + int(r["gt_pixels"]) for r in mine]
        tp = sum(r["dice"] * s / 2 for r, s in zip(mine, sizes, strict=True) if s)
        units = {r["hd95_unit"] for r in mine}
        rows.append({"dataset": d.title, "n_test": len(mine),
                     "dice_mean": float(dice.mean()) if mine else math.nan,
                     "dice_std": float(dice.std()) if mine else math.nan,
                     "pooled_dice": 2 * tp / sum(sizes) if sum(sizes) else math.nan,
                     "hd95_mean": float(hd95.mean()) if hd95.size else math.nan,
                     "hd95_unit": units.pop() if len(units) == 1 else "mixed"})
    return rows


def paper_markdown(result: PaperResult) -> str:
    body = [[r["dataset"], fmt(r["n_test"]), f"{fmt(r['dice_mean'])} ± {fmt(r['dice_std'])}",
             fmt(r["pooled_dice"]), f"{fmt(r['hd95_mean'], 2)} {r['hd95_unit'] or ''}".strip()]
            for r in result.rows]
    teachers = ", ".join(f"{t} {p / 1e6:.2f}M" for t, p in result.teacher_params.items())
    cache = [[c["teacher"], c["dataset"], f"`{c['key']}`", c["status"], f"{c['size_mib']:.2f}"]
             for c in result.cache]
    return "\n".join([
        "# Distilled student, test split per dataset", "",
        "Per-image Dice: mean ± std over test images (an empty prediction of an empty mask scores 1). "
        "Pooled Dice: 2·ΣTP / (Σ|P| + Σ|G|) over all test pixels of a dataset.", "",
        md_table(["dataset", "test images", "per-image Dice", "pooled Dice", "HD95"], body), "",
        *_classification_markdown(result),
        f"Student: {result.student_params / 1e6:.3f}M parameters. Teachers: {teachers} "
        f"(combined {sum(result.teacher_params.values()) / 1e6:.2f}M). "
        f"Compression ratio (teachers' combined / student): {result.compression:.1f}x.", "",
        "## Feature cache", "",
        md_table(["teacher", "dataset", "entry", "status", "MiB on disk"], cache), ""])


def _classification_markdown(result: PaperResult) -> list[str]:
    if not result.classification:
        return []
    body = [[r["dataset"], fmt(r["n_test"]), *(fmt(r[m]) for m in CLASS_METRICS)]
            for r in result.classification]
    return ["Classification datasets (test split): accuracy, balanced accuracy, weighted F1, macro "
            "one-vs-rest AUC, quadratic weighted kappa (graded labels only).", "",
            md_table(["dataset", "test images", *CLASS_METRICS], body), ""]


def paper_latex(result: PaperResult) -> str:
    lines = [r"\begin{tabular}{lrccc}", r"\toprule",
             r"Dataset & $n$ & Dice (per image) & Dice (pooled) & HD95 \\", r"\midrule"]
    for r in result.rows:
        name = str(r["dataset"]).replace("_", r"\_")
        lines.append(f"{name} & {fmt(r['n_test'])} & {fmt(r['dice_mean'], 3)} $\\pm$ {fmt(r['dice_std'], 3)}"
                     f" & {fmt(r['pooled_dice'], 3)} & {fmt(r['hd95_mean'], 2)} \\\\")
    lines += [r"\bottomrule", r"\end{tabular}",
              f"% student {result.student_params} params; compression {result.compression:.1f}x"]
    return "\n".join(lines) + "\n"


def run_paper(config: StudyConfig, out: Path | None = None, progress: ProgressFn | None = None
              ) -> PaperResult:
    """Extract (cache hits for complete entries), distil jointly, evaluate, write the tables. Every
    root and checkpoint is checked first: all that are missing are named in one error."""
    require_paths(config)
    out = Path(out or config.out)
    store_url = config.store or default_store_url()
    manifest = study_manifest(config, out / "run").model_copy(update={"store": store_url})
    records = ensure_extracted(manifest, store_url, progress, config.extraction.settings(),
                               labels=[d.title for d in config.datasets])
    cell = run_cell(manifest, progress)
    cache, teacher_params = cache_rows(store_url, records)
    # segmentation rows only, one per image (a multi-class image's per-class rows are left out)
    per_image = [r for r in read_per_image(cell.run_dir) or [] if r.get("class", "") in ("", "mean")]
    summary = json.loads(Run(cell.run_dir).eval.summary_json.read_text())
    result = PaperResult(out, dataset_rows(config, per_image), cache, cell.params, teacher_params,
                         classification_rows(config, summary))
    table_rows = [{**r, "student_params": result.student_params,
                   "teachers_params": sum(teacher_params.values()),
                   "compression_ratio": round(result.compression, 2)} for r in result.rows]
    write_csv(out / "results.csv", table_rows)
    if result.classification:
        write_csv(out / "classification.csv", result.classification)
    write_csv(out / "cache.csv", cache)
    (out / "table.md").write_text(paper_markdown(result))
    (out / "table.tex").write_text(paper_latex(result))
    return result
