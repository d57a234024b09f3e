"""Builder options and the errors users see, per teacher."""

from __future__ import annotations

import pytest
import torch

from featcache.errors import TeacherError
from featcache.teachers.registry import build_teacher
from tests.teachers.teacher_cases import CLIP_TINY, SAM_TINY, TIMM_TINY


def test_demo_timm_call_builds_a_seeded_vit_tiny():
    before = torch.random.get_rng_state()
    a = build_teacher("timm", arch="vit_tiny_patch16_224", random_init=True)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is untouched
    assert a.weights_source == "random-init(seed=0)"
    assert {n: (s.channels, s.grid) for n, s in a.available_levels.items()} == {
        **{f"block{i}": (192, (14, 14)) for i in (2, 5, 8, 11)}, "global": (192, (1, 1))}
    assert a.default_levels == ("block11",)
    assert a.preprocess.size == 224 and a.preprocess.mean == (0.5, 0.5, 0.5)


def test_random_init_fingerprint_follows_the_seed():
    a, b = (build_teacher("timm", random_init=True, **TIMM_TINY) for _ in range(2))
    c = build_teacher("timm", random_init=True, seed=1, **TIMM_TINY)
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert c.weights_source == "random-init(seed=1)"


@pytest.mark.parametrize("name", ["timm", "sam", "medsam", "clip"])
def test_no_weights_says_what_to_pass(name):
    with pytest.raises(TeacherError, match="pass checkpoint .*, or random_init"):
        build_teacher(name, arch={"timm": "resnet18", "clip": "ViT-B-16"}.get(name))


def test_timm_errors():
    with pytest.raises(TeacherError, match="no model"):
        build_teacher("timm", arch="not_a_model_xyz", random_init=True)
    with pytest.raises(TeacherError, match="needs arch NAME") as caught:
        build_teacher("timm", random_init=True)
    assert caught.value.fields == ("arch",)
    with pytest.raises(TeacherError, match="multiple of its stride 32; pass img_size=64"):
        build_teacher("timm", arch="resnet18", random_init=True, img_size=70)


def test_sam_and_medsam_preprocessing_follow_their_code():
    sam = build_teacher("sam", random_init=True, **SAM_TINY)
    assert (sam.preprocess.resize, sam.preprocess.pixel_scale) == ("longest_side_pad", 255.0)
    assert sam.preprocess.mean == (123.675, 116.28, 103.53)
    med = build_teacher("medsam", random_init=True, **SAM_TINY)
    assert med.preprocess.resize == "resize"
    p = med.preprocess
    assert (p.mean, p.std, p.pixel_scale) == ((0.0,) * 3, (1.0,) * 3, 1.0)
    assert sam.fingerprint() != med.fingerprint()  # same weights, other preprocessing
    assert sam.arch.startswith("vit_b-custom")


def test_sam_errors():
    with pytest.raises(TeacherError, match="vit_b | vit_l | vit_h"):
        build_teacher("sam", arch="vit_x", random_init=True)
    with pytest.raises(TeacherError, match="unknown option"):
        build_teacher("sam", random_init=True, depht=2)
    with pytest.raises(TeacherError, match="ViT-B"):
        build_teacher("medsam", arch="vit_h", random_init=True)


def test_full_size_sam_levels_are_declared_without_weights():
    from featcache.teachers.sam import encoder_config, encoder_levels

    levels = encoder_levels(encoder_config("vit_b", {}))
    assert {n: (s.channels, s.grid) for n, s in levels.items()} == {
        "block2": (768, (64, 64)), "block5": (768, (64, 64)), "block8": (768, (64, 64)),
        "block11": (768, (64, 64)), "neck": (256, (64, 64)), "global": (256, (1, 1))}


def test_clip_refuses_hub_names_and_unknown_models(tmp_path):
    with pytest.raises(TeacherError, match="download"):
        build_teacher("clip", arch="hf-hub:org/model", random_init=True)
    with pytest.raises(TeacherError, match="no model"):
        build_teacher("clip", arch="ViT-Nope", random_init=True)
    with pytest.raises(TeacherError, match="open_clip_config.json"):
        build_teacher("clip", checkpoint=tmp_path)


def test_clip_loads_a_local_model_directory(tmp_path):
    import json

    from safetensors.torch import save_file

    ref = build_teacher("clip", random_init=True, **CLIP_TINY)
    save_file({"visual." + k: v.contiguous() for k, v in ref.model.state_dict().items()},
              str(tmp_path / "open_clip_model.safetensors"))
    (tmp_path / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": CLIP_TINY["model_kwargs"], "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.5] * 3}}))
    teacher = build_teacher("clip", checkpoint=tmp_path)
    assert teacher.preprocess.mean == (0.5, 0.5, 0.5)
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(teacher.extract(x, ["block3"])["block3"], ref.extract(x, ["block3"])["block3"])
