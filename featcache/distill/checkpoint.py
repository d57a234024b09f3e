"""Run-directory checkpoints: saved as plain tensors and containers so that loading them needs
no pickled code (torch.load(weights_only=True)).

A run directory holds:
  manifest.yaml            the resolved manifest the run was trained with
  checkpoints/last.pt      written every epoch (resume point)
  checkpoints/best.pt      the epoch with the best validation Dice
  metrics.csv, gates.csv   per-epoch training curves
Each checkpoint is a dict: format, epoch, student_config, student (state dict), distill (state dict
of projectors, gates and return decoder), optimizer, scheduler, rng, best_val_dice, manifest,
image_size.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from featcache.distill.student import Student, StudentConfig
from featcache.errors import CheckpointError

FORMAT = "featcache-run/1"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; train first with `featcache distill` "
                              "or pick checkpoint best|last", fields=("checkpoint",))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable featcache checkpoint "
                              f"({type(exc).__name__}); it may be truncated or from another tool") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} has format {found!r}, expected {FORMAT!r}; "
                              "it was written by another featcache version or tool")
    return payload


def checkpoint_path(run_dir: Path, which: str = "best") -> Path:
    if which not in ("best", "last"):
        raise CheckpointError(f"unknown checkpoint {which!r}; use best or last")
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    return run_dir / "checkpoints" / f"{which}.pt"


def load_student(run_dir: Path, which: str = "best") -> tuple[Student, dict[str, Any]]:
    """The trained student in eval mode, and the checkpoint payload (manifest, image_size, …)."""
    payload = load_checkpoint(checkpoint_path(Path(run_dir), which))
    student = Student(StudentConfig.from_dict(payload["student_config"]))
    try:
        student.load_state_dict(payload["student"])
    except RuntimeError as exc:
        raise CheckpointError(f"{run_dir}: checkpoint does not match its student config: "
                              f"{str(exc).splitlines()[0]}") from None
    return student.eval(), payload
