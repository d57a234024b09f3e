"""`featcache distill`: train the gated student from the cache alone.

Data-parallel: `torchrun --nproc_per_node N -m featcache distill --manifest m.yaml`; only rank 0
prints and writes the run directory."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from featcache.cli.app import app, console
from featcache.cli.common import progress_bar, table
from featcache.cli.events import TrainingDisplay
from featcache.events import epoch_number


@app.command(epilog="Example: featcache distill --manifest manifests/demo.yaml --set training.epochs=5")
def distill(
    manifest: Annotated[Path, typer.Option(help="Distillation manifest (YAML); see manifests/.")],
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a manifest field: key.path=value (repeatable), "
                      "e.g. training.epochs=5.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue from the run's last checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a run already in run_dir (without it, or --resume, a finished "
                            "or interrupted run is never overwritten).")] = False,
) -> None:
    """Train a student (with projectors, gates and return decoder) from cached teacher features."""
    from featcache.distill.distributed import env_rank
    from featcache.distill.trainer import train
    from featcache.manifest import load_manifest

    m = load_manifest(manifest, set_ or [])
    if env_rank() != 0:  # other torchrun ranks train silently
        train(m, resume=resume, overwrite=overwrite)
        return
    try:
        with progress_bar() as bar:
            result = train(m, resume=resume, overwrite=overwrite, progress=TrainingDisplay(bar))
    except KeyboardInterrupt:
        console.print(f"[yellow]{_interrupted(manifest, set_ or [], m.run_dir)}[/yellow]", highlight=False,
                      soft_wrap=True)
        raise typer.Exit(130) from None
    rows = [(key, teacher, f"{w:.3f}") for key, tw in sorted(result.gates.items())
            for teacher, w in sorted(tw.items())]
    if rows:
        console.print(table("teacher gate weights (last epoch, mean over training samples)",
                            ["dataset/stage", "teacher", "weight"], rows))
    console.print(table("distillation", ["run dir", "steps", "epochs", "best val score", "best epoch",
                                         "student params", "seconds", "steps/s", "loss weights"],
                        [(result.run_dir, result.steps, result.epochs, f"{result.best_val_dice:.4f}",
                          epoch_number(result.best_epoch), f"{result.student_params / 1e6:.2f}M",
                          f"{result.seconds:.0f}", f"{result.steps_per_s:.2f}",
                          " ".join(f"{k}={v:.2f}" for k, v in result.loss_weights.items()))]))
    print_validation(result.val_scores, result.warnings)


def print_validation(val: dict[str, float], warnings: list[str]) -> None:
    """Each dataset's (and class's) validation numbers at the kept checkpoint, then one warning
    per task that collapsed (featcache/runs/val_log.py)."""
    by: dict[str, dict[str, float]] = {}
    for key, value in val.items():
        metric, _, where = key.partition("/")  # val_METRIC/DATASET[/CLASS]
        if where:
            by.setdefault(where, {})[metric[4:]] = value
    if by:
        metrics = list(dict.fromkeys(m for values in by.values() for m in values))
        console.print(table("validation at the kept checkpoint (dice: per-image mean, an image with a class "
                            "in neither prediction nor mask left out)", ["dataset", *metrics],
                            [(where, *(f"{values[m]:.4f}" if m in values else "" for m in metrics))
                             for where, values in by.items()]))
    for line in warnings:
        console.print(f"[yellow]warning: a task collapsed: {line}[/yellow]")


def _interrupted(manifest: Path, sets: list[str], run_dir: str) -> str:
    """What an interrupt left, and the command that goes on from it: with every --set (run_dir
    may be one of them, and a resume checks it is given the manifest the run was trained with)."""
    from featcache.runs import Run

    command = " ".join(["featcache distill --manifest", shlex.quote(str(manifest)),
                        *(f"--set {shlex.quote(s)}" for s in sets)])
    last = Run(run_dir).checkpoint_file("last")
    if last.is_file():
        return f"interrupted: the resume point is in {last}; continue with {command} --resume"
    return ("interrupted before the first training step (during feature pretraining or the output "
            f"probes' fit): there is no resume point; run {command} again (what pretraining or the "
            "probes finished is reused)")
