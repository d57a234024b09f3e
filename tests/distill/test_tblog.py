import sys

import pytest

from featcache.distill.trainer import Trainer, train
from featcache.errors import ConfigError
from tests.distill.conftest import make_manifest


def read_events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


def test_tensorboard_logs_losses_weights_gates_dice_and_overlays(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run", training={"log": ["csv", "tensorboard"]})
    train(manifest)
    log_dir = tmp_path / "run" / "tensorboard"
    assert list(log_dir.glob("events.out.tfevents.*"))
    events = read_events(log_dir)
    scalars = set(events.Tags()["scalars"])
    assert {"loss/loss", "loss/feat", "loss/recon", "val/score", "val/dice/blobs", "val/pooled_dice/blobs",
            "lr"} <= scalars
    assert {t for t in scalars if t.startswith("loss_weight/")}
    assert {"gate/blobs/dec3/tiny", "gate/blobs/dec3/tiny2", "gate/blobs/enc3/tiny2"} <= scalars
    assert [e.step for e in events.Scalars("val/dice/blobs")] == [1, 2]  # epochs numbered as in metrics.csv
    assert all(0 <= e.value <= 1 for e in events.Scalars("val/score"))
    images = events.Tags()["images"]
    assert "val/overlay/0" in images
    picture = events.Images("val/overlay/0")[-1]
    assert picture.encoded_image_string.startswith(b"\x89PNG") and picture.width >= 32
    assert (tmp_path / "run" / "metrics.csv").is_file()  # csv is still written beside it


def test_default_log_writes_no_tensorboard_folder(cached_store, tmp_path):
    manifest = make_manifest(cached_store, tmp_path / "run", training={"epochs": 1})
    assert manifest.training.log == ["csv"]
    train(manifest)
    assert (tmp_path / "run" / "metrics.csv").is_file()
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_missing_tensorboard_package_fails_before_training(cached_store, tmp_path, monkeypatch):
    # None in sys.modules makes `import tensorboard` raise ImportError, as when it is not installed.
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    manifest = make_manifest(cached_store, tmp_path / "run", training={"log": ["csv", "tensorboard"]})
    with pytest.raises(ConfigError) as err:
        Trainer(manifest)
    assert str(err.value) == ('training.log: tensorboard needs the tensorboard package: '
                              'pip install "featcache[tensorboard]"')
    assert not (tmp_path / "run").exists()


def test_log_must_keep_csv(cached_store, tmp_path):
    with pytest.raises(ConfigError, match=r"training\.log.*must include csv"):
        make_manifest(cached_store, tmp_path / "run", training={"log": ["tensorboard"]})
