"""Paper pipeline: every local teacher over every local dataset, one jointly distilled student,
evaluation per dataset, and a paper-style table.

    python pipelines/paper.py --config study.yaml [--out DIR]

The study file format is documented in manifests/paper-example.yaml (edit its paths first).
Writes OUT/table.md, OUT/table.tex, OUT/results.csv (one row per dataset), OUT/cache.csv (one row
per store entry) and OUT/run/ (the distillation run). Complete store entries are cache hits and a
finished run is reused, so a re-run only redoes what is missing.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console

from featcache.cli.common import table
from featcache.cli.study_display import StudyDisplay
from featcache.errors import FeatcacheError
from featcache.study.paper import run_paper
from featcache.study.paper_config import load_study_config
from featcache.study.tables import fmt

_EXAMPLE = "Example: python pipelines/paper.py --config manifests/paper-example.yaml"
_USAGE = "\n    python pipelines/paper.py --config study.yaml [--out DIR]\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.replace(_USAGE, ""), epilog=_EXAMPLE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True,
                   help="the study file (YAML): datasets with their roots, teachers with their checkpoints, "
                        "student and training; format and comments in manifests/paper-example.yaml")
    p.add_argument("--out", type=Path, help="output folder (default: the study file's `out`)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    console = Console()
    start = time.perf_counter()
    try:
        config = load_study_config(args.config)
        with StudyDisplay(console) as display:
            result = run_paper(config, args.out, display)
    except FeatcacheError as exc:
        console.print(f"[red]{exc}")
        return 1
    rows = [(r["dataset"], fmt(r["n_test"]), f"{fmt(r['dice_mean'])} ± {fmt(r['dice_std'])}",
             fmt(r["pooled_dice"]), fmt(r["hd95_mean"], 2)) for r in result.rows]
    console.print(table("distilled student, test split", ["dataset", "n", "per-image Dice",
                                                           "pooled Dice", "HD95"], rows,
                        caption=f"student {result.student_params / 1e6:.3f}M params; compression "
                                f"{result.compression:.1f}x (teachers' combined / student)"))
    console.print(table("feature cache", ["teacher", "dataset", "status", "MiB"],
                        [(c["teacher"], c["dataset"], c["status"], f"{c['size_mib']:.2f}")
                         for c in result.cache]))
    console.print(f"wrote {result.out}/table.md, table.tex, results.csv, cache.csv "
                  f"in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
