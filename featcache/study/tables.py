"""Result files of the study pipelines: CSV rows, markdown tables with computed findings."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from featcache.study.stats import PAIRED_RULE, Paired, SeedStats, paired_difference, seed_stats

# A classification test set's columns, from eval's summary.json: accuracy, balanced accuracy,
# support-weighted F1, macro one-vs-rest AUC, quadratic weighted kappa (graded labels only).
CLASS_METRICS = ("accuracy", "balanced_accuracy", "f1", "auc", "kappa")


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Rows as CSV (columns in first-seen order; NaN and None as empty cells)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if _missing(v) else v for k, v in r.items()})
    return path


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(v: Any, digits: int = 4) -> str:
    if _missing(v):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def pm(s: SeedStats, digits: int = 4) -> str:
    """'mean ± std' ('mean' alone with one seed)."""
    if s.n == 0:
        return "–"
    return fmt(s.mean, digits) if math.isnan(s.std) else f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"


def md_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# --- the paired study -------------------------------------------------------------------------
# Rows are results.csv rows of featcache.study.ablation (read back from the CSV too: values may be
# strings): `arm` (number), `compared_to`, `label_fraction`, `test`, `test_title`, `seed` and metrics.


def setting(row: dict[str, Any]) -> str:
    """A row's label regime and test set as a key ('0.1 · orientation')."""
    return f"{float(row['label_fraction']):g} · {row['test']}"


def fraction_label(fraction: float) -> str:
    """'full labels' for 1, else the share ('10% labels')."""
    return "full labels" if fraction >= 1 else f"{fraction * 100:g}% labels"


def setting_title(row: dict[str, Any]) -> str:
    """The same, as tables say it ('10% labels, coronal + sagittal test')."""
    return f"{fraction_label(float(row['label_fraction']))}, {row.get('test_title') or row['test'] + ' test'}"


def _titles(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    return {setting(r): setting_title(r) for r in rows}


def _settings(rows: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(setting(r) for r in rows))


def score_column(rows: Sequence[dict[str, Any]]) -> str:
    """The column a row's test is judged by: `score` (per-image Dice for a segmentation test set,
    accuracy for a classification one: the row's `metric`); results.csv files written before it
    existed have `dice_mean` only."""
    return "score" if any("score" in r for r in rows) else "dice_mean"


def metric_name(rows: Sequence[dict[str, Any]], where: str | None = None) -> str:
    """'Dice', 'accuracy', or 'score' where a table mixes them (in setting `where`, or all rows)."""
    names = {str(r.get("metric") or "dice") for r in rows if where is None or setting(r) == where}
    return {"dice": "Dice", "accuracy": "accuracy"}.get(names.pop(), "score") if len(names) == 1 else "score"


def group_stats(rows: Sequence[dict[str, Any]], column: str) -> dict[tuple[str, int], SeedStats]:
    """(setting, arm) -> seed statistics of `column`."""
    keys = dict.fromkeys((setting(r), int(r["arm"])) for r in rows)
    return {k: seed_stats([_num(r.get(column)) for r in rows if (setting(r), int(r["arm"])) == k])
            for k in keys}


def _num(v: Any) -> float:
    return math.nan if _missing(v) or v == "" else float(v)


def by_seed(rows: Sequence[dict[str, Any]], where: str, arm: int, column: str | None = None
            ) -> dict[int, float]:
    column = column or score_column(rows)
    return {int(r["seed"]): _num(r[column]) for r in rows if setting(r) == where and int(r["arm"]) == arm}


def paired(rows: Sequence[dict[str, Any]], where: str, a: int, b: int) -> Paired:
    """Arm a minus arm b in one setting, paired by seed."""
    return paired_difference(by_seed(rows, where, a), by_seed(rows, where, b))


def findings(rows: Sequence[dict[str, Any]], names: dict[int, str], reference: int) -> list[str]:
    """Computed sentences per setting: the last arm against the reference, and every arm whose
    interval against the reference excludes zero."""
    out = []
    titles = _titles(rows)
    for where in _settings(rows):
        arms = _arms_in(rows, where)
        ref = reference_in(rows, where, reference)
        for k in arms:
            if k == ref:
                continue
            d = paired(rows, where, k, ref)
            if k == arms[-1] or d.verdict in ("better", "worse"):
                out.append(f"{titles[where]} — {k} ({names[k]}) vs {ref}: Δ {metric_name(rows, where)} "
                           f"{d.text()}, n={d.n}: {d.verdict}")
    return out


def _arms_in(rows: Sequence[dict[str, Any]], where: str) -> list[int]:
    """The arms with rows in setting `where` (the teacher's reference row left out)."""
    return sorted({int(r["arm"]) for r in rows if setting(r) == where} - {TEACHER_ARM})


def reference_in(rows: Sequence[dict[str, Any]], where: str, reference: int) -> int:
    """The reference arm, or in a setting it has no rows in (a task it does not train: a study of
    one task alone beside both together) the first arm that has."""
    arms = _arms_in(rows, where)
    return reference if reference in arms or not arms else arms[0]


def summary_columns(reference: int, metric: str = "Dice") -> tuple[str, ...]:
    return ("#", "arm", "setting", metric, "HD95", "train s", f"Δ vs {reference} [95% CI]",
            "Δ vs the one before [95% CI]")


# The teacher's reference row (featcache/study/reference.py) is "arm" 0: paired against the
# reference arm like any arm, never the arm before another, listed last in its setting as "T".
TEACHER_ARM = 0


def _parent(rows: Sequence[dict[str, Any]], arm: int, arms: list[int]) -> int | None:
    """The arm's compared_to when it ran, else the nearest arm before it that ran."""
    if arm == TEACHER_ARM:
        return None
    named = next((int(r["compared_to"]) for r in rows
                  if int(r["arm"]) == arm and not _missing(r.get("compared_to")) and r["compared_to"] != ""),
                 None)
    return named if named in arms else max((c for c in arms if TEACHER_ARM < c < arm), default=None)


def ablation_summary(rows: Sequence[dict[str, Any]], names: dict[int, str], reference: int
                     ) -> tuple[list[list[Any]], str]:
    """Per (setting, arm): the summary_columns cells; and the caption stating the rule."""
    dice, hd = group_stats(rows, score_column(rows)), group_stats(rows, "hd95_mean")
    secs = group_stats(rows, "train_seconds")
    seeds = sorted({int(r["seed"]) for r in rows})
    unit = next((r["hd95_unit"] for r in rows if not _missing(r.get("hd95_unit")) and r["hd95_unit"]), "px")
    order, titles = _settings(rows), _titles(rows)
    body = []
    for where, k in sorted(dice, key=lambda wk: (order.index(wk[0]), wk[1] or math.inf)):
        prev = _parent(rows, k, _arms_in(rows, where))
        ref = reference_in(rows, where, reference)
        named = f"(vs {ref}) " if ref != reference else ""
        vs_ref = "–" if k == ref else named + paired(rows, where, k, ref).text()
        vs_prev = paired(rows, where, k, prev).text() if prev is not None else "–"
        body.append(["T" if k == TEACHER_ARM else k, names[k], titles[where], pm(dice[(where, k)]),
                     pm(hd[(where, k)], 2), pm(secs[(where, k)], 0), vs_ref, vs_prev])
    judged = ("Per-image Dice" if metric_name(rows) == "Dice" else
              "The score (per-image Dice for a segmentation test set, accuracy for a classification one, "
              "as its setting says)")
    caption = (f"{judged} and HD95 ({unit}) averaged per run, then mean ± std over seeds {seeds}. "
               f"{PAIRED_RULE}. The one before: the arm k changes one thing of (k-1 unless the arm "
               "names another, or the nearest one before it in that setting); in a setting without "
               "the reference arm's rows (a task that arm does not train) Δ is against the first arm "
               "there, named in the cell.")
    if any(k == TEACHER_ARM for _, k in dice):
        caption += (" T: the teacher itself, as output distillation used it: the best validated probe "
                    "of the first arm with output distillation, on the same test images (its Dice "
                    "at the mask's resolution in the student's frame).")
    return body, caption


def _gate_table(rows: Sequence[dict[str, Any]], names: dict[int, str], teachers: Sequence[str]) -> list[str]:
    """Where teachers compete: the learned gate weights per (label regime, arm). Gates do not
    depend on the test set: the first test set's rows stand for each run."""
    if not teachers:
        return []
    first = rows[0]["test"] if rows else None
    gates = {t: group_stats([r for r in rows if r["test"] == first], f"gate_{t}") for t in teachers}
    gated = [wk for wk, s in gates[teachers[0]].items() if not math.isnan(s.mean)]
    if not gated:
        return []
    titles = _titles(rows)
    body = [[k, names[k], titles[where]] + [pm(gates[t][(where, k)], 3) for t in teachers]
            for where, k in gated]
    return ["", "#### Learned teacher-gate weights (where teachers compete; mean over training samples, "
                "last epoch)", "",
            md_table(["#", "arm", "setting"] + [f"gate: {t}" for t in teachers], body)]


def ablation_markdown(rows: Sequence[dict[str, Any]], names: dict[int, str], notes: Sequence[str],
                      teachers: Sequence[str], reference: int) -> str:
    """table.md: per setting and arm the Dice over seeds and the paired differences, the learned
    gate weights and computed findings."""
    body, caption = ablation_summary(rows, names, reference)
    # Heading levels that embed under a README section (### and ####) as written.
    parts = ["### Study", "", caption, "", md_table(summary_columns(reference, metric_name(rows)), body)]
    parts += _gate_table(rows, names, teachers)
    first = {r["run_dir"] for r in rows if str(r.get("best_epoch")) == "1"}
    if first:
        runs = len({r["run_dir"] for r in rows})
        notes = [*notes, f"{len(first)} of {runs} runs kept their epoch-1 checkpoint (validation Dice "
                         "never improved afterwards); such runs barely differ from the initialisation"]
    found = findings(rows, names, reference)
    if found:
        parts += ["", "#### Findings (computed from the rows above)", ""] + [f"- {f}" for f in found]
    if notes:
        parts += ["", "#### Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(parts) + "\n"
