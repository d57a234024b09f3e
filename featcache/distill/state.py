"""A run's training state: what a checkpoint holds of a `Training` (build.py), and putting it back.

The student goes in the checkpoint as its own state dict (eval, predict and export need only
that); projectors, gates, return decoder, optimizer, schedule and RNG go in its TrainingState, so
--resume continues exactly where the run stopped.
"""

from __future__ import annotations

import torch

from featcache.data.recipe import Recipe
from featcache.distill.build import Training, store_url
from featcache.errors import CheckpointError
from featcache.manifest import Manifest, same_settings
from featcache.runs import Checkpoint, Run, TrainingState
from featcache.runs.checkpoint import state_dict_error


def snapshot(built: Training, manifest: Manifest, epoch: int, best: float, best_epoch: int,
             world_size: int, steps_into_next: int = 0) -> Checkpoint:
    """The checkpoint after `epoch` (and steps_into_next steps of the next one)."""
    model = built.model
    state = TrainingState(
        distill={k: v for k, v in model.state_dict().items() if not k.startswith("student.")},
        optimizer=built.optimizer.state_dict(), scheduler=built.scheduler.state_dict(),
        rng=torch.get_rng_state())
    entries = {f"{s.dataset.name}/{t}": r.key for s in built.data.sources for t, r in s.entries.items()}
    return Checkpoint(
        epoch=epoch, student_config=model.student.config, student=model.student.state_dict(),
        saved_manifest=manifest.model_dump(mode="json"), best_val_dice=best, best_epoch=best_epoch,
        store=store_url(manifest, built.with_teachers), entries=entries, world_size=world_size,
        training=state, steps_into_next=steps_into_next, recipes=_recipes(built))


def _recipes(built: Training) -> dict[str, Recipe]:
    """Each dataset's input recipe by its name (name:index when two share a loader: two roots)."""
    names = [s.dataset.name for s in built.data.sources]
    return {(n if names.count(n) == 1 else f"{n}:{s.index}"): s.dataset.recipe
            for n, s in zip(names, built.data.sources, strict=True)}


def restore(built: Training, checkpoint: Checkpoint) -> None:
    """Put a checkpoint's weights, optimizer, schedule and RNG back into `built`. A checkpoint
    whose tensors do not fit the model its manifest builds (edited by hand, or damaged) is one
    CheckpointError naming the file."""
    state = checkpoint.training
    assert state is not None  # Run.load_resume_point refuses a checkpoint without one
    try:
        built.model.load_state_dict({**{f"student.{k}": v for k, v in checkpoint.student.items()},
                                     **state.distill})
        built.optimizer.load_state_dict(state.optimizer)
        built.scheduler.load_state_dict(state.scheduler)
        torch.set_rng_state(state.rng)
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{checkpoint.path}: its training state does not fit the model the "
                              f"manifest builds ({state_dict_error(exc)}); it was edited or "
                              "damaged: train again with overwrite", fields=("overwrite",)) from None


def resume_from(built: Training, run: Run, manifest: Manifest) -> Checkpoint:
    """The run's resume point, checked to be of `manifest`, put back into `built`."""
    checkpoint = run.load_resume_point()
    if not same_settings(checkpoint.saved_manifest, manifest):
        raise CheckpointError(f"{run.path}: the checkpoint was trained with a different manifest; "
                              "resume with the same manifest and override options, or use a new run_dir",
                              fields=("override",))
    restore(built, checkpoint)
    return checkpoint
