"""The distillation losses run with a hand-written gradient: values and gradients must equal the
plain formulas' (autograd through them), including masked and padded positions, and positions
where the cosine's norm floor holds."""

import pytest
import torch
import torch.nn.functional as F

from featcache.distill.losses import feature_loss, reconstruction_loss, relative_reconstruction_loss


def _cos(x, y):
    dot = (x * y).sum(1, keepdim=True)
    return dot / (x.square().sum(1, keepdim=True) * y.square().sum(1, keepdim=True)).clamp_min(1e-12).sqrt()


def plain_feature_loss(pred, target, valid):
    def masked_mean(v):
        return (v.mean(1, keepdim=True) * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1e-6)

    l1 = F.smooth_l1_loss(pred, target, reduction="none")
    return 0.9 * masked_mean(1 - _cos(pred, target)) + 0.1 * masked_mean(l1)


def plain_reconstruction_loss(recon, original):
    diff = recon - original
    return (0.5 * diff.square().mean((1, 2, 3)) + 0.3 * diff.abs().mean((1, 2, 3))
            + 0.2 * (1 - _cos(recon, original).mean((1, 2, 3))))


def _inputs(dtype=torch.float64):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, 6, dtype=dtype)
    y = torch.randn(3, 5, 4, 6, dtype=dtype) * 2
    x[0, :, 0, 0] = 0.0  # a zero vector: the cosine's floor holds there
    valid = torch.rand(3, 1, 4, 6, dtype=dtype)
    valid[1, :, :, :2] = 0.0  # padding the teacher never saw
    valid[2] = 0.0  # a sample with nothing valid: loss 0, gradient 0
    return x, y, valid


@pytest.mark.parametrize("which", ["feature", "reconstruction"])
def test_loss_matches_the_plain_formula_with_gradients(which):
    x, y, valid = _inputs()

    def both(x, y):
        if which == "feature":
            return feature_loss(x, y, valid, "cosine_l1"), plain_feature_loss(x, y, valid)
        return reconstruction_loss(x, y), plain_reconstruction_loss(x, y)

    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    ys = [y.clone().requires_grad_(), y.clone().requires_grad_()]
    fused, _ = both(xs[0], ys[0])
    _, plain = both(xs[1], ys[1])
    torch.testing.assert_close(fused, plain)
    weights = torch.tensor([0.5, 2.0, -1.0], dtype=x.dtype)
    (fused * weights).sum().backward()
    (plain * weights).sum().backward()
    torch.testing.assert_close(xs[0].grad, xs[1].grad)
    torch.testing.assert_close(ys[0].grad, ys[1].grad)  # targets need none, but it must be right


@pytest.mark.parametrize("which", ["feature", "reconstruction"])
def test_gradient_passes_gradcheck(which):
    x, y, valid = _inputs()
    x[0, :, 0, 0] = 0.1  # gradcheck's finite differences must not straddle the norm floor
    x.requires_grad_()
    y.requires_grad_()
    if which == "feature":
        assert torch.autograd.gradcheck(lambda a, b: feature_loss(a, b, valid, "cosine_l1"), (x, y))
    else:
        assert torch.autograd.gradcheck(reconstruction_loss, (x, y))


def test_float32_matches_float64():
    x, y, valid = _inputs()
    want = feature_loss(x, y, valid, "cosine_l1")
    got = feature_loss(x.float(), y.float(), valid.float(), "cosine_l1")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-5)


def test_relative_reconstruction_loss_ignores_the_stage_scale():
    """A stage with 10x larger activations, reconstructed 10x larger, costs the same: the term
    cannot dominate the others because a pretrained encoder's activations are large."""
    x, y, _ = _inputs()
    small = relative_reconstruction_loss(x, y)
    torch.testing.assert_close(relative_reconstruction_loss(10 * x, 10 * y), small)
    assert (reconstruction_loss(10 * x, 10 * y) > 5 * reconstruction_loss(x, y)).all()
    rms = y.square().mean((1, 2, 3)).sqrt()[:, None, None, None]
    torch.testing.assert_close(small, reconstruction_loss(x / rms, y / rms))
