"""A run directory, the counterpart of the store's `EntryLayout`: the one module that knows its
file names and what its checkpoints hold.

  RUN/manifest.yaml               the resolved manifest the run was trained with
  RUN/checkpoints/last.pt         the resume point (after the last epoch, else at most once a minute)
  RUN/checkpoints/best.pt         the epoch with the best validation Dice
  RUN/checkpoints/pretrained.pt   feature pretraining's result, with the recipe it came from
  RUN/checkpoints/probes.pt       output distillation's teacher probes, with their recipe
  RUN/probes.csv                  each probe's validation score, and which ones teach
  RUN/metrics.csv, RUN/gates.csv  per-epoch training curves (the report and a resume read them)
  RUN/tensorboard/                optional per-epoch TensorBoard events
  RUN/eval/                       `featcache eval`: per_image.csv, summary.json, overlays/DATASET/ID.png,
                                  per_image_classes.csv (classification datasets)
  RUN/eval-orientation/           a study's scores on other orientations (the same files)
  RUN/report/                     `featcache report`: report.md, report.html and their pictures
  RUN/export/                     `featcache export`: the exported students
  RUN/study_train.json            what training reported, for a study cell

It writes them all: checkpoints, the saved manifest and the per-epoch logs (the trainer hands
it rows). Checkpoints are plain tensors and containers, so loading needs no pickled code
(torch.load(weights_only=True)); `Checkpoint` is their typed form. torch and the student load on
first use: naming a run's files (eval, report, the CLI) stays light.
"""

from __future__ import annotations

import csv
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from featcache.errors import CheckpointError, ConfigError
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
            "world_size": self.world_size, "entries": self.entries, "steps_into_next": self.steps_into_next,
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
                   world_size=int(payload.get("world_size", 1)), training=training,
                   steps_into_next=int(payload.get("steps_into_next", 0)), path=path)


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

    # --- claiming and logs ------------------------------------------------------------------
    def claim(self, overwrite: bool, remove: bool = True) -> None:
        """A fresh run never writes over another: a directory holding one is reused only with
        --resume (the caller resumes) or --overwrite (its training files are removed here first,
        by the one process that `remove`s: every torchrun rank checks, rank 0 deletes)."""
        found = [path for path in self.training_files() if path.exists()]
        if not found:
            return
        if not overwrite:
            held = found[0].relative_to(self.path)
            raise ConfigError(f"{self.path} already holds a run ({held}); pass resume to continue it, "
                              "overwrite to replace it, or set another run_dir",
                              fields=("resume", "overwrite"))
        for path in found if remove else ():
            path.unlink(missing_ok=True)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """The resolved manifest (as dumped) beside the run's files."""
        import yaml

        self.path.mkdir(parents=True, exist_ok=True)
        self.manifest_file.write_text(yaml.safe_dump(manifest, sort_keys=False))

    def log_epoch(self, epoch: int, train_row: dict[str, Any], val_row: dict[str, Any],
                  gates: dict[str, dict[str, float]], fresh: bool) -> None:
        """One epoch's rows of metrics.csv (train, val) and gates.csv ("dataset/stage" -> teacher
        -> weight). fresh: the run started at epoch 0, so epoch 0 rewrites the files."""
        _append_csv(self.metrics_csv, [train_row, val_row], fresh and epoch == 0)
        _append_csv(self.gates_csv, [{"epoch": epoch, "dataset": k.split("/")[0], "stage": k.split("/")[1],
                                      "teacher": t, "weight": w}
                                     for k, tw in gates.items() for t, w in tw.items()],
                    fresh and epoch == 0)

    def truncate_logs(self, start_epoch: int) -> None:
        """Drop the log rows of epochs from start_epoch on (a run killed after its checkpoint
        redoes them when resumed)."""
        for path in (self.metrics_csv, self.gates_csv):
            _truncate_csv(path, start_epoch)

    # --- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, which: str, checkpoint: Checkpoint) -> None:
        _save(self.checkpoint_file(which), checkpoint.payload())

    def load_checkpoint(self, which: str = "best") -> Checkpoint:
        path = self.checkpoint_file(which)
        if not self.path.is_dir():
            raise CheckpointError(f"run directory {self.path} does not exist")
        return Checkpoint.from_payload(_load(path), path)

    def load_resume_point(self) -> Checkpoint:
        """last.pt with the training state to resume from, or one line saying what the directory
        holds instead and what to run."""
        path = self.checkpoint_file("last")
        if not path.is_file():
            held = [p.relative_to(self.path).as_posix() for p in self.training_files() if p.exists()]
            what = f"it holds {', '.join(held)}" if held else "it holds no run"
            raise CheckpointError(f"{self.path} has no resume point (checkpoints/last.pt); {what}: "
                                  "train it again with overwrite, or set another run_dir",
                                  fields=("overwrite",))
        checkpoint = self.load_checkpoint("last")
        if checkpoint.training is None:
            raise CheckpointError(f"{path} holds no training state to resume from; train again with "
                                  "overwrite, or set another run_dir", fields=("overwrite",))
        return checkpoint

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

    @property
    def probes_file(self) -> Path:
        """Output distillation's task-adapted teacher probes, with the recipe they were fitted by."""
        return self.path / "checkpoints" / "probes.pt"

    def save_probes(self, probes: Pretrained) -> None:
        _save(self.probes_file, {"recipe": probes.recipe, "model": probes.model, "steps": probes.steps})

    def load_probes(self) -> Pretrained | None:
        return _load_recipe_file(self.probes_file)

    @property
    def probe_scores_csv(self) -> Path:
        return self.path / "probes.csv"

    def save_probe_scores(self, rows: list[dict[str, Any]]) -> None:
        """Output distillation's probes, each with its validation score and whether it teaches."""
        _append_csv(self.probe_scores_csv, rows, True)

    def save_pretrained(self, pretrained: Pretrained) -> None:
        _save(self.pretrained_file, {"recipe": pretrained.recipe, "model": pretrained.model,
                                     "steps": pretrained.steps})

    def load_pretrained(self) -> Pretrained | None:
        """The saved feature pretraining, or None when there is none."""
        return _load_recipe_file(self.pretrained_file)


def _load_recipe_file(path: Path) -> Pretrained | None:
    """A state saved with the recipe it came from (pretrained.pt, probes.pt); None if absent."""
    if not path.is_file():
        return None
    payload = _load(path)
    return Pretrained(str(payload.get("recipe", "")), payload.get("model", {}), int(payload.get("steps", 0)))


def _append_csv(path: Path, rows: list[dict[str, Any]], new: bool) -> None:
    if not rows:
        return
    new = new or not path.exists()
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w" if new else "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _truncate_csv(path: Path, start_epoch: int) -> None:
    if not path.exists():
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], [r for r in reader if int(r["epoch"]) < start_epoch]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def check_run_dir(run_dir: str | Path, store: str | None) -> None:
    """Refuse a run_dir that is a filesystem root, is or lies inside a feature store (the
    manifest's `store`, or any folder with a zarr.json at its top: a store root holds its entries
    there): checkpoints written into a content-addressed entry would be deleted by a later
    `featcache rm` of it. A store in a subfolder of run_dir (run_dir ".", store
    "./featcache-store") is the usual layout and allowed: a run never writes into it."""
    from featcache.errors import ConfigError
    from featcache.store.backends import is_local

    path = Path(run_dir).expanduser().resolve()
    if path == Path(path.anchor):
        raise ConfigError(f"run_dir {run_dir} is a filesystem root; set run_dir to a folder of its own, "
                          "e.g. runs/NAME", fields=("run_dir",))
    stores = [Path(store.removeprefix("file://")).expanduser().resolve()] if store and is_local(store) else []
    for folder in (path, *path.parents):
        if folder in stores or (folder / "zarr.json").is_file():
            where = "is" if folder == path else f"lies inside {folder}, which is"
            raise ConfigError(f"run_dir {run_dir} {where} a feature store (or one of its entries); set "
                              "run_dir to a folder outside the store, e.g. runs/NAME", fields=("run_dir",))


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
