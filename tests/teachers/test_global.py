"""The `global` level: every teacher's image-level vector, opt-in, equal to what each library
itself calls the image embedding; and RETFound-MAE's checkpoint layout loading through timm."""

from __future__ import annotations

import pytest
import torch

from featcache.teachers.base import GLOBAL
from featcache.teachers.registry import build_teacher
from tests.teachers.teacher_cases import CASES

torch.set_num_threads(1)


def _reference(case_name: str, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, D): the image-level vector as the teacher's own library computes it."""
    if case_name.startswith("timm"):
        return model.forward_head(model.forward_features(x), pre_logits=True)
    if case_name == "clip":
        return model(x)  # open_clip's image tower: pooled, ln_post, projected
    return model(x).mean(dim=(2, 3))  # SAM-like encoders: the neck, averaged over positions


@pytest.fixture(scope="module", params=sorted(CASES))
def built(request):
    return request.param, CASES[request.param].build()


def test_global_is_one_cell_over_the_whole_input_and_opt_in(built):
    _, teacher = built
    spec = teacher.available_levels[GLOBAL]
    assert spec.grid == (1, 1) and spec.stride == teacher.preprocess.size
    assert GLOBAL not in teacher.default_levels
    # the default entry key is the one it was before `global` existed
    assert teacher.fingerprint() == teacher.fingerprint(list(teacher.default_levels))
    assert teacher.fingerprint([*teacher.default_levels, GLOBAL]) != teacher.fingerprint()


def test_global_equals_the_librarys_own_image_vector(built):
    name, teacher = built
    x = torch.randn(2, 3, teacher.preprocess.size, teacher.preprocess.size,
                    generator=torch.Generator().manual_seed(0))
    alone = teacher.extract(x, [GLOBAL])[GLOBAL]
    spec = teacher.available_levels[GLOBAL]
    assert alone.shape == (2, spec.channels, 1, 1)
    with torch.inference_mode():
        ref = _reference(name, teacher.model, x)
    torch.testing.assert_close(alone[:, :, 0, 0], ref, rtol=1e-5, atol=1e-5)
    # asked with every other level, global and the maps are what each gives alone
    together = teacher.extract(x, list(teacher.available_levels))
    assert torch.equal(together[GLOBAL], alone)
    last = teacher.default_levels[0]
    assert torch.equal(together[last], teacher.extract(x, [last])[last])


def test_demo_entry_keys_are_unchanged():
    """The demo store stays a cache hit: LiteMedSAM's fingerprint for the demo's levels, as it was
    before the global level existed (weights bundled, sha256-checked: the same on any machine)."""
    lite = build_teacher("litemedsam")
    assert lite.fingerprint(["stage2", "embedding"]) == (
        "a3e1c0cac515250a3217586fac93096b76f39736ed8758430e64a71816fe1b4b")
    vit = build_teacher("timm", arch="vit_tiny_patch16_224", random_init=True)
    assert vit.default_levels == ("block11",)


RETFOUND_TINY = {"arch": "vit_large_patch16_224.mae", "img_size": 32,
                 "model_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2}}


def _mae_file(path, teacher: torch.nn.Module, extra: dict[str, torch.Tensor]) -> None:
    """A checkpoint laid out as RETFound-MAE's: {"model": encoder + MAE decoder, "epoch": int}."""
    state = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    torch.save({"model": {**state, **extra}, "epoch": 799}, path)


def test_retfound_mae_checkpoint_loads_through_timm_vit_large(tmp_path):
    source = build_teacher("timm", random_init=True, seed=3, **RETFOUND_TINY)
    decoder = {"mask_token": torch.zeros(1, 1, 16), "decoder_pos_embed": torch.zeros(1, 5, 16),
               "decoder_embed.weight": torch.ones(16, 32), "decoder_blocks.0.norm1.weight": torch.ones(16),
               "decoder_norm.weight": torch.ones(16), "decoder_pred.weight": torch.ones(768, 16)}
    _mae_file(tmp_path / "RETFound_cfp_weights.pth", source, decoder)
    loaded = build_teacher("timm", checkpoint=tmp_path / "RETFound_cfp_weights.pth", **RETFOUND_TINY)
    # RETFound normalises with ImageNet's mean/std: the .mae tag says so, plain ViT-L says 0.5
    assert loaded.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    levels = [GLOBAL, *loaded.default_levels]
    for name in levels:
        torch.testing.assert_close(loaded.extract(x, levels)[name], source.extract(x, levels)[name])


def test_finetuned_retfound_layout_loads_with_average_pooling(tmp_path):
    """A fine-tuned RETFound file has fc_norm (average pooling) and a classifier, no final norm."""
    options = {**RETFOUND_TINY, "model_kwargs": {**RETFOUND_TINY["model_kwargs"], "global_pool": "avg"}}
    source = build_teacher("timm", random_init=True, **options)
    assert not any(k.startswith("norm.") for k in source.model.state_dict())
    classifier = {"head.weight": torch.ones(5, 32), "head.bias": torch.ones(5)}
    _mae_file(tmp_path / "finetuned.pth", source, classifier)
    loaded = build_teacher("timm", checkpoint=tmp_path / "finetuned.pth", **options)
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(loaded.extract(x, [GLOBAL])[GLOBAL], source.extract(x, [GLOBAL])[GLOBAL])


def test_an_mae_file_missing_encoder_weights_still_fails(tmp_path):
    from featcache.errors import TeacherError

    source = build_teacher("timm", random_init=True, **RETFOUND_TINY)
    state = {k: v for k, v in source.model.state_dict().items() if not k.startswith("blocks.1.")}
    torch.save({"model": {**state, "mask_token": torch.zeros(1, 1, 16)}}, tmp_path / "cut.pth")
    with pytest.raises(TeacherError, match=r"missing \(e.g. blocks.1."):
        build_teacher("timm", checkpoint=tmp_path / "cut.pth", **RETFOUND_TINY)
