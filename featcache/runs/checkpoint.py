"""The checkpoint format: what best.pt, last.pt, pretrained.pt and probes.pt hold, typed.

Checkpoints are plain tensors and containers, so loading needs no pickled code
(torch.load(weights_only=True)); `Checkpoint` is their typed form. Older checkpoints are brought
to today's form by compat.py's table before they are read. torch loads on first use: naming a
run's files (eval, report, the CLI) stays light.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from featcache.data.recipe import Recipe
from featcache.errors import CheckpointError, ConfigError
from featcache.manifest import Manifest, StudentConfig
from featcache.runs.compat import known_keys, upgrade
from featcache.yamlconfig import validation_message

if TYPE_CHECKING:
    import torch

FORMAT = "featcache-run/1"
REQUIRED = ("epoch", "student_config", "student", "image_size")


@dataclass
class TrainingState:
    """What resuming needs besides the student: projectors, gates and return decoder (`distill`),
    the optimizer, the schedule and the RNG."""

    distill: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: torch.Tensor


@dataclass
class Checkpoint:
    """best.pt or last.pt: the student and what it was trained with."""

    epoch: int  # the last epoch done, 0-based (-1: interrupted in the first)
    student_config: StudentConfig  # encoder, channels, decoder, input normalisation, image size
    student: dict[str, torch.Tensor]  # its state dict
    saved_manifest: dict[str, Any] = field(default_factory=dict)  # as dumped when saved
    best_val_dice: float | None = None
    best_epoch: int | None = None
    entries: dict[str, str] = field(default_factory=dict)  # "dataset/teacher" -> store entry key
    store: str | None = None  # the store URL the entries are in
    world_size: int = 1
    training: TrainingState | None = None
    steps_into_next: int = 0  # optimizer steps already taken in epoch `epoch + 1` (an interrupt)
    # How each dataset's files become the student's input (data/recipe.py), by dataset name.
    recipes: dict[str, Recipe] = field(default_factory=dict)
    path: Path | None = None  # the file it was read from

    @property
    def image_size(self) -> int:
        """The input size S the student was trained at."""
        return int(self.student_config.image_size)

    @property
    def manifest(self) -> Manifest:
        """The manifest the run was trained with. Settings removed from the schema since are
        left out (an old run still evaluates); anything else that no longer validates is an error."""
        try:
            return Manifest.model_validate(self.saved_manifest)
        except ValidationError:
            pass
        try:
            return Manifest.model_validate(known_keys(Manifest, self.saved_manifest))
        except ValidationError as exc:
            raise CheckpointError(f"{self.path}: the manifest saved with it no longer validates: "
                                  f"{validation_message(exc)}") from None

    def payload(self) -> dict[str, Any]:
        """What torch.save writes (plain containers only)."""
        state = self.training
        # image_size is stored beside the config, as it always was: every version reads the file.
        config = self.student_config.model_dump(mode="json", exclude={"image_size"})
        return {
            "format": FORMAT, "epoch": self.epoch, "student_config": config,
            "student": self.student, "best_val_dice": self.best_val_dice, "best_epoch": self.best_epoch,
            "manifest": self.saved_manifest, "image_size": self.image_size, "store": self.store,
            "world_size": self.world_size, "entries": self.entries, "steps_into_next": self.steps_into_next,
            "recipes": {name: recipe.to_dict() for name, recipe in self.recipes.items()},
            **({"distill": state.distill, "optimizer": state.optimizer, "scheduler": state.scheduler,
                "rng": state.rng} if state is not None else {}),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: Path) -> Checkpoint:
        missing = [k for k in REQUIRED if k not in payload]
        if missing:
            raise CheckpointError(f"{path} lacks {', '.join(missing)}; it is not a run checkpoint")
        check_contents(payload, path)
        payload = upgrade(payload, path)
        training = None
        if all(k in payload for k in ("distill", "optimizer", "scheduler", "rng")):
            training = TrainingState(payload["distill"], payload["optimizer"], payload["scheduler"],
                                     payload["rng"])
        return cls(epoch=int(payload["epoch"]), student_config=_student_config(payload, path),
                   student=payload["student"], saved_manifest=payload.get("manifest") or {},
                   best_val_dice=payload.get("best_val_dice"), best_epoch=payload.get("best_epoch"),
                   entries=payload["entries"], store=payload["store"],
                   world_size=int(payload.get("world_size", 1)), training=training,
                   steps_into_next=int(payload.get("steps_into_next", 0)),
                   recipes=_recipes(payload["recipes"], path), path=path)


def _student_config(payload: dict[str, Any], path: Path) -> StudentConfig:
    config = {**payload["student_config"], "image_size": int(payload["image_size"])}
    try:
        return StudentConfig.model_validate(config)
    except ValidationError as exc:
        raise CheckpointError(f"{path}: its student config does not validate: "
                              f"{validation_message(exc)}") from None


def _recipes(raw: dict[str, Any], path: Path) -> dict[str, Recipe]:
    try:
        return {str(name): Recipe.from_dict(recipe) for name, recipe in raw.items()}
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its input recipe does not read: {exc}") from None


@dataclass
class Pretrained:
    """pretrained.pt or probes.pt: a model's state and the recipe it was made by (feature
    pretraining's result, output distillation's teacher probes)."""

    recipe: str
    model: dict[str, torch.Tensor]
    steps: int

    def payload(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "model": self.model, "steps": self.steps}

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: Path | None = None) -> Pretrained:
        _expect(payload, path, "recipe", str, "a recipe string", default="")
        _expect(payload, path, "steps", int, "a step count", default=0)
        _tensors(payload.get("model", {}), path, "model")
        return cls(str(payload.get("recipe", "")), payload.get("model", {}), int(payload.get("steps", 0)))


# The largest input size a checkpoint may name: more than any student is trained at; an edited
# value beyond it would have predict allocate terabytes.
MAX_IMAGE_SIZE = 16384


def check_contents(payload: dict[str, Any], path: Path | None) -> None:
    """A checkpoint's contents are checked as strictly as a manifest: each field of the type it is
    written with (a hand-edited string epoch, a list config or a size that no machine holds is
    one CheckpointError naming the field, not a traceback somewhere later)."""
    _expect(payload, path, "epoch", int, "an epoch number")
    _expect(payload, path, "student_config", dict, "a mapping of student settings")
    _expect(payload, path, "image_size", int, "an image size")
    if not 0 < payload["image_size"] <= MAX_IMAGE_SIZE:
        raise _edited(path, f"image_size {payload['image_size']} is outside 1..{MAX_IMAGE_SIZE}")
    _tensors(payload["student"], path, "student")
    for key, kind, what in (("manifest", dict, "the saved manifest"), ("best_epoch", int, "an epoch"),
                            ("best_val_dice", (int, float), "a score"), ("world_size", int, "a count"),
                            ("steps_into_next", int, "a step count")):
        _expect(payload, path, key, kind, what, default=None)
    if "distill" in payload:
        _tensors(payload["distill"], path, "distill")
    for key in ("optimizer", "scheduler"):
        _expect(payload, path, key, dict, "a state mapping", default=None)


def _edited(path: Path | None, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: {what}; the checkpoint was edited or damaged: use another "
                           "checkpoint (best or last) or train again")


def _expect(payload: dict[str, Any], path: Path | None, key: str, kind: Any, what: str,
            default: Any = ...) -> None:
    value = payload.get(key, default)
    if value is default and default is not ...:
        return
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _edited(path, f"{key} is {str(value)[:40]!r} ({type(value).__name__}), expected {what}")


def _tensors(value: Any, path: Path | None, key: str) -> None:
    import torch

    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in value.items()):
        raise _edited(path, f"{key} is not a mapping of names to tensors")


def save_payload(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint behind, and a full
    disk is one line (the file it would have replaced is kept)."""
    import torch

    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:  # a file object: torch's own writer reports ENOSPC as a RuntimeError
            torch.save({"format": FORMAT, **payload}, fh)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        why = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
        raise CheckpointError(f"cannot write {path}: {why}; {path.name} was left as it was: free space, "
                              "then continue with --resume") from None


def load_payload(path: Path) -> dict[str, Any]:
    """A checkpoint file's payload (weights only: no pickled code runs), or one line saying why not."""
    import torch

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


def state_dict_error(exc: BaseException) -> str:
    """The telling line of torch's load_state_dict error (its first line only says that it failed)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [""]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading"):
        lines = lines[1:]
    return lines[0][:240]
