"""The run directory's owner: its file names, and checkpoints read back typed, old ones included."""

from __future__ import annotations

import pytest
import torch

from featcache.errors import CheckpointError
from featcache.manifest import StudentConfig
from featcache.runs import FORMAT, Checkpoint, Run
from featcache.student import Student

TINY = StudentConfig(encoder="test_efficientnet", encoder_weights=None, in_channels=1,
                     decoder_channels=[16, 8, 8, 8, 8])


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
    config = student.config.model_copy(update={"image_size": 64})
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
    config = student.config.model_dump(mode="json", exclude={"input_mean", "input_std", "image_size"})
    config["encoder_kwargs"] = {}  # what the dataclass config of those versions also wrote
    (tmp_path / "checkpoints").mkdir()
    torch.save({"format": FORMAT, "epoch": 0, "student_config": config, "student": student.state_dict(),
                "image_size": 32, "store": {"url": "/data/store"}, "entries": [{"key": "demo.sam.1"}],
                "manifest": {"datasets": [{"name": "demo"}], "training": {"retired_setting": 1}}},
               tmp_path / "checkpoints" / "last.pt")
    checkpoint = Run(tmp_path).load_checkpoint("last")
    assert checkpoint.student_config.input_mean == [0.0]  # it fed [0, 1] images unchanged
    assert checkpoint.image_size == checkpoint.student_config.image_size == 32
    assert checkpoint.store == "/data/store" and list(checkpoint.entries.values()) == ["demo.sam.1"]
    assert checkpoint.manifest.datasets[0].name == "demo" and checkpoint.best_val_dice is None


def test_a_checkpoint_loads_without_its_encoder_weights_file(tmp_path):
    """A run trained from a local encoder file, moved to a machine without that file."""
    student = Student(TINY)
    config = student.config.model_copy(update={"image_size": 64, "encoder_weights": "/gone/enc.pth"})
    Run(tmp_path).save_checkpoint("best", Checkpoint(epoch=0, student_config=config,
                                                     student=student.state_dict()))
    loaded, _ = Run(tmp_path).load_student("best")
    assert loaded.config == config  # as trained, for the report
    x = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(loaded(x), student.eval()(x))


def test_bad_checkpoints_are_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="run directory .* does not exist"):
        Run(tmp_path / "nowhere").load_checkpoint()
    (tmp_path / "checkpoints").mkdir()
    torch.save({"format": FORMAT, "epoch": 0}, tmp_path / "checkpoints" / "best.pt")
    with pytest.raises(CheckpointError, match="lacks student_config, student, image_size"):
        Run(tmp_path).load_checkpoint()


def test_the_manifest_student_is_the_checkpoint_config():
    """One model: what the manifest asks for is what the checkpoint stores, resolved."""
    from featcache.manifest import Manifest

    manifest = Manifest.model_validate({"datasets": [{"name": "demo"}], "student": TINY.model_dump()})
    built = Student(manifest.student).config
    assert len(built.input_mean) == len(built.input_std) == 1  # resolved from the encoder
    assert built.model_copy(update={"input_mean": None, "input_std": None}) == TINY
    # Left to the encoder, the normalisation is not written: manifests saved before the field
    # existed (manifest.yaml, checkpoints, pretraining recipes) dump the same.
    assert "input_mean" not in manifest.model_dump(mode="json")["student"]
    assert built.model_dump(mode="json")["input_std"] == built.input_std


def test_a_checkpoint_whose_config_does_not_validate_is_one_line(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    torch.save({"format": FORMAT, "epoch": 0, "student": {}, "image_size": 32,
                "student_config": {"in_channels": 1, "input_mean": [0.5, 0.5]}},
               tmp_path / "checkpoints" / "best.pt")
    with pytest.raises(CheckpointError, match="student config does not validate: .*input_mean needs 1"):
        Run(tmp_path).load_checkpoint()


def test_naming_a_runs_files_stays_light():
    """eval's output helpers and the CLI import Run; torch and timm load only with a checkpoint."""
    import subprocess
    import sys

    code = ("import sys, featcache.runs, featcache.evaluate.outputs\n"
            "print([m for m in ('torch', 'timm') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_only_the_run_module_spells_the_run_directorys_files():
    """A run file renamed in runs/layout.py is renamed everywhere: no other module joins these names."""
    import ast
    from pathlib import Path

    import featcache

    names = {"manifest.yaml", "best.pt", "last.pt", "pretrained.pt", "metrics.csv", "gates.csv",
             "study_train.json", "per_image.csv", "summary.json", "report.md", "report.html",
             "per_image_classes.csv"}
    root = Path(featcache.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        if path == root / "runs" / "layout.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                found.append(f"{path.relative_to(root)}:{node.lineno} {node.value}")
    assert not found, found
