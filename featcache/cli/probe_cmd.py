"""`featcache probe --manifest m.yaml`: rank every teacher and level on the manifest's labelled
data from the cache (a linear probe each; featcache/study/probe_rank.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from featcache.cli.app import app, console
from featcache.cli.common import table


@app.command(epilog="Example: featcache probe --manifest manifests/demo.yaml")
def probe(
    manifest: Annotated[Path, typer.Option(help="Distillation manifest (YAML): its datasets, teachers, "
                                                "training.train_fraction and seed; see manifests/.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default: runs/probe-<manifest name>).")]
    = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a manifest field: key.path=value (repeatable), "
                      "e.g. training.train_fraction=0.1.")] = None,
) -> None:
    """Which teacher is worth distilling for my data? A linear probe per teacher level, fitted on
    the labelled training images from the cache, scored on validation and test (Dice or accuracy)."""
    from featcache.manifest import load_manifest
    from featcache.study.probe_rank import COLUMNS, rank_probes, write_ranking

    start = time.perf_counter()
    m = load_manifest(manifest, set_ or [])

    def done(row: dict) -> None:
        console.print(f"{row['dataset']}: {row['teacher']} {row['level']}: validation "
                      f"{row['val_score']:.4f}, test {row['test_score']:.4f}", highlight=False)

    ranking = rank_probes(m, done)
    files = write_ranking(ranking, out or Path("runs") / f"probe-{manifest.stem}")
    rows = [[f"{r[c]:.4f}" if c.endswith("score") else ("–" if r[c] is None else
             f"{r[c]:.3f}" if isinstance(r[c], float) else r[c]) for c in COLUMNS] for r in ranking.rows]
    console.print(table("linear probes (best validation first per dataset)", COLUMNS, rows))
    for note in ranking.notes:
        console.print(f"[yellow]{note}", highlight=False)
    console.print(f"wrote {', '.join(str(f) for f in files)} in {time.perf_counter() - start:.0f} s",
                  highlight=False)
