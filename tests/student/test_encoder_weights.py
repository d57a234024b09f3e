"""The bundled ImageNet EfficientNet-Lite0: every tensor renamed, the same function as the
reference implementation, and the normalisation its weights expect inside the student."""

import pytest
import timm
import torch

from featcache.errors import CheckpointError, ConfigError
from featcache.manifest import StudentConfig
from featcache.student import Student, count_params
from featcache.student.encoder_weights import bundled_weights_path, imagenet_state, lite_to_timm


def test_every_tensor_is_mapped_and_none_left_over():
    raw = torch.load(bundled_weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    converted = lite_to_timm(raw)
    assert len(raw) == len(converted) == 296
    model = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    model.load_state_dict(converted, strict=True)  # no key missing, none unexpected, shapes agree


def test_converted_network_computes_what_the_reference_computes():
    reference_impl = pytest.importorskip("efficientnet_lite_pytorch")
    reference = reference_impl.EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(bundled_weights_path("efficientnet_lite0"), weights_only=True))
    ours = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    ours.load_state_dict(imagenet_state("efficientnet_lite0"))
    x = torch.rand(2, 3, 96, 96) * 2 - 1  # the weights' input range: (image - 0.5) / 0.5
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), reference.eval()(x), atol=1e-4, rtol=1e-4)


def test_student_applies_the_weights_normalisation_itself():
    student = Student(StudentConfig(encoder_weights="imagenet")).eval()
    assert student.config.input_mean == [0.5, 0.5, 0.5] and student.config.input_std == [0.5, 0.5, 0.5]
    assert 8.6e6 < count_params(student) < 8.9e6  # the paper's ~8.8M student
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        feats = student.forward_features(x)[1]["enc1"]
        direct = student.encoder((x - 0.5) / 0.5)[0]
    torch.testing.assert_close(feats, direct)
    # The state dict stays what it was: normalisation travels in the config.
    assert not any("input_mean" in k for k in student.state_dict())
    grey = Student(StudentConfig(encoder_weights="imagenet", in_channels=1))
    assert grey.config.input_mean == [0.5] and grey.encoder.conv_stem.weight.shape[1] == 1


def test_weights_errors_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="bundled only for efficientnet_lite0"):
        Student(StudentConfig(encoder="mobilenetv3_small_050", encoder_weights="imagenet"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv_stem.weight": torch.zeros(1)}, wrong)
    with pytest.raises(CheckpointError, match="encoder tensor"):
        Student(StudentConfig(encoder_weights=str(wrong)))
    with pytest.raises(ConfigError, match="does not exist"):
        Student(StudentConfig(encoder_weights=str(tmp_path / "missing.pth")))


def test_a_local_timm_checkpoint_still_loads(tmp_path):
    source = Student(StudentConfig(encoder="mobilenetv3_small_050", decoder_channels=[8, 8, 8, 8, 8],
                                   encoder_weights=None))
    path = tmp_path / "enc.pth"
    torch.save(source.encoder.state_dict(), path)
    loaded = Student(StudentConfig(encoder="mobilenetv3_small_050", decoder_channels=[8, 8, 8, 8, 8],
                                   encoder_weights=str(path)))
    for k, v in source.encoder.state_dict().items():
        assert torch.equal(v, loaded.encoder.state_dict()[k])
