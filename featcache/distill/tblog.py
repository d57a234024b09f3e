"""TensorBoard events for a distillation run (`training.log: [csv, tensorboard]`).

Per epoch, in RUN_DIR/tensorboard/: each loss term (`loss/<term>`), the learned loss weights
(`loss_weight/<term>`), the teacher-gate weights (`gate/<dataset>/<stage>/<teacher>`), the
validation Dice (`val/dice`), the learning rate, and overlays of the same few validation images
(`val/overlay/<i>`), so their progress can be followed epoch by epoch. tensorboard is an optional
extra: it is imported only when asked for, and its absence is reported before training starts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from featcache.errors import ConfigError
from featcache.events import epoch_number

OVERLAYS = 4  # validation images drawn per epoch: enough to see progress, small event files
MISSING = 'training.log: tensorboard needs the tensorboard package: pip install "featcache[tensorboard]"'


def require_tensorboard() -> None:
    """One line naming the setting and the fix when the package is missing (every rank checks)."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as e:
        raise ConfigError(MISSING) from e


def open_log(log: list[str], log_dir: Path, is_main: bool, student: torch.nn.Module,
             val_set: Dataset, device: torch.device) -> TensorBoardLog | None:
    """The run's TensorBoard log when `log` asks for it; None when off and on ranks other than 0."""
    if "tensorboard" not in log:
        return None
    require_tensorboard()
    return TensorBoardLog(Path(log_dir), student, val_set, device) if is_main else None


class TensorBoardLog:
    def __init__(self, log_dir: Path, student: torch.nn.Module, val_set: Dataset,
                 device: torch.device, overlays: int = OVERLAYS) -> None:
        self.log_dir = log_dir
        self.student, self.device = student, device
        self.samples = [val_set[i] for i in range(min(overlays, len(val_set)))]  # type: ignore[arg-type]
        self.writer: Any = None

    def _open(self, first_epoch: int) -> None:
        """Opened at the first epoch written, not with the trainer: a resumed (or overwritten) run
        starts at that epoch, and purge_step makes TensorBoard drop the earlier session's events
        from it on, as the CSV rows are truncated on resume."""
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir), purge_step=epoch_number(first_epoch))

    def log_epoch(self, epoch: int, row: dict[str, Any], val: dict[str, Any],
                  gates: dict[str, dict[str, float]]) -> None:
        """row: the epoch's metrics.csv train row (loss terms, lr, seconds, w_<term> loss weights);
        val: its val row (val_score, val_METRIC/DATASET[/CLASS]: validation.py), as val/score and
        val/METRIC/DATASET[/CLASS]."""
        if self.writer is None:
            self._open(epoch)
        step = epoch_number(epoch)  # TensorBoard's x axis counts epochs as metrics.csv does
        for key, value in row.items():
            if key in ("epoch", "split", "seconds"):
                continue
            tag = f"loss_weight/{key[2:]}" if key.startswith("w_") else "lr" if key == "lr" else f"loss/{key}"
            self.writer.add_scalar(tag, float(value), step)
        for where, weights in gates.items():
            for teacher, weight in weights.items():
                self.writer.add_scalar(f"gate/{where}/{teacher}", weight, step)
        for key, value in val.items():
            if key.startswith("val_") and not math.isnan(float(value)):
                self.writer.add_scalar(f"val/{key[4:]}", float(value), step)
        for i, picture in enumerate(self._overlays()):
            self.writer.add_image(f"val/overlay/{i}", picture, step, dataformats="HWC")
        self.writer.flush()  # readable while training runs, not only at the end

    def _overlays(self) -> list[np.ndarray]:
        """The student's current prediction on the fixed validation samples, as RGB overlays."""
        from featcache.data.overlay import overlay_rgb

        if not self.samples:
            return []
        images = torch.stack([s["image"] for s in self.samples])
        was_training = self.student.training
        self.student.eval()
        with torch.no_grad():
            logits = self.student(images.to(self.device)).float().cpu()
        self.student.train(was_training)
        pictures = []
        for sample, logit in zip(self.samples, logits, strict=True):
            image = sample["image"].permute(1, 2, 0).numpy()
            pictures.append(overlay_rgb(image, logit[0].numpy() > 0, sample["mask"][0].numpy() > 0.5))
        return pictures

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
