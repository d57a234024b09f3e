"""A run directory read and written: claimed by one training, its manifest and per-epoch logs,
its checkpoints and the trained student they hold. Paths are layout.py's, the file format
checkpoint.py's."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featcache.errors import CheckpointError, ConfigError
from featcache.events import epoch_number
from featcache.runs.checkpoint import Checkpoint, Pretrained, load_payload, save_payload, state_dict_error
from featcache.runs.layout import RunLayout
from featcache.runs.logs import append_csv, truncate_csv

if TYPE_CHECKING:
    from featcache.student import Student


class Run(RunLayout):
    """A run directory: its files' paths (RunLayout), logs and checkpoints."""

    @contextmanager
    def exclusive(self, hold: bool = True) -> Iterator[None]:
        """One training at a time in this directory: two at once would interleave metrics.csv
        and leave best.pt and last.pt of different runs. The lock file is created exclusively
        (O_EXCL) and removed on the way out; one left by a process that no longer runs on this
        host is taken over. `hold` False (the other ranks of a torchrun) holds nothing."""
        if not hold:
            yield
            return
        created = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                           "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")})
        for _ in range(3):
            try:
                fd = os.open(self.lock_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                self._unlock_stale()
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(body)
            break
        else:
            raise self._held()
        try:
            yield
        finally:
            self.lock_file.unlink(missing_ok=True)
            if created and not any(self.path.iterdir()):  # a run that failed before writing
                self.path.rmdir()

    def _holder(self) -> dict[str, Any] | None:
        try:
            holder = json.loads(self.lock_file.read_text())
        except (OSError, ValueError):
            return None
        return holder if isinstance(holder, dict) else None

    def _unlock_stale(self) -> None:
        """Remove the lock when its process is gone from this host; else one line naming it."""
        holder = self._holder()
        if holder is None:  # being written this instant, or unreadable: stale once a minute old
            try:
                if time.time() - self.lock_file.stat().st_mtime < 60:
                    raise self._held()
            except FileNotFoundError:
                return
        elif holder.get("host") != socket.gethostname() or _running(int(holder.get("pid") or 0)):
            raise self._held()
        self.lock_file.unlink(missing_ok=True)

    def _held(self) -> ConfigError:
        holder = self._holder() or {}
        who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {holder.get('since', '?')}"
        return ConfigError(f"{self.path} is being trained by another featcache process ({who}); wait for "
                           f"it to finish or set another run_dir (if that process is gone for good, "
                           f"delete {self.lock_file})", fields=("run_dir",))

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
        -> weight), `epoch` the 0-based index, written as its epoch_number. fresh: the run started
        at the first epoch, so that epoch rewrites the files."""
        number = epoch_number(epoch)
        rows = [{**row, "epoch": number} for row in (train_row, val_row)]
        append_csv(self.metrics_csv, rows, fresh and epoch == 0)
        append_csv(self.gates_csv, [{"epoch": number, "dataset": k.split("/")[0], "stage": k.split("/")[1],
                                     "teacher": t, "weight": w}
                                    for k, tw in gates.items() for t, w in tw.items()],
                   fresh and epoch == 0)

    def truncate_logs(self, start_epoch: int) -> None:
        """Drop the log rows of epochs from start_epoch on (a run killed after its checkpoint
        redoes them when resumed)."""
        for path in (self.metrics_csv, self.gates_csv):
            truncate_csv(path, start_epoch)

    def save_probe_scores(self, rows: list[dict[str, Any]]) -> None:
        """Output distillation's probes, each with its validation score and whether it teaches."""
        append_csv(self.probe_scores_csv, rows, True)

    # --- checkpoints ------------------------------------------------------------------------
    def save_checkpoint(self, which: str, checkpoint: Checkpoint) -> None:
        save_payload(self.checkpoint_file(which), checkpoint.payload())

    def load_checkpoint(self, which: str = "best") -> Checkpoint:
        path = self.checkpoint_file(which)
        if not self.path.is_dir():
            raise CheckpointError(f"run directory {self.path} does not exist")
        return Checkpoint.from_payload(load_payload(path), path)

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
        from featcache.student import Student

        checkpoint = self.load_checkpoint(which)
        # The state dict holds the encoder's weights: the file they once came from (a path on
        # another machine, say) is not read again.
        student = Student(checkpoint.student_config.model_copy(update={"encoder_weights": None}))
        student.config = checkpoint.student_config
        try:
            student.load_state_dict(checkpoint.student)
        except RuntimeError as exc:
            raise CheckpointError(f"{checkpoint.path}: its student weights do not match its student "
                                  f"config ({state_dict_error(exc)}); the checkpoint was edited or "
                                  "damaged: use another checkpoint (best or last) or train again") from None
        return student.eval(), checkpoint

    def save_probes(self, probes: Pretrained) -> None:
        save_payload(self.probes_file, probes.payload())

    def load_probes(self) -> Pretrained | None:
        return _load_recipe_file(self.probes_file)

    def save_pretrained(self, pretrained: Pretrained) -> None:
        save_payload(self.pretrained_file, pretrained.payload())

    def load_pretrained(self) -> Pretrained | None:
        """The saved feature pretraining, or None when there is none."""
        return _load_recipe_file(self.pretrained_file)


def _load_recipe_file(path: Path) -> Pretrained | None:
    """A state saved with the recipe it came from (pretrained.pt, probes.pt); None if absent."""
    if not path.is_file():
        return None
    return Pretrained.from_payload(load_payload(path), path)


def _running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
