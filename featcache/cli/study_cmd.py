"""`featcache study --manifest m.yaml`: the paired study of any manifest (featcache/study/ablation.py)
with one progress bar across its runs, then the runs, the paired table and the computed findings."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from featcache.cli.app import app, console
from featcache.cli.common import table
from featcache.cli.study_display import StudyDisplay


def _list(convert: Callable[[str], Any], example: str) -> Callable[[str | None], list[Any] | None]:
    def parse(text: str | None) -> list[Any] | None:
        if text is None:
            return None
        try:
            return [convert(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise typer.BadParameter(f"{text!r}: expected comma-separated numbers, e.g. {example}") from None
    return parse


@app.command(epilog="Example: featcache study --manifest manifests/study-demo.yaml --quick")
def study(
    manifest: Annotated[Path, typer.Option(help="Manifest (YAML) with an optional `study:` section; see "
                                                "manifests/study-demo.yaml.")],
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds, e.g. 0,1,2,3,4 (default: the "
                                                   "study section's).")] = None,
    label_fractions: Annotated[str | None, typer.Option(
        help="Comma-separated training.train_fraction values, e.g. 1.0,0.1.")] = None,
    arms: Annotated[str | None, typer.Option(help="Comma-separated arm numbers to run (default: all); "
                                                  "the reference arm is always needed.")] = None,
    quick: Annotated[bool, typer.Option(
        "--quick", help="The study section's quick settings: fewer seeds, a few steps per run, "
                        "OUT-quick (a smoke test).")] = False,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: study.out, else "
                                                  "runs/study-<manifest name>).")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a field of the base manifest: key.path=value (repeatable).")] = None,
) -> None:
    """Paired study: arms (manifest overrides) x label fractions x seeds; resumable."""
    from featcache.study.ablation import (
        StudyOptions,
        plan_study,
        run_study,
        total_train_seconds,
        write_outputs,
    )

    options = StudyOptions(seeds=_list(int, "0,1,2")(seeds),
                           label_fractions=_list(float, "1.0,0.1")(label_fractions),
                           arms=_list(int, "1,2,3")(arms), quick=quick, out=out, overrides=set_ or [])
    start = time.perf_counter()
    plan = plan_study(manifest, options)
    console.print(f"study {manifest}: arms {list(plan.arms)}, seeds {plan.seeds}, label fractions "
                  f"{plan.fractions}, {len(plan.cells)} runs into {plan.out}", highlight=False)
    with StudyDisplay(console) as display:
        rows = run_study(plan, display)
    files = write_outputs(plan, rows)
    _print_results(plan, rows)
    console.print(f"wrote {', '.join(str(f) for f in files)} in {time.perf_counter() - start:.0f} s "
                  f"({total_train_seconds(rows):.0f} s of it training)", highlight=False)


def _print_results(plan: Any, rows: list[dict[str, Any]]) -> None:
    from featcache.study.tables import (
        ablation_summary,
        findings,
        fmt,
        metric_name,
        score_column,
        setting_title,
        summary_columns,
    )

    column, metric = score_column(rows), metric_name(rows)
    runs = [(r["arm"] or "T", setting_title(r), r["seed"], fmt(r.get(column)), fmt(r.get("hd95_mean"), 2),
             fmt(r.get("train_seconds"), 0)) for r in rows]
    console.print(table("study runs", ["#", "setting", "seed", metric, "HD95", "train s"], runs))
    body, caption = ablation_summary(rows, plan.names, plan.reference)
    columns = summary_columns(plan.reference, metric)
    console.print(table("study (mean ± std over seeds; paired differences)", columns[:1] + columns[2:],
                        [r[:1] + r[2:] for r in body], caption=caption))
    console.print("arms: " + "; ".join(f"{k} {name}" for k, name in plan.names.items()), highlight=False)
    for note in plan.notes:
        console.print(f"[yellow]{note}", highlight=False)
    for line in findings(rows, plan.names, plan.reference):
        console.print(f"• {line}", highlight=False)
