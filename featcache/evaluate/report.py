"""`featcache report`: one Markdown page per run, RUN/report/report.md, with its plots beside it.

It gathers what the run already holds: the eval metrics (RUN/eval/summary.json), training curves
(metrics.csv) and gate weights (gates.csv), the best and worst test cases with the overlays eval
wrote (RUN/eval/overlays/DATASET/ID.png), the student's size, and the provenance of every feature
store entry the run was trained from. Store entries are read from payload["entries"] (or the
manifest's "entries"): a mapping "dataset/teacher" -> key, a list of keys, or of dicts with a
"key"; the store from payload["store"] (or the manifest's "store"): a URL, or a dict with "url"
or "path".
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featcache.distill.checkpoint import load_student
from featcache.distill.student import count_params
from featcache.errors import FeatcacheError
from featcache.evaluate.metrics import METRICS
from featcache.evaluate.outputs import eval_overlay_path, read_eval_summary, read_per_image
from featcache.evaluate.plots import plot_gates, plot_metrics
from featcache.evaluate.tables import fmt, mean_std

_SKIP_META = {"layout", "sample_ids"}


@dataclass
class ReportResult:
    path: Path
    plots: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was missing and left out


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _metrics_section(summary: dict[str, Any] | None, notes: list[str]) -> list[str]:
    if summary is None:
        notes.append("no eval/summary.json: run `featcache eval` for the metrics table")
        return ["_Not evaluated yet: run `featcache eval`._"]
    rows = [[str(g["dataset"]), str(g["split"]), str(g["n"])]
            + [f"{mean_std(g, m)} ({fmt(g.get(f'{m}_median'))})" for m in METRICS]
            + [fmt(g.get("pooled_dice"))] for g in summary.get("groups", [])]
    units = ", ".join(sorted({str(g.get("hd95_unit")) for g in summary.get("groups", [])}))
    lines = _md_table(["dataset", "split", "n", *METRICS, "pooled Dice"], rows)
    return lines + ["", f"mean ± std (median), std with ddof=0; hd95 in {units}. "
                        f"Empty masks: {summary.get('empty_convention_text')}. "
                        f"Pooled Dice = {summary.get('pooled_dice_label')}: 2ΣTP/(Σ|P|+Σ|G|)."]


def _cases_section(run_dir: Path, out: Path, k: int, notes: list[str]) -> list[str]:
    rows = read_per_image(run_dir)
    if not rows:
        notes.append("no eval/per_image.csv: no best and worst cases")
        return ["_No per-image results: run `featcache eval`._"]
    split = "test" if any(r["split"] == "test" for r in rows) else rows[0]["split"]
    scored = sorted((r for r in rows if r["split"] == split and not math.isnan(r["dice"])),
                    key=lambda r: r["dice"])
    picks = [("worst", r) for r in scored[:k]] + [("best", r) for r in scored[::-1][:k]
                                                 if r not in scored[:k]]
    lines = [f"Split `{split}`, ranked by Dice. Contours: prediction orange, ground truth blue.", ""]
    missing = 0
    for label, r in picks:
        lines.append(f"- **{label}** `{r['dataset']}/{r['id']}`: Dice {fmt(r['dice'])}, "
                     f"HD95 {fmt(r['hd95'], 2)} {r['hd95_unit']}")
        source = eval_overlay_path(run_dir, r["dataset"], r["id"])
        if source.is_file():
            target = out / "cases" / f"{label}_{r['dataset']}_{r['id']}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            lines.append(f"  ![{r['id']}](cases/{target.name})")
        else:
            missing += 1
    if missing:
        notes.append(f"{missing} case overlays not found under eval/overlays/ (eval writes them)")
    return lines


def _entries(payload: dict[str, Any]) -> tuple[str | None, list[str]]:
    manifest = payload.get("manifest") or {}
    raw = payload.get("entries") or manifest.get("entries") or []
    if isinstance(raw, dict):  # the trainer saves {"dataset/teacher": entry key}
        raw = list(raw.values())
    keys = [e.get("key", "") if isinstance(e, dict) else str(e) for e in raw]
    store = payload.get("store") or manifest.get("store")
    if isinstance(store, dict):
        store = store.get("url") or store.get("path")
    return (str(store) if store else None), [k for k in keys if k]


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


def _provenance_section(payload: dict[str, Any], notes: list[str]) -> list[str]:
    url, keys = _entries(payload)
    if not keys:
        notes.append("the checkpoint names no store entries")
        return ["_The checkpoint names no feature store entries._"]
    lines = [f"Store: `{url or 'unknown'}`", ""]
    try:
        from featcache.store import FeatureStore

        store = FeatureStore(url, read_only=True) if url else None
    except FeatcacheError as exc:
        notes.append(f"store unreachable ({exc}); listing entry keys only")
        store = None
    for key in keys:
        lines.append(f"### `{key}`")
        try:
            meta = store.open(key, allow_incomplete=True).meta if store else None
        except FeatcacheError as exc:
            meta = None
            notes.append(f"entry {key}: {exc}")
        lines += ([f"- {k}: `{v}`" for k, v in _flatten(meta)] if meta
                  else ["- (store unreachable: key only)"])
        lines.append("")
    return lines


def _student_section(run_dir: Path, which: str) -> tuple[list[str], dict[str, Any]]:
    student, payload = load_student(run_dir, which)
    config = student.config.to_dict()
    lines = [f"- checkpoint: `{which}` (epoch {payload.get('epoch', '?')}, best val Dice "
             f"{fmt(payload.get('best_val_dice'))})",
             f"- parameters: {count_params(student):,}", f"- input: {config['in_channels']} × "
             f"{payload.get('image_size')} × {payload.get('image_size')}"]
    lines += [f"- {k}: `{v}`" for k, v in config.items() if k != "in_channels"]
    return lines, payload


def build_report(run_dir: Path, which: str = "best", cases: int = 3) -> ReportResult:
    """Write RUN/report/report.md (+ curves.png, gates.png, cases/); returns what was written."""
    run_dir = Path(run_dir)
    student_lines, payload = _student_section(run_dir, which)  # fails first on a bad run dir
    out = run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult(out / "report.md")
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    lines = [f"# Run report: {run_dir.name}", "", f"Run directory `{run_dir}`, written {now}.", "",
             "## Metrics", "", *_metrics_section(read_eval_summary(run_dir), result.notes), ""]
    for title, csv_name, plot, png in (("Training curves", "metrics.csv", plot_metrics, "curves.png"),
                                       ("Gate weights", "gates.csv", plot_gates, "gates.png")):
        lines += [f"## {title}", ""]
        if (run_dir / csv_name).is_file():
            result.plots.append(plot(run_dir / csv_name, out / png))
            lines.append(f"![{title}]({png})")
        else:
            result.notes.append(f"no {csv_name}: {title.lower()} left out")
            lines.append(f"_No {csv_name} in the run directory._")
        lines.append("")
    lines += ["## Best and worst cases", "", *_cases_section(run_dir, out, cases, result.notes), "",
              "## Student", "", *student_lines, "",
              "## Feature store entries (provenance)", "", *_provenance_section(payload, result.notes)]
    result.path.write_text("\n".join(lines).rstrip() + "\n")
    return result
