from pathlib import Path

import pytest

from featcache.errors import ConfigError
from featcache.manifest import load_manifest, manifest_from_dict, same_settings

# Study configs for pipelines/paper.py are validated by tests/study/test_paper.py.
MANIFESTS = sorted(p for p in (Path(__file__).parents[2] / "manifests").glob("*.yaml")
                   if not p.name.startswith("paper"))


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_shipped_manifest_validates(path):
    manifest = load_manifest(path)
    assert manifest.datasets


def test_overrides_and_errors(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("datasets: [{name: demo}]\n")
    m = load_manifest(path, ["training.epochs=3", "distill.teacher_gate=uniform", "datasets.0.root=/x"])
    assert m.training.epochs == 3 and m.distill.teacher_gate == "uniform" and m.datasets[0].root == "/x"
    with pytest.raises(ConfigError, match="distill.teacher_gate"):
        load_manifest(path, ["distill.teacher_gate=sometimes"])
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_manifest(path, ["training.epochs"])
    path.write_text("datasets: [{name: demo}]\nloss: !!python/object/apply:os.system ['touch x']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_manifest(path)


def test_a_run_saved_before_a_setting_existed_has_the_same_settings():
    """Runs and checkpoints store their manifest as dumped then: a setting added to featcache
    since (here training.worker_priority) takes its default, so the run still resumes and the
    ablation still reuses it; a changed or no longer known setting still counts as different."""
    manifest = manifest_from_dict({"datasets": [{"name": "demo"}]}, "m")
    saved = manifest.model_dump(mode="json")
    del saved["training"]["worker_priority"]
    assert same_settings(saved, manifest)
    assert not same_settings({**saved, "training": {**saved["training"], "epochs": 3}}, manifest)
    assert not same_settings({**saved, "retired_setting": 1}, manifest)


@pytest.mark.parametrize(("override", "key"), [
    ("training.epochs=true", "training.epochs"), ("training.lr=.nan", "training.lr"),
    ("training.lr=0", "training.lr"), ("student.image_size=0", "student.image_size"),
    ("training.batch_size='4'", "training.batch_size"),
    ("distill.return_decoder=1", "distill.return_decoder")])
def test_values_are_validated_strictly(tmp_path, override, key):
    path = tmp_path / "m.yaml"
    path.write_text("datasets: [{name: demo}]\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_manifest(path, [override])


def test_exponent_floats_are_numbers(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("datasets: [{name: demo}]\ntraining: {lr: 1e-3}\n")
    assert load_manifest(path).training.lr == 0.001
    assert load_manifest(path, ["training.weight_decay=5e-5"]).training.weight_decay == 5e-5


def test_taps_and_the_pretrained_default():
    m = manifest_from_dict({"datasets": [{"name": "demo"}],
                            "teachers": [{"name": "t", "levels": {"a": ["enc3", "dec3"], "b": "dec3"}}]}, "m")
    assert m.teachers[0].taps() == [("a", "enc3"), ("a", "dec3"), ("b", "dec3")]
    assert m.student.encoder == "efficientnet_lite0" and m.student.encoder_weights == "imagenet"
    with pytest.raises(ConfigError, match="name no student stage"):
        manifest_from_dict({"datasets": [{"name": "demo"}], "teachers": [{"name": "t", "levels": {"a": []}}]},
                           "m")


def test_switching_the_log_does_not_make_a_run_different():
    manifest = manifest_from_dict({"datasets": [{"name": "demo"}]}, "m")
    saved = manifest.model_dump(mode="json")
    saved["training"]["log"] = ["csv", "tensorboard"]
    assert same_settings(saved, manifest)
