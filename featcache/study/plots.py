"""The study figure: the test score per arm (per-image Dice, or accuracy for a classification test
set), one panel per setting (label fraction x test set), seed points joined across arms (the
pairing) and mean ± std bars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402

from featcache.study.tables import (  # noqa: E402
    TEACHER_ARM,
    group_stats,
    metric_name,
    score_column,
    setting,
    setting_title,
)


def ablation_plot(rows: Sequence[dict[str, Any]], names: dict[int, str], path: Path) -> Path:
    """Each panel: per arm the per-seed score (dots) and mean ± std (bar), its metric on its axis."""
    rows = [r for r in rows if int(r["arm"]) != TEACHER_ARM]  # the figure compares arms
    settings = list(dict.fromkeys(setting(r) for r in rows))
    titles = {setting(r): setting_title(r) for r in rows}
    column = score_column(rows)
    dice = group_stats(rows, column)
    configs = sorted({int(r["arm"]) for r in rows})
    seeds = sorted({int(r["seed"]) for r in rows})
    mixed = metric_name(rows) == "score"  # Dice and accuracy panels: each its own axis
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 4.4), sharey=not mixed,
                             squeeze=False)
    for ax, where in zip(axes[0], settings, strict=True):
        value = {(int(r["arm"]), int(r["seed"])): float(r[column])
                 for r in rows if setting(r) == where}
        for seed in seeds:  # one faint line per seed: the comparison is paired by seed
            xs = [x for x, k in enumerate(configs) if (k, seed) in value]
            ys = [value[(configs[x], seed)] for x in xs]
            ax.plot(xs, ys, color="tab:blue", alpha=0.25, lw=1)
            ax.scatter(xs, ys, s=14, color="tab:blue", alpha=0.7, zorder=3)
        for x, k in enumerate(configs):
            if (where, k) in dice:
                s = dice[(where, k)]
                ax.errorbar(x, s.mean, yerr=0 if math.isnan(s.std) else s.std, fmt="_", color="black",
                            markersize=18, capsize=5, zorder=4)
        ax.set_xticks(range(len(configs)), [str(k) for k in configs])
        ax.set_xlabel("arm")
        ax.set_title(titles[where], fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        if mixed or ax is axes[0][0]:
            name = metric_name(rows, where)
            ax.set_ylabel("test Dice (per-image mean)" if name == "Dice" else f"test {name}")
    legend = "; ".join(f"{k}: {names[k]}" for k in configs)
    fig.text(0.5, 0.005, legend, ha="center", va="bottom", fontsize=6.5, wrap=True)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def probe_plot(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """`featcache probe`'s figure: per dataset, a validation and a test bar per teacher level,
    in the table's order (best validation first)."""
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(4.0, 1.1 * len(rows) / len(datasets) + 2), 4.2),
                             sharey=True, squeeze=False)
    for ax, name in zip(axes[0], datasets, strict=True):
        mine = [r for r in rows if r["dataset"] == name]
        xs = range(len(mine))
        ax.bar([x - 0.2 for x in xs], [r["val_score"] for r in mine], 0.4, label="validation")
        ax.bar([x + 0.2 for x in xs], [r["test_score"] for r in mine], 0.4, label="test", alpha=0.6)
        ax.set_xticks(list(xs), [f"{r['teacher']}\n{r['level']}" for r in mine], fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("linear probe score (Dice or accuracy)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
