"""The student's heads: the mask decoder's channels and one classification head per dataset, and
binary students saved before either existed."""

from __future__ import annotations

import pytest
import torch

from featcache.errors import ConfigError
from featcache.manifest import Manifest, StudentConfig, same_settings
from featcache.runs import FORMAT, Checkpoint, Run
from featcache.student import Student, count_params

TINY = StudentConfig(encoder="test_efficientnet", encoder_weights=None, in_channels=1,
                     decoder_channels=[16, 8, 8, 8, 8])


def test_binary_student_has_one_mask_channel_and_no_classifiers():
    student = Student(TINY).eval()
    logits, named = student.forward_features(torch.rand(2, 1, 64, 64))
    assert student.mask_channels == 1 and logits.shape == (2, 1, 64, 64)
    assert len(student.classifiers) == 0 and student(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_multiclass_decoder_and_classification_heads_have_their_shapes():
    config = TINY.model_copy(update={"mask_classes": 3, "classifiers": {"aptos2019": 5, "isic2017": 3}})
    student = Student(config).eval()
    x = torch.rand(2, 1, 64, 64)
    logits, named = student.forward_features(x)
    assert student.mask_channels == 4 and logits.shape == (2, 4, 64, 64)
    assert student(x).shape == (2, 4, 64, 64)  # forward (the exported path) is the mask path
    last = max(k for k in named if k.startswith("enc"))
    assert student.classifiers["aptos2019"].in_features == named[last].shape[1]
    for head, n in (("aptos2019", 5), ("isic2017", 3)):
        assert student.classify(named, head).shape == (2, n)
        # predict_classes runs the encoder only and gives the same logits
        torch.testing.assert_close(student.predict_classes(x, head), student.classify(named, head))
    with pytest.raises(ConfigError, match="no classification head 'busi'; it has aptos2019, isic2017"):
        student.predict_classes(x, "busi")


def test_count_params_includes_every_head():
    plain = count_params(Student(TINY))
    headed = Student(TINY.model_copy(update={"mask_classes": 2, "classifiers": {"a": 5}}))
    c_last = headed.classifiers["a"].in_features
    cin = headed.head.in_channels
    # the mask head grows by two output channels, the classifier adds a (C_last -> 5) linear layer
    assert count_params(headed) == plain + 2 * (cin + 1) + c_last * 5 + 5


def test_defaults_are_left_out_of_the_dump_so_old_manifests_compare_equal():
    dumped = TINY.model_dump(mode="json")
    # exactly the keys a student dumped before the heads (what pretraining recipes hash)
    assert set(dumped) == {"encoder", "in_channels", "decoder_channels", "encoder_weights", "image_size"}
    headed = TINY.model_copy(update={"mask_classes": 2, "classifiers": {"a": 5}}).model_dump(mode="json")
    assert headed["mask_classes"] == 2 and headed["classifiers"] == {"a": 5}
    old = {"datasets": [{"name": "demo"}], "student": {"encoder": "test_efficientnet", "in_channels": 1}}
    manifest = Manifest.model_validate(old)
    assert same_settings(manifest.model_dump(mode="json"), manifest)
    assert manifest.model_dump(mode="json")["student"] == Manifest.model_validate(
        {**old, "student": {**old["student"], "mask_classes": 1, "classifiers": {}}}
    ).model_dump(mode="json")["student"]


def test_bad_head_settings_are_named():
    with pytest.raises(ValueError, match="mask_classes"):
        StudentConfig(mask_classes=0)
    with pytest.raises(ValueError, match="classifier 'aptos2019' needs at least 2 classes"):
        StudentConfig(classifiers={"aptos2019": 1})


def test_a_binary_checkpoint_from_before_the_heads_loads_and_predicts_the_same(tmp_path):
    torch.manual_seed(0)
    student = Student(TINY).eval()
    config = student.config.model_dump(mode="json", exclude={"image_size"})
    assert "mask_classes" not in config and "classifiers" not in config  # what older versions wrote
    state = student.state_dict()
    assert not any(k.startswith("classifiers") for k in state) and state["head.weight"].shape[0] == 1
    (tmp_path / "checkpoints").mkdir()
    torch.save({"format": FORMAT, "epoch": 1, "student_config": config, "student": state,
                "image_size": 64, "manifest": {"datasets": [{"name": "demo"}]}},
               tmp_path / "checkpoints" / "best.pt")
    loaded, checkpoint = Run(tmp_path).load_student("best")
    assert checkpoint.student_config.mask_classes == 1 and checkpoint.student_config.classifiers == {}
    x = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(loaded(x), student(x))
    # saving it again writes the same config as before the fields existed
    Run(tmp_path).save_checkpoint("last", Checkpoint(epoch=1, student_config=checkpoint.student_config,
                                                     student=loaded.state_dict()))
    raw = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert raw["student_config"] == config


def test_a_headed_checkpoint_round_trips(tmp_path):
    config = TINY.model_copy(update={"mask_classes": 2, "classifiers": {"isic2017": 3}, "image_size": 64})
    student = Student(config).eval()
    Run(tmp_path).save_checkpoint("best", Checkpoint(epoch=0, student_config=student.config,
                                                     student=student.state_dict()))
    loaded, checkpoint = Run(tmp_path).load_student("best")
    assert checkpoint.student_config.classifiers == {"isic2017": 3} and loaded.mask_channels == 3
    x = torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(loaded.predict_classes(x, "isic2017"), student.predict_classes(x, "isic2017"))
