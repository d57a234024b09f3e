"""A run directory, the counterpart of the store's `EntryLayout`: the one module that knows its
file names and what its checkpoints hold.

  RUN/manifest.yaml               the resolved manifest the run was trained with
  RUN/checkpoints/last.pt         the resume point (after the last epoch, else at most once a minute)
  RUN/checkpoints/best.pt         the epoch with the best validation Dice
  RUN/checkpoints/pretrained.pt   feature pretraining's result, with the recipe it came from
  RUN/metrics.csv, RUN/gates.csv  per-epoch training curves (the report and a resume read them)
  RUN/tensorboard/                optional per-epoch TensorBoard events
  RUN/eval/                       `featcache eval`: per_image.csv, summary.json, overlays/DATASET/ID.png,
                                  per_image_classes.csv (classification datasets)
  RUN/eval-orientation/           a study's scores on other orientations (the same files)
  RUN/report/                     `featcache report`: report.md, report.html and their pictures
  RUN/export/                     `featcache export`: the exported students
  RUN/study_train.json            what training reported, for a study cell

Checkpoints are plain tensors and containers, so loading needs no pickled code
(torch.load(weights_only=True)); `Checkpoint` is their typed form. torch and the student load on
first use: naming a run's files (eval, report, the CLI) stays light.
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from featcache.errors import CheckpointError
from featcache.manifest import Manifest, StudentConfig
from featcache.yamlconfig import validation_message

if TYPE_CHECKING:
    import torch

    from featcache.distill.student import Student

FORMAT = "featcache-run/1"
WHICH = ("best", "last")


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

    epoch: int  # 0-based
    student_config: StudentConfig  # encoder, channels, decoder, input normalisation, image size
    student: dict[str, torch.Tensor]  # its state dict
    saved_manifest: dict[str, Any] = field(default_factory=dict)  # as dumped when saved
    best_val_dice: float | None = None
    best_epoch: int | None = None
    entries: dict[str, str] = field(default_factory=dict)  # "dataset/teacher" -> store entry key
    store: str | None = None  # the store URL the entries are in
    world_size: int = 1
    training: TrainingState | None = None
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
            return Manifest.model_validate(_known_keys(Manifest, self.saved_manifest))
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
            "world_size": self.world_size, "entries": self.entries,
            **({"distill": state.distill, "optimizer": state.optimizer, "scheduler": state.scheduler,
                "rng": state.rng} if state is not None else {}),
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: Path) -> Checkpoint:
        missing = [k for k in ("epoch", "student_config", "student", "image_size") if k not in payload]
        if missing:
            raise CheckpointError(f"{path} lacks {', '.join(missing)}; it is not a run checkpoint")
        manifest = payload.get("manifest") or {}
        training = None
        if all(k in payload for k in ("distill", "optimizer", "scheduler", "rng")):
            training = TrainingState(payload["distill"], payload["optimizer"], payload["scheduler"],
                                     payload["rng"])
        return cls(epoch=int(payload["epoch"]), student_config=_student_config(payload, path),
                   student=payload["student"],
                   saved_manifest=manifest, best_val_dice=payload.get("best_val_dice"),
                   best_epoch=payload.get("best_epoch"), entries=_entry_keys(payload.get("entries")),
                   store=_store_url(payload.get("store") or manifest.get("store")),
                   world_size=int(payload.get("world_size", 1)), training=training, path=path)


@dataclass
class Pretrained:
    """checkpoints/pretrained.pt: the model's state after feature pretraining, and its recipe."""

    recipe: str
    model: dict[str, torch.Tensor]
    steps: int


@dataclass(frozen=True)
class ScoredFolder:
    """A folder of scores in eval's format: RUN/eval, RUN/eval-orientation, or the output folder
    of `featcache predict --masks` (the format itself is evaluate/outputs.py's)."""

    path: Path

    @property
    def per_image_csv(self) -> Path:
        return self.path / "per_image.csv"

    @property
    def summary_json(self) -> Path:
        return self.path / "summary.json"

    @property
    def per_image_classes_csv(self) -> Path:
        """Per-image class probabilities of the classification datasets."""
        return self.path / "per_image_classes.csv"

    @property
    def overlays_dir(self) -> Path:
        return self.path / "overlays"


class Run:
    """A run directory: its files' paths and its checkpoints."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # --- files ------------------------------------------------------------------------------
    @property
    def manifest_file(self) -> Path:
        return self.path / "manifest.yaml"

    @property
    def metrics_csv(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def gates_csv(self) -> Path:
        return self.path / "gates.csv"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    @property
    def eval(self) -> ScoredFolder:
        """What `featcache eval` writes."""
        return ScoredFolder(self.path / "eval")

    @property
    def orientation_eval(self) -> ScoredFolder:
        """A study's scores on the orientations the run was not trained on."""
        return ScoredFolder(self.path / "eval-orientation")

    @property
    def report_dir(self) -> Path:
        return self.path / "report"

    @property
    def report_page(self) -> Path:
        return self.report_dir / "report.md"

    @property
    def report_html(self) -> Path:
        """The same page with its pictures embedded."""
        return self.report_dir / "report.html"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    def export_file(self, which: str, image_size: int, suffix: str) -> Path:
        """Where `featcache export` writes a student (suffix .onnx or .pt) when no --out is given."""
        return self.export_dir / f"student_{which}_{image_size}{suffix}"

    @property
    def study_train_file(self) -> Path:
        return self.path / "study_train.json"

    @property
    def pretrained_file(self) -> Path:
        return self.path / "checkpoints" / "pretrained.pt"

    def checkpoint_file(self, which: str = "best") -> Path:
        """checkpoints/best.pt or last.pt."""
        if which not in WHICH:
            raise CheckpointError(f"unknown checkpoint {which!r}; use best or last")
        return self.path / "checkpoints" / f"{which}.pt"

    def eval_overlay(self, dataset: str, sample_id: str) -> Path:
        """Where eval writes (and the report looks for) the overlay of one sample."""
        return self.eval.overlays_dir / dataset / f"{sample_id}.png"

    def training_files(self) -> list[Path]:
        """The files whose presence means the directory holds a run (started or finished)."""
        return [self.checkpoint_file("last"), self.checkpoint_file("best"), self.metrics_csv,
                self.gates_csv]

    # --- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, which: str, checkpoint: Checkpoint) -> None:
        _save(self.checkpoint_file(which), checkpoint.payload())

    def load_checkpoint(self, which: str = "best") -> Checkpoint:
        path = self.checkpoint_file(which)
        if not self.path.is_dir():
            raise CheckpointError(f"run directory {self.path} does not exist")
        return Checkpoint.from_payload(_load(path), path)

    def load_student(self, which: str = "best") -> tuple[Student, Checkpoint]:
        """The trained student in eval mode, and the checkpoint it came from."""
        from featcache.distill.student import Student

        checkpoint = self.load_checkpoint(which)
        # The state dict holds the encoder's weights: the file they once came from (a path on
        # another machine, say) is not read again.
        student = Student(checkpoint.student_config.model_copy(update={"encoder_weights": None}))
        student.config = checkpoint.student_config
        try:
            student.load_state_dict(checkpoint.student)
        except RuntimeError as exc:
            raise CheckpointError(f"{self.path}: checkpoint does not match its student config: "
                                  f"{str(exc).splitlines()[0]}") from None
        return student.eval(), checkpoint

    def save_pretrained(self, pretrained: Pretrained) -> None:
        _save(self.pretrained_file, {"recipe": pretrained.recipe, "model": pretrained.model,
                                     "steps": pretrained.steps})

    def load_pretrained(self) -> Pretrained | None:
        """The saved feature pretraining, or None when there is none."""
        path = self.pretrained_file
        if not path.is_file():
            return None
        payload = _load(path)
        return Pretrained(str(payload.get("recipe", "")), payload.get("model", {}),
                          int(payload.get("steps", 0)))


def _save(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write never leaves a truncated checkpoint behind."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"format": FORMAT, **payload}, tmp)
    os.replace(tmp, path)


def _load(path: Path) -> dict[str, Any]:
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


def _student_config(payload: dict[str, Any], path: Path) -> StudentConfig:
    config = {**_known_keys(StudentConfig, payload["student_config"]),
              "image_size": int(payload["image_size"])}
    # Checkpoints from before the input normalisation existed fed [0, 1] images unchanged.
    channels = config.get("in_channels", StudentConfig.model_fields["in_channels"].default)
    config.setdefault("input_mean", [0.0] * channels)
    config.setdefault("input_std", [1.0] * channels)
    try:
        return StudentConfig.model_validate(config)
    except ValidationError as exc:
        raise CheckpointError(f"{path}: its student config does not validate: "
                              f"{validation_message(exc)}") from None


def _entry_keys(raw: Any) -> dict[str, str]:
    """The trainer saves {"dataset/teacher": key}; older or hand-made runs a list of keys or of
    {"key": ...} dicts (each then stands for itself)."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    keys = [e.get("key", "") if isinstance(e, dict) else str(e) for e in raw or []]
    return {k: k for k in keys if k}


def _store_url(raw: Any) -> str | None:
    """A URL, or a dict with "url" or "path"."""
    if isinstance(raw, dict):
        raw = raw.get("url") or raw.get("path")
    return str(raw) if raw else None


def _known_keys(model: type[BaseModel], data: Any) -> Any:
    """`data` without the keys `model` (and the models inside it) no longer has."""
    if not isinstance(data, dict):
        return data
    out = {}
    for key, value in data.items():
        if key not in model.model_fields:
            continue
        inner = _model_in(model.model_fields[key].annotation)
        if inner is not None:
            value = ([_known_keys(inner, v) for v in value] if isinstance(value, list)
                     else _known_keys(inner, value))
        out[key] = value
    return out


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds directly or as a list of it, else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None
