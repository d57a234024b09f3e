"""Result files of the study pipelines: CSV rows, markdown tables with computed findings."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from featcache.study.stats import RULE, SeedStats, Step, compare, effect_sentence, seed_stats


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


# --- ablation ---------------------------------------------------------------------------------

def group_stats(rows: Sequence[dict[str, Any]], column: str) -> dict[tuple[str, int], SeedStats]:
    """(regime, config) -> seed statistics of `column`."""
    keys = dict.fromkeys((r["regime"], r["config"]) for r in rows)
    return {k: seed_stats([_num(r[column]) for r in rows if (r["regime"], r["config"]) == k]) for k in keys}


def _num(v: Any) -> float:
    return math.nan if _missing(v) or v == "" else float(v)


def steps(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, int], Step]:
    """(regime, k) -> the step rule for configuration k against k-1 (both present)."""
    dice = group_stats(rows, "dice_mean")
    return {(regime, k): compare(dice[(regime, k)], dice[(regime, k - 1)])
            for regime, k in dice if (regime, k - 1) in dice}


def findings(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Computed sentences for the questions an ablation answers, per regime."""
    dice = group_stats(rows, "dice_mean")
    questions = [(2, 1, "distillation from the real teacher (2 vs 1)"),
                 (5, 1, "the full method vs the student alone (5 vs 1)"),
                 (5, 6, "real + uninformative vs uninformative teacher only (5 vs 6)"),
                 (6, 1, "distilling from the uninformative teacher only (6 vs 1)")]
    out = []
    for regime in dict.fromkeys(r for r, _ in dice):
        for a, b, what in questions:
            if (regime, a) in dice and (regime, b) in dice:
                out.append(f"{regime} data — " + effect_sentence(what, compare(dice[(regime, a)],
                                                                                dice[(regime, b)])))
    return out


SUMMARY_COLUMNS = ("#", "configuration", "regime", "Dice", "HD95", "params", "train s", "Δ vs k-1",
                   "pooled std", "exceeds spread")


def ablation_summary(rows: Sequence[dict[str, Any]], names: dict[int, str]) -> tuple[list[list[Any]], str]:
    """Per (regime, configuration): the SUMMARY_COLUMNS cells; and the caption stating the rule."""
    dice, hd = group_stats(rows, "dice_mean"), group_stats(rows, "hd95_mean")
    secs, params = group_stats(rows, "train_seconds"), group_stats(rows, "params")
    step = steps(rows)
    seeds = sorted({int(r["seed"]) for r in rows})
    unit = next((r["hd95_unit"] for r in rows if not _missing(r.get("hd95_unit"))), "px")
    body = []
    for regime, k in dice:
        s = step.get((regime, k))
        body.append([k, names[k], regime, pm(dice[(regime, k)]), pm(hd[(regime, k)], 2),
                     f"{params[(regime, k)].mean / 1e6:.3f}M", pm(secs[(regime, k)], 0),
                     fmt(s.delta, 4) if s else "–", fmt(s.pooled_std, 4) if s else "–",
                     s.verdict if s else "–"])
    caption = (f"Test split, per-image Dice and HD95 ({unit}) averaged per run, then mean ± std over "
               f"seeds {seeds}. Δ: mean Dice of configuration k minus k-1 (same regime). "
               f"Exceeds spread: {RULE}.")
    return body, caption


def ablation_markdown(rows: Sequence[dict[str, Any]], names: dict[int, str], notes: Sequence[str],
                      roles: Sequence[str]) -> str:
    """table.md: mean ± std per configuration and regime, the step rule, gates and findings."""
    body, caption = ablation_summary(rows, names)
    dice = group_stats(rows, "dice_mean")
    parts = ["# Ablation", "", caption, "", md_table(SUMMARY_COLUMNS, body)]
    gate_rows = [[k, names[k], regime] + [pm(group_stats(rows, f"gate_{role}")[(regime, k)], 3)
                                         for role in roles]
                 for regime, k in dice if k in (3, 4, 5)]
    if gate_rows:
        parts += ["", "## Learned teacher-gate weights (mean over training samples, last epoch)", "",
                  md_table(["#", "configuration", "regime"] + [f"gate: {r} teacher" for r in roles],
                           gate_rows)]
    first = [r for r in rows if str(r.get("best_epoch")) == "1"]
    if first:
        notes = [*notes, f"{len(first)} of {len(rows)} runs kept their epoch-1 checkpoint (validation Dice "
                         "never improved afterwards); such runs barely differ from the initialisation"]
    found = findings(rows)
    if found:
        parts += ["", "## Findings (computed from the rows above)", ""] + [f"- {f}" for f in found]
    if notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(parts) + "\n"
