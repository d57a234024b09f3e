"""Ablation of the method on the embedded demo (real LiteMedSAM + an uninformative random ViT-Tiny).

    python pipelines/ablation.py [--quick] [--seeds 0,1,2,3,4] [--steps N] [--pretrain-steps N]
                                 [--configs 1,2,...] [--low-data-fraction 0.1] [--out DIR] [--store URL]

Configurations 1-6 (see featcache/study/ablation.py: student alone random / ImageNet-pretrained,
+ distillation, + adaptive gates, + return decoder, + feature pretraining) x {full labels, 10%
labels} x seeds, each scored on the axial test slices and on coronal + sagittal test slices
(orientation transfer). Extracts what the store lacks, trains, evaluates, and writes
OUT/results.csv, OUT/table.md (paired differences with 95% CIs) and OUT/ablation.png. Finished
runs are reused on a re-run (resumable).

Defaults: 5 seeds, 128 px, batch 4, 40 optimizer steps per run (full labels: 28 training
slices, 6 epochs of 7 steps; 10%: 3 slices, 40 epochs of one step), 100 pretraining steps over 84
unlabelled slices (the 28 labelled-set training slices and 56 coronal/sagittal pool slices).
Runs go seed by seed, so a study stopped part-way holds complete pairs for the seeds it finished.
--quick: seeds 0 and 1, 20 steps, 20 pretraining steps, all configurations: a few minutes once
the store holds the features; its numbers say nothing about the method.
The full run (5 seeds, configurations 1-7) took about 2.5 hours on 2 CPU cores (2026-11-30).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console

from featcache.cli.app import as_flags
from featcache.cli.common import table
from featcache.cli.study_display import StudyDisplay
from featcache.errors import ConfigError, FeatcacheError
from featcache.study.ablation import BY_NUMBER, AblationSettings, run_ablation, total_train_seconds
from featcache.study.plots import ablation_plot
from featcache.study.tables import (
    SUMMARY_COLUMNS,
    ablation_markdown,
    ablation_summary,
    findings,
    fmt,
    write_csv,
)

QUICK = {"seeds": [0, 1], "steps": 20, "pretrain_steps": 20}


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated integers, e.g. 0,1,2") from None


def parse_args(argv: list[str]) -> AblationSettings:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="seeds 0,1, 20 steps, 20 pretraining steps (a smoke test, not a result)")
    p.add_argument("--seeds", help="comma-separated seeds (default 0,1,2,3,4)")
    p.add_argument("--steps", type=int, help="optimizer steps per labelled run (default 40)")
    p.add_argument("--pretrain-steps", type=int, help="feature-pretraining steps (default 100)")
    p.add_argument("--configs", help="comma-separated configuration numbers (default 1-6)")
    p.add_argument("--num-slices", type=int, help="demo slices (default 40: 28 train, 3 val, 9 test)")
    p.add_argument("--image-size", type=int, help="student input size (default 128)")
    p.add_argument("--low-data-fraction", type=float, help="train_fraction of the low-data regime (0.1)")
    p.add_argument("--out", type=Path, help="output folder (default runs/ablation, runs/ablation-quick)")
    p.add_argument("--store", help="feature store URL (default $FEATCACHE_STORE or ./featcache-store)")
    a = p.parse_args(argv)
    s = AblationSettings(out=Path("runs/ablation-quick" if a.quick else "runs/ablation"), store=a.store)
    if a.quick:
        s.seeds, s.steps, s.pretrain_steps = list(QUICK["seeds"]), QUICK["steps"], QUICK["pretrain_steps"]
    if a.seeds:
        s.seeds = _ints(a.seeds, "--seeds")
    if a.configs:
        s.configs = _ints(a.configs, "--configs")
    for name in ("steps", "pretrain_steps", "num_slices", "image_size", "low_data_fraction", "out"):
        if getattr(a, name) is not None:
            setattr(s, name, getattr(a, name))
    return s


def main(argv: list[str] | None = None) -> int:
    console = Console()
    try:
        settings = parse_args(sys.argv[1:] if argv is None else argv)
        start = time.perf_counter()
        console.print(f"ablation: configurations {settings.configs}, seeds {settings.seeds}, "
                      f"{settings.steps} steps ({settings.pretrain_steps} pretraining), "
                      f"image size {settings.image_size}, "
                      f"{settings.num_slices} slices, low-data fraction {settings.low_data_fraction:g}")
        with StudyDisplay(console) as display:
            rows, notes = run_ablation(settings, display)
        for note in notes:
            console.print(f"[yellow]{note}")
        names = {k: c.name for k, c in BY_NUMBER.items()}
        out = settings.out
        write_csv(out / "results.csv", rows)
        (out / "table.md").write_text(ablation_markdown(rows, names, notes, list(settings.teachers)))
        ablation_plot(rows, names, out / "ablation.png")
    except FeatcacheError as exc:
        # Settings are this script's options: argparse names low_data_fraction --low-data-fraction.
        flags = {field: "--" + field.replace("_", "-") for field in exc.fields}
        console.print(f"[red]{as_flags(str(exc), exc.fields, flags)}")
        return 1
    runs = [(r["config"], r["regime"], r["test"], r["seed"], fmt(r["dice_mean"]), fmt(r["hd95_mean"], 2),
             fmt(r["train_seconds"], 0), fmt(r["gate_real"], 3), fmt(r["gate_uninformative"], 3))
            for r in rows]
    console.print(table("ablation runs", ["#", "regime", "test", "seed", "Dice", "HD95", "train s",
                                          "gate real", "gate uninf."], runs))
    body, caption = ablation_summary(rows, names)
    console.print(table("ablation (mean ± std over seeds; paired differences)",
                        SUMMARY_COLUMNS[:1] + SUMMARY_COLUMNS[2:], [r[:1] + r[2:] for r in body],
                        caption=caption))
    console.print("configurations: " + "; ".join(f"{k} {names[k]}" for k in sorted(settings.configs)))
    for line in findings(rows, names):
        console.print(f"• {line}", highlight=False)
    console.print(f"wrote {out}/results.csv, table.md, ablation.png in {time.perf_counter() - start:.0f} s "
                  f"({total_train_seconds(rows):.0f} s of it training)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
