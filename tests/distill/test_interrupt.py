"""An interrupted run always resumes: Ctrl-C or SIGTERM mid-epoch leaves last.pt at the step
training stood at, --resume continues from there, and a run without a resume point says what it
holds and what to run."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from featcache.distill.trainer import Trainer, train
from featcache.errors import CheckpointError
from featcache.events import TrainingStep
from featcache.runs import Run
from tests.distill.conftest import TINY_STUDENT, make_manifest


def _state(run_dir):
    student, checkpoint = Run(run_dir).load_student("last")
    return student.state_dict(), checkpoint


def test_an_interrupt_mid_epoch_resumes_where_it_stopped(cached_store, tmp_path):
    full = make_manifest(cached_store, tmp_path / "full", training={"epochs": 2, "batch_size": 2})
    train(full)
    part = make_manifest(cached_store, tmp_path / "part", training={"epochs": 2, "batch_size": 2})

    def ctrl_c_at_second_step(event):
        if isinstance(event, TrainingStep) and event.step == 2 and event.epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(part, ctrl_c_at_second_step).train()
    _, saved = _state(tmp_path / "part")
    assert (saved.epoch, saved.steps_into_next) == (-1, 2)  # 2 steps into epoch 0
    resumed = Trainer(part)
    resumed.resume()
    resumed.train()
    resumed.close()
    a, _ = _state(tmp_path / "full")
    b, _ = _state(tmp_path / "part")
    for k, va in a.items():
        assert torch.allclose(va.float(), b[k].float(), atol=1e-6), k


def test_resume_without_a_resume_point_says_what_is_there(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run", training={"epochs": 1})
    train(manifest)
    Run(tmp_path / "run").checkpoint_file("last").unlink()
    with pytest.raises(CheckpointError) as info:
        train(manifest, resume=True)
    message = str(info.value)
    assert "no resume point" in message and "checkpoints/best.pt" in message and "overwrite" in message
    assert info.value.fields == ("overwrite",)


def _folder_dataset(root):
    rng = np.random.default_rng(0)
    for i in range(12):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"s{i}.png")
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 6 + i:18 + i] = 255
        Image.fromarray(mask).save(root / "masks" / f"s{i}.png")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_featcache_distill_leaves_a_resume_point(tmp_path, sig):
    _folder_dataset(tmp_path / "data")
    manifest = {"run_dir": str(tmp_path / "run"), "store": str(tmp_path / "store"),
                "datasets": [{"name": "folder", "root": str(tmp_path / "data")}],
                "student": dict(TINY_STUDENT), "distill": {"enabled": False},
                "training": {"steps": 4000, "batch_size": 2, "num_workers": 0, "seed": 0}}
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest))
    command = [sys.executable, "-m", "featcache", "distill", "--manifest", str(path)]
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output = []
    for line in proc.stdout:  # the student line is printed when the training loop starts
        output.append(line)
        if line.startswith("student:"):
            break
    time.sleep(1.0)
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=120)
    output.append(rest)
    said = " ".join("".join(output).split())
    assert proc.returncode == 130, said
    assert f"continue with featcache distill --manifest {path} --resume" in said
    checkpoint = Run(tmp_path / "run").load_resume_point()  # written at the interrupt
    assert checkpoint.training is not None and checkpoint.epoch < 999


def test_an_interrupt_during_feature_pretraining_leaves_no_half_resume_point(cached_store, tmp_path):
    from featcache.events import PretrainStep

    pretrain = {"datasets": [{"name": "blobs", "train_split": "all"}], "steps": 4, "batch_size": 4}
    manifest = make_manifest(cached_store, tmp_path / "run", pretrain=pretrain, training={"epochs": 1})

    def ctrl_c(event):
        if isinstance(event, PretrainStep) and event.step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(manifest, ctrl_c).train()
    assert not Run(tmp_path / "run").checkpoint_file("last").exists()  # a fresh run starts it again
