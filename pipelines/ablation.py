"""Ablation of the method on the embedded demo (real LiteMedSAM + an uninformative random ViT-Tiny).

    python pipelines/ablation.py [--quick] [--seeds 0,1,2] [--epochs N] [--num-slices N]
                                 [--low-data-fraction 0.1] [--out DIR] [--store URL]

Runs configurations 1-6 (see featcache/study/ablation.py) x {full, low-data} x seeds: extracts what
the store lacks, trains, evaluates on the test split, and writes OUT/results.csv, OUT/table.md and
OUT/ablation.png. Finished runs are reused on a re-run (resumable).

Default sizes (36 runs: 6 configurations x 2 regimes x 3 seeds) fit about 30 minutes on 2 CPU
cores: 40 demo slices (28 train, 3 val, 9 test; the low-data regime keeps 10% = 3 training
slices, so num_slices is not raised), student input 96 px, 6 epochs in the full-data regime and
18 in the low-data one (one optimizer step per epoch there). Measured on this shared machine: the
demo manifest trains ~15 s/epoch at 128 px, ~8-12 s/epoch at 96 px (4 steps of 8); a low-data
epoch ~2 s; evaluation ~3-5 s per run. LiteMedSAM extraction of the 40 slices (~3 min) is a
cache hit when the quickstart already filled the store.
--quick: 1 seed, 2 epochs (12 in the low-data regime), configurations 1, 2, 5 and 6 (supervised,
+distillation, full method, uninformative teacher only): about 5 minutes on this machine once
the store holds the features. One seed gives no spread, so its table draws no conclusions.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console

from featcache.errors import ConfigError, FeatcacheError
from featcache.study.ablation import BY_NUMBER, AblationSettings, run_ablation
from featcache.study.display import StudyDisplay, rich_table
from featcache.study.plots import ablation_plot
from featcache.study.tables import (
    SUMMARY_COLUMNS,
    ablation_markdown,
    ablation_summary,
    findings,
    fmt,
    write_csv,
)

QUICK = {"seeds": [0], "epochs": 2, "low_data_epochs": 12, "configs": [1, 2, 5, 6]}


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{flag} {text!r}: expected comma-separated integers, e.g. 0,1,2") from None


def parse_args(argv: list[str]) -> AblationSettings:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="1 seed, 2 epochs (12 low-data), configurations 1, 2, 5, 6")
    p.add_argument("--seeds", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--epochs", type=int, help="epochs per full-data run (default 6)")
    p.add_argument("--low-data-epochs", type=int, help="epochs per low-data run (default 3 x --epochs)")
    p.add_argument("--configs", help="comma-separated configuration numbers (default 1-6)")
    p.add_argument("--num-slices", type=int, help="demo slices (default 40: 28 train, 3 val, 9 test)")
    p.add_argument("--image-size", type=int, help="student input size (default 96)")
    p.add_argument("--low-data-fraction", type=float, help="train_fraction of the low-data regime (0.1)")
    p.add_argument("--out", type=Path, help="output folder (default runs/ablation, runs/ablation-quick)")
    p.add_argument("--store", help="feature store URL (default $FEATCACHE_STORE or ./featcache-store)")
    a = p.parse_args(argv)
    s = AblationSettings(out=Path("runs/ablation-quick" if a.quick else "runs/ablation"), store=a.store)
    if a.quick:
        s.seeds, s.configs = list(QUICK["seeds"]), list(QUICK["configs"])
        s.epochs, s.low_data_epochs = QUICK["epochs"], QUICK["low_data_epochs"]
    if a.seeds:
        s.seeds = _ints(a.seeds, "--seeds")
    if a.configs:
        s.configs = _ints(a.configs, "--configs")
    for name in ("epochs", "low_data_epochs", "num_slices", "image_size", "low_data_fraction", "out"):
        if getattr(a, name) is not None:
            setattr(s, name, getattr(a, name))
    return s


def main(argv: list[str] | None = None) -> int:
    console = Console()
    try:
        settings = parse_args(sys.argv[1:] if argv is None else argv)
        start = time.perf_counter()
        console.print(f"ablation: configurations {settings.configs}, seeds {settings.seeds}, "
                      f"{settings.epochs} epochs, image size {settings.image_size}, "
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
        console.print(f"[red]{exc}")
        return 1
    runs = [(r["config"], r["regime"], r["seed"], fmt(r["dice_mean"]), fmt(r["hd95_mean"], 2),
             fmt(r["train_seconds"], 0), fmt(r["gate_real"], 3), fmt(r["gate_uninformative"], 3))
            for r in rows]
    console.print(rich_table("ablation runs (test split)", ["#", "regime", "seed", "Dice", "HD95",
                                                            "train s", "gate real", "gate uninf."], runs))
    body, caption = ablation_summary(rows, names)
    console.print(rich_table("ablation (mean ± std over seeds)", SUMMARY_COLUMNS[:1] + SUMMARY_COLUMNS[2:],
                             [r[:1] + r[2:] for r in body], caption=caption))
    console.print("configurations: " + "; ".join(f"{k} {names[k]}" for k in sorted(settings.configs)))
    for line in findings(rows):
        console.print(f"• {line}", highlight=False)
    console.print(f"wrote {out}/results.csv, table.md, ablation.png in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
