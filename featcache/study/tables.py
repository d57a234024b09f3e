"""Result files of the study pipelines: CSV rows, markdown tables with computed findings."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from featcache.study.stats import PAIRED_RULE, Paired, SeedStats, paired_difference, seed_stats


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

SETTING_NAMES = {"full · axial": "full labels, axial test", "low · axial": "10% labels, axial test",
                 "full · orientation": "full labels, coronal + sagittal test (orientation transfer)",
                 "low · orientation": "10% labels, coronal + sagittal test (orientation transfer)"}


def setting(row: dict[str, Any]) -> str:
    """A row's training regime, with its test set when it has one ('low · orientation')."""
    return f"{row['regime']} · {row['test']}" if row.get("test") else str(row["regime"])


def group_stats(rows: Sequence[dict[str, Any]], column: str) -> dict[tuple[str, int], SeedStats]:
    """(setting, config) -> seed statistics of `column`."""
    keys = dict.fromkeys((setting(r), int(r["config"])) for r in rows)
    return {k: seed_stats([_num(r[column]) for r in rows if (setting(r), int(r["config"])) == k])
            for k in keys}


def _num(v: Any) -> float:
    return math.nan if _missing(v) or v == "" else float(v)


def by_seed(rows: Sequence[dict[str, Any]], where: str, config: int, column: str = "dice_mean"
            ) -> dict[int, float]:
    return {int(r["seed"]): _num(r[column]) for r in rows
            if setting(r) == where and int(r["config"]) == config}


def paired(rows: Sequence[dict[str, Any]], where: str, a: int, b: int) -> Paired:
    """Configuration a minus b in one setting, paired by seed."""
    return paired_difference(by_seed(rows, where, a), by_seed(rows, where, b))


BASELINE = 2  # the pretrained student alone: the fair baseline every configuration is held to


def findings(rows: Sequence[dict[str, Any]], names: dict[int, str]) -> list[str]:
    """Computed sentences per setting: the last configuration against the baseline, and every
    configuration whose interval against the baseline excludes zero."""
    out = []
    configs = sorted({int(r["config"]) for r in rows})
    for where in dict.fromkeys(setting(r) for r in rows):
        if BASELINE not in configs:
            break
        label = SETTING_NAMES.get(where, where)
        for k in configs:
            if k == BASELINE:
                continue
            d = paired(rows, where, k, BASELINE)
            if k == configs[-1] or d.verdict in ("better", "worse"):
                out.append(f"{label} — {k} ({names[k]}) vs {BASELINE}: Δ Dice {d.text()}, n={d.n}: "
                           f"{d.verdict}")
    return out


SUMMARY_COLUMNS = ("#", "configuration", "setting", "Dice", "HD95", "train s",
                   f"Δ vs {BASELINE} [95% CI]", "Δ vs the one before [95% CI]")


def ablation_summary(rows: Sequence[dict[str, Any]], names: dict[int, str]) -> tuple[list[list[Any]], str]:
    """Per (setting, configuration): the SUMMARY_COLUMNS cells; and the caption stating the rule."""
    dice, hd = group_stats(rows, "dice_mean"), group_stats(rows, "hd95_mean")
    secs = group_stats(rows, "train_seconds")
    seeds = sorted({int(r["seed"]) for r in rows})
    unit = next((r["hd95_unit"] for r in rows if not _missing(r.get("hd95_unit"))), "px")
    configs = sorted({k for _, k in dice})
    body = []
    for where, k in sorted(dice, key=lambda wk: (list(dict.fromkeys(setting(r) for r in rows)).index(wk[0]),
                                                 wk[1])):
        parent = next((int(r["parent"]) for r in rows if int(r["config"]) == k and r.get("parent")), None)
        prev = parent if parent in configs else max((c for c in configs if c < k), default=None)
        has_base = k != BASELINE and (where, BASELINE) in dice
        vs_base = paired(rows, where, k, BASELINE).text() if has_base else "–"
        vs_prev = paired(rows, where, k, prev).text() if prev is not None else "–"
        body.append([k, names[k], SETTING_NAMES.get(where, where), pm(dice[(where, k)]),
                     pm(hd[(where, k)], 2), pm(secs[(where, k)], 0), vs_base, vs_prev])
    caption = (f"Per-image Dice and HD95 ({unit}) averaged per run, then mean ± std over seeds {seeds}. "
               f"{PAIRED_RULE}. The one before: the configuration k changes one thing of (k-1 unless "
               "the configuration names another).")
    return body, caption


def ablation_markdown(rows: Sequence[dict[str, Any]], names: dict[int, str], notes: Sequence[str],
                      roles: Sequence[str]) -> str:
    """table.md: per setting and configuration the Dice over seeds and the paired differences,
    the learned gate weights and computed findings."""
    body, caption = ablation_summary(rows, names)
    gates = {role: group_stats(rows, f"gate_{role}") for role in roles}
    # Heading levels that embed under a README section (### and ####) as written.
    parts = ["### Ablation", "", caption, "", md_table(SUMMARY_COLUMNS, body)]
    gated = [(where, k) for where, k in (gates[roles[0]] if roles else {})
             if where.endswith("axial") and not math.isnan(gates[roles[0]][(where, k)].mean)]
    gate_rows = [[k, names[k], SETTING_NAMES.get(where, where)] + [pm(gates[r][(where, k)], 3) for r in roles]
                 for where, k in gated]
    if gate_rows:
        parts += ["", "#### Learned teacher-gate weights (where teachers compete; mean over training "
                      "samples, last epoch)", "",
                  md_table(["#", "configuration", "setting"] + [f"gate: {r} teacher" for r in roles],
                           gate_rows)]
    first = {r["run_dir"] for r in rows if str(r.get("best_epoch")) == "1"}
    if first:
        runs = len({r["run_dir"] for r in rows})
        notes = [*notes, f"{len(first)} of {runs} runs kept their epoch-1 checkpoint (validation Dice "
                         "never improved afterwards); such runs barely differ from the initialisation"]
    found = findings(rows, names)
    if found:
        parts += ["", "#### Findings (computed from the rows above)", ""] + [f"- {f}" for f in found]
    if notes:
        parts += ["", "#### Notes", ""] + [f"- {n}" for n in notes]
    return "\n".join(parts) + "\n"
