"""The ablation figure: test Dice per configuration, one panel per regime, seed points and error bars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from featcache.study.tables import group_stats  # noqa: E402


def ablation_plot(rows: Sequence[dict[str, Any]], names: dict[int, str], path: Path) -> Path:
    """Each panel: per configuration the per-seed Dice (dots, jittered) and mean ± std (bar)."""
    regimes = list(dict.fromkeys(r["regime"] for r in rows))
    dice = group_stats(rows, "dice_mean")
    configs = sorted({int(r["config"]) for r in rows})
    fig, axes = plt.subplots(1, len(regimes), figsize=(4.5 * len(regimes), 4.2), sharey=True, squeeze=False)
    for ax, regime in zip(axes[0], regimes, strict=True):
        for x, k in enumerate(configs):
            points = [float(r["dice_mean"]) for r in rows if r["regime"] == regime and int(r["config"]) == k]
            if not points:
                continue
            s = dice[(regime, k)]
            jitter = np.linspace(-0.12, 0.12, len(points)) if len(points) > 1 else [0.0]
            ax.scatter(x + np.asarray(jitter), points, s=18, color="tab:blue", alpha=0.7, zorder=3)
            ax.errorbar(x, s.mean, yerr=0 if math.isnan(s.std) else s.std, fmt="_", color="black",
                        markersize=18, capsize=5, zorder=4)
        ax.set_xticks(range(len(configs)), [str(k) for k in configs])
        ax.set_xlabel("configuration")
        ax.set_title(f"{regime} data")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test Dice (per-image mean)")
    legend = "; ".join(f"{k}: {names[k]}" for k in configs)
    fig.text(0.5, 0.005, legend, ha="center", va="bottom", fontsize=6.5, wrap=True)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
