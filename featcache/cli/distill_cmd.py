"""`featcache distill`: train the gated student from the cache alone.

Data-parallel: `torchrun --nproc_per_node N -m featcache distill --manifest m.yaml`; only rank 0
prints and writes the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from featcache.cli.app import app, console
from featcache.cli.common import progress_bar, table


@app.command()
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
    with progress_bar() as bar:
        state: dict = {}

        def report(event: str, info: dict) -> None:
            if event == "pretrain_start":
                state["pretrain"] = bar.add_task("feature pretraining", total=info["steps"],
                                                 info=f"{info['images']} unlabelled images")
            elif event == "pretrain_step":
                bar.update(state["pretrain"], advance=1, info=f"loss {info['loss']:.3f}")
            elif event == "pretrain_loaded":
                console.print(f"feature pretraining: reusing {info['path']} (same recipe)")
            elif event == "start":
                console.print(f"student: {info['params'] / 1e6:.2f}M parameters, device {info['device']}, "
                              f"{info['steps']} steps/epoch, {info['world_size']} process(es), "
                              f"{info['workers']} loader worker(s) each")
                state["task"] = bar.add_task("training", total=info["epochs"] * info["steps"],
                                             completed=info["start_epoch"] * info["steps"], info="")
            elif event == "step":
                bar.update(state["task"], advance=1,
                           info=f"epoch {info['epoch'] + 1} loss {info['loss']:.3f}")
            elif event == "epoch":
                bar.update(state["task"], info=f"epoch {info['epoch'] + 1} val Dice {info['val_dice']:.3f} "
                                               f"(best {info['best']:.3f})")

        result = train(m, resume=resume, overwrite=overwrite, progress=report)
    rows = [(key, teacher, f"{w:.3f}") for key, tw in sorted(result.gates.items())
            for teacher, w in sorted(tw.items())]
    if rows:
        console.print(table("teacher gate weights (last epoch, mean over training samples)",
                            ["dataset/stage", "teacher", "weight"], rows))
    console.print(table("distillation", ["run dir", "epochs", "best val Dice", "best epoch",
                                         "student params", "seconds", "steps/s", "loss weights"],
                        [(result.run_dir, result.epochs, f"{result.best_val_dice:.4f}", result.best_epoch + 1,
                          f"{result.student_params / 1e6:.2f}M", f"{result.seconds:.0f}",
                          f"{result.steps_per_s:.2f}",
                          " ".join(f"{k}={v:.2f}" for k, v in result.loss_weights.items()))]))
