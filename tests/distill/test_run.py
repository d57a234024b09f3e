"""The run directory's owner: its file names, and checkpoints read back typed, old ones included."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from featcache.distill.run import FORMAT, Checkpoint, Run
from featcache.distill.student import Student, StudentConfig
from featcache.errors import CheckpointError

TINY = StudentConfig(encoder="test_efficientnet", in_channels=1, decoder_channels=(16, 8, 8, 8, 8))


def test_the_run_names_its_files(tmp_path):
    run = Run(tmp_path)
    assert run.checkpoint_file("best") == tmp_path / "checkpoints" / "best.pt"
    assert run.pretrained_file == tmp_path / "checkpoints" / "pretrained.pt"
    assert run.eval_overlay("demo", "s1") == tmp_path / "eval" / "overlays" / "demo" / "s1.png"
    assert [p.relative_to(tmp_path).as_posix() for p in run.training_files()] == [
        "checkpoints/last.pt", "checkpoints/best.pt", "metrics.csv", "gates.csv"]
    with pytest.raises(CheckpointError, match="unknown checkpoint 'middle'; use best or last"):
        run.checkpoint_file("middle")


def test_a_saved_checkpoint_loads_typed_and_with_weights_only(tmp_path):
    student = Student(TINY)
    config = replace(student.config, image_size=64)
    saved = Checkpoint(epoch=2, student_config=config, student=student.state_dict(),
                       saved_manifest={"datasets": [{"name": "demo"}], "store": "s3://b/store"},
                       best_val_dice=0.5, best_epoch=1, entries={"demo/sam": "demo.sam.1"})
    Run(tmp_path).save_checkpoint("best", saved)
    raw = torch.load(tmp_path / "checkpoints" / "best.pt", weights_only=True)  # no pickled code
    assert raw["format"] == FORMAT and raw["image_size"] == 64  # beside the config, as always
    assert "image_size" not in raw["student_config"]  # so older versions read the file too
    loaded, checkpoint = Run(tmp_path).load_student("best")
    assert checkpoint.epoch == 2 and checkpoint.image_size == 64 and checkpoint.best_epoch == 1
    assert checkpoint.student_config == config  # input normalisation and image size included
    assert checkpoint.manifest.datasets[0].name == "demo" and checkpoint.store == "s3://b/store"
    assert checkpoint.entries == {"demo/sam": "demo.sam.1"} and checkpoint.training is None
    x = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(loaded(x), student.eval()(x))


def test_an_old_checkpoint_still_loads(tmp_path):
    """Before input normalisation (no input_mean/std), with entries as a list, the store as a dict
    and a manifest setting that no longer exists."""
    student = Student(TINY)
    config = {k: v for k, v in student.config.to_dict().items() if k not in ("input_mean", "input_std")}
    (tmp_path / "checkpoints").mkdir()
    torch.save({"format": FORMAT, "epoch": 0, "student_config": config, "student": student.state_dict(),
                "image_size": 32, "store": {"url": "/data/store"}, "entries": [{"key": "demo.sam.1"}],
                "manifest": {"datasets": [{"name": "demo"}], "training": {"retired_setting": 1}}},
               tmp_path / "checkpoints" / "last.pt")
    checkpoint = Run(tmp_path).load_checkpoint("last")
    assert checkpoint.student_config.input_mean == (0.0,)  # it fed [0, 1] images unchanged
    assert checkpoint.image_size == checkpoint.student_config.image_size == 32
    assert checkpoint.store == "/data/store" and list(checkpoint.entries.values()) == ["demo.sam.1"]
    assert checkpoint.manifest.datasets[0].name == "demo" and checkpoint.best_val_dice is None


def test_bad_checkpoints_are_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="run directory .* does not exist"):
        Run(tmp_path / "nowhere").load_checkpoint()
    (tmp_path / "checkpoints").mkdir()
    torch.save({"format": FORMAT, "epoch": 0}, tmp_path / "checkpoints" / "best.pt")
    with pytest.raises(CheckpointError, match="lacks student_config, student, image_size"):
        Run(tmp_path).load_checkpoint()


def test_the_manifest_student_becomes_the_checkpoint_config():
    from featcache.manifest import StudentSpec

    spec = StudentSpec(encoder="test_efficientnet", in_channels=1, decoder_channels=[16, 8, 8, 8, 8],
                       encoder_weights=None, image_size=64)
    assert StudentConfig.from_spec(spec) == replace(TINY, image_size=64)
    assert StudentConfig.from_spec(StudentSpec(), with_weights=False).encoder_weights is None
    assert StudentConfig.from_spec(StudentSpec()).encoder_weights == "imagenet"


def test_naming_a_runs_files_stays_light():
    """eval's output helpers and the CLI import Run; torch and timm load only with a checkpoint."""
    import subprocess
    import sys

    code = ("import sys, featcache.distill.run, featcache.evaluate.outputs\n"
            "print([m for m in ('torch', 'timm') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
