"""A tiny trained-looking run directory: a 1-channel student on a ~80k-parameter timm test encoder,
best/last checkpoints, metrics.csv and gates.csv."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from featcache.manifest import StudentConfig
from featcache.runs import Checkpoint, Run
from featcache.student import Student

TINY = StudentConfig(encoder="test_efficientnet", encoder_weights=None, in_channels=1,
                     decoder_channels=[16, 8, 8, 8, 8])
IMAGE_SIZE = 64


def make_run(run_dir: Path, config: StudentConfig = TINY, image_size: int = IMAGE_SIZE,
             **checkpoint_fields) -> Path:
    torch.manual_seed(0)
    student = Student(config).eval()
    # The built student's config: what the trainer saves (defaults such as the input normalisation resolved).
    checkpoint = Checkpoint(epoch=3, student_config=student.config.model_copy(
                                update={"image_size": image_size}),
                            student=student.state_dict(), saved_manifest={"datasets": [{"name": "demo"}]},
                            best_val_dice=0.42, **checkpoint_fields)
    for which in ("best", "last"):
        Run(run_dir).save_checkpoint(which, checkpoint)
    with (run_dir / "metrics.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "split", "loss_seg", "loss_distill", "val_dice"])
        for e in range(4):
            w.writerow([e, "train", 1.0 / (e + 1), 0.5 / (e + 1), ""])
            w.writerow([e, "val", "", "", 0.1 * e])
    with (run_dir / "gates.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["epoch", "dataset", "stage", "teacher", "weight"])
        for e in range(4):
            for level in ("l1", "l2"):
                w.writerow([e, "demo", level, "sam", 0.5 + 0.1 * e])
                w.writerow([e, "demo", level, "clip", 0.5 - 0.1 * e])
    return run_dir


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    torch.set_num_threads(1)
    return make_run(tmp_path_factory.mktemp("run"))


def blob_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 (H, W): a bright disc on noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 4) ** 2
    return np.clip(rng.normal(60, 20, (h, w)) + 140 * disc, 0, 255).astype(np.uint8)
