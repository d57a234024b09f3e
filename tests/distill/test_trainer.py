import csv

import pytest
import torch
import yaml

from featcache.distill.trainer import Trainer, train
from featcache.errors import StoreError
from featcache.events import EpochDone
from featcache.runs import Run
from tests.conftest import BlobDataset
from tests.distill.conftest import make_manifest


def test_training_step_lowers_loss(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run", training={"epochs": 30})
    trainer = Trainer(manifest)
    batch = next(trainer._train_batches(0))
    first = float(trainer.train_step(batch)["loss"].detach())
    for _ in range(25):
        last = float(trainer.train_step(batch)["loss"].detach())
    assert last < first


def test_train_writes_run_and_gates(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run")
    result = train(manifest)
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file()
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [(int(r["epoch"]), r["split"]) for r in rows] == [(1, "train"), (1, "val"), (2, "train"),
                                                             (2, "val")]
    assert "feat" in rows[0] and "recon" in rows[0] and 0 <= float(rows[1]["val_score"]) <= 1
    assert rows[1]["val_dice/blobs"] == rows[1]["val_score"]  # one dataset: the score is its Dice
    gates = list(csv.DictReader((tmp_path / "run" / "gates.csv").open()))
    assert {g["teacher"] for g in gates if g["stage"] == "dec3"} == {"tiny", "tiny2"}
    assert set(result.gates["blobs/dec3"]) == {"tiny", "tiny2"}
    student, checkpoint = Run(tmp_path / "run").load_student("best")
    assert student(torch.rand(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    assert checkpoint.entries["blobs/tiny"] and checkpoint.manifest.run_dir == str(tmp_path / "run")
    # The dataset's input recipe travels with the weights (what predict and export read it with).
    assert checkpoint.recipes == {"blobs": BlobDataset().recipe}


def test_resume_equals_uninterrupted(cached_store, tmp_path, monkeypatch):
    monkeypatch.setattr("featcache.distill.trainer.LAST_CHECKPOINT_EVERY_S", 0.0)  # one per epoch
    full = make_manifest(cached_store, tmp_path / "full", training={"epochs": 2})
    train(full)
    part = make_manifest(cached_store, tmp_path / "part", training={"epochs": 2})

    def kill_after_first_epoch(event):
        if isinstance(event, EpochDone):
            raise KeyboardInterrupt  # as if the job were killed after epoch 0's checkpoint

    with pytest.raises(KeyboardInterrupt):
        Trainer(part, kill_after_first_epoch).train()
    trainer2 = Trainer(make_manifest(cached_store, tmp_path / "part", training={"epochs": 2}))
    trainer2.resume()
    trainer2.train()
    a, _ = Run(tmp_path / "full").load_student("last")
    b, _ = Run(tmp_path / "part").load_student("last")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(va.float(), vb.float(), atol=1e-6), k


def test_missing_entry_is_a_clear_error(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run",
                             teachers=[{"name": "sam", "levels": {"neck": "dec3"}}])
    with pytest.raises(StoreError, match="featcache extract --teacher sam --dataset blobs"):
        Trainer(manifest)


def test_supervised_baseline_needs_no_store(tmp_path, blob_registry):
    from featcache.manifest import manifest_from_dict
    from tests.distill.conftest import TINY_STUDENT

    manifest = manifest_from_dict({"store": str(tmp_path / "nope"), "run_dir": str(tmp_path / "r"),
                                   "datasets": [{"name": "blobs"}], "student": TINY_STUDENT,
                                   "distill": {"enabled": False},
                                   "training": {"epochs": 1, "batch_size": 4}}, "t")
    result = train(manifest)
    assert result.best_val_dice >= 0 and not Trainer(manifest).model.projectors


def test_a_run_dir_is_reused_only_with_resume_or_overwrite(cached_store, tmp_path):
    from featcache.errors import ConfigError

    manifest = make_manifest(cached_store, tmp_path / "run", training={"epochs": 1})
    train(manifest)
    before = (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes()
    with pytest.raises(ConfigError, match="already holds a run.*pass resume to continue it, overwrite"):
        train(manifest)
    assert (tmp_path / "run" / "checkpoints" / "last.pt").read_bytes() == before  # untouched
    train(manifest, overwrite=True)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "1"]  # one run's rows, not two
    # Resuming it with other settings is refused; the CLI names its flag for the overrides.
    from typer.testing import CliRunner

    from featcache.cli import app

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["distill", "--manifest", str(path), "--resume",
                                      "--set", "training.lr=0.1"])
    assert result.exit_code == 1 and "resume with the same manifest and --set options" in result.output


def test_the_resume_point_is_written_first_once_a_minute_and_last(cached_store, tmp_path, monkeypatch):
    saved = []
    real = Run.save_checkpoint

    def recording(run, which, checkpoint):
        saved.append((which, checkpoint.epoch))
        real(run, which, checkpoint)

    monkeypatch.setattr(Run, "save_checkpoint", recording)
    train(make_manifest(cached_store, tmp_path / "run", training={"epochs": 3}))
    # a short run: after the first epoch (kill -9 then loses one epoch, not the run) and the last
    assert [e for which, e in saved if which == "last"] == [0, 2]
