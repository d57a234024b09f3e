"""Per-sample loss terms. Each returns a (B,) tensor so gates can weight samples individually.

The feature loss (RADIO's cosine + smooth-L1) and the return decoder's loss (the paper's MSE + L1
+ cosine) share one shape: per position, a weighted cosine distance over channels plus the
channel mean of an element-wise distance, summed over positions with per-sample weights. They
run as one autograd function (`_CosineAndDistance`) with its gradient written out: autograd
through the dozen element-wise operations made about twice as many passes over the (B, C, H, W)
maps and allocated a new map for each, and on the CPU these memory-bound passes were most of the
losses' cost. Forward + backward, median on 2 CPU cores: the feature loss on 4 x 256 x 32 x 32,
4.5-6.3 -> 1.5-4.1 ms; the reconstruction on 4 x 108 x 32 x 32, 1.8-3.3 -> 0.75-0.9 ms.
tests/distill/test_losses.py checks both against the plain formulas, values and gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-12  # floor of |x|^2 |y|^2 in the cosine: where it holds, the norm is a constant


def seg_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """0.5 BCE + 0.5 soft Dice; logits, mask: (B, 1, H, W) -> (B,)."""
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none").mean((1, 2, 3))
    prob = torch.sigmoid(logits)
    inter = (prob * mask).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum((1, 2, 3)) + mask.sum((1, 2, 3)) + 1)
    return 0.5 * bce + 0.5 * dice


def _position_weights(valid: torch.Tensor) -> torch.Tensor:
    """valid (B, 1, H, W) -> the same scaled to sum to 1 per sample (all 0 where nothing is valid)."""
    return valid / valid.flatten(1).sum(1).clamp_min(1e-6)[:, None, None, None]


def _masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W), valid (B, 1, H, W) weights -> (B,) mean over channels and valid positions.
    Channels are averaged first: the weights then touch C times fewer values."""
    per_position = x.mean(1, keepdim=True) if x.shape[1] > 1 else x
    return (per_position * _position_weights(valid)).flatten(1).sum(1)


def _distance(x: torch.Tensor, y: torch.Tensor, scratch: torch.Tensor, kind: str) -> torch.Tensor:
    """Element-wise distance of x and y, channel sum: (B, C, H, W) -> (B, 1, H, W). `scratch`, a
    buffer of x's shape, may be overwritten."""
    if kind == "smooth_l1":  # beta 1
        return F.smooth_l1_loss(x, y, reduction="none").sum(1, keepdim=True)
    d = torch.sub(x, y, out=scratch)  # "mse_l1": 0.5 d^2 + 0.3 |d|
    a = d.abs()
    l1 = a.sum(1, keepdim=True)
    return 0.5 * torch.mul(a, a, out=a).sum(1, keepdim=True) + 0.3 * l1


def _distance_grad(x: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """d/dx of `_distance` per element (a new tensor)."""
    d = torch.sub(x, y)
    if kind == "smooth_l1":
        return d.clamp_(-1.0, 1.0)
    return d.add_(torch.sign(d), alpha=0.3)


class _CosineAndDistance(torch.autograd.Function):
    """(x, y (B, C, H, W), weights (B, 1, H, W), cos_weight, distance_scale, kind) -> (B,):
    sum over positions p of weights[p] * (cos_weight * (1 - cos_p) + distance_scale * mean over
    channels of the distance of x and y), cos_p the cosine over channels at p.

    Written for few passes and few new (B, C, H, W) tensors: each is a memory-bound pass, and on
    the CPU a freshly allocated map also costs its page faults."""

    @staticmethod
    def forward(ctx, x, y, weights, cos_weight: float, distance_scale: float, kind: str):
        scratch = torch.mul(x, y)
        dot = scratch.sum(1, keepdim=True)
        xx = torch.mul(x, x, out=scratch).sum(1, keepdim=True)
        yy = torch.mul(y, y, out=scratch).sum(1, keepdim=True)
        norm = (xx * yy).clamp_min(_EPS).sqrt()
        cos = dot / norm
        distance = (distance_scale / x.shape[1]) * _distance(x, y, scratch, kind)
        per_position = cos_weight * (1 - cos) + distance
        ctx.save_for_backward(x, y, weights, cos, norm, xx, yy, per_position)
        ctx.constants = (cos_weight, distance_scale, kind)
        return (per_position * weights).flatten(1).sum(1)

    @staticmethod
    def backward(ctx, grad):
        x, y, weights, cos, norm, xx, yy, per_position = ctx.saved_tensors
        cos_weight, distance_scale, kind = ctx.constants
        g = grad[:, None, None, None] * weights  # (B, 1, H, W)
        unclamped = xx * yy > _EPS
        # d(1 - cos)/dx = -(y / norm - cos * x / |x|^2); where the floor holds, only -y / norm.
        along_other = -cos_weight * g / norm
        along_self = torch.where(unclamped, cos_weight * g * cos / xx.clamp_min(_EPS), 0.0)
        step = (distance_scale / x.shape[1]) * g
        grad_x = grad_y = grad_w = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
            distance_grad = _distance_grad(x, y, kind)
        if ctx.needs_input_grad[0]:
            grad_x = torch.mul(y, along_other).addcmul_(x, along_self)
            grad_x.addcmul_(distance_grad, step)
        if ctx.needs_input_grad[1]:  # symmetric; teacher targets never need it, kept for generality
            self_y = torch.where(unclamped, cos_weight * g * cos / yy.clamp_min(_EPS), 0.0)
            grad_y = torch.mul(x, along_other).addcmul_(y, self_y)
            grad_y.addcmul_(distance_grad, step, value=-1.0)
        if ctx.needs_input_grad[2]:
            grad_w = grad[:, None, None, None] * per_position
        return grad_x, grad_y, grad_w, None, None, None


def _cosine_and_distance(x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor, cos_weight: float,
                         distance_scale: float, kind: str) -> torch.Tensor:
    # In float32 (or the inputs' float64): under autocast the channel sums must not run in bf16.
    dtype = torch.promote_types(torch.promote_types(x.dtype, y.dtype), torch.float32)
    return _CosineAndDistance.apply(x.to(dtype), y.to(dtype), weights.to(dtype), cos_weight,
                                    distance_scale, kind)


def feature_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, kind: str) -> torch.Tensor:
    """Student projection vs (normalised) teacher features, only where the teacher saw the image.

    "cosine_l1": RADIO's 0.9 * (1 - cos) + 0.1 * smooth-L1, averaged over valid positions with
    `valid` as weights; "mse": the paper's plain MSE.
    """
    if kind == "mse":
        return _masked_mean((pred - target) ** 2, valid)
    return _cosine_and_distance(pred, target, _position_weights(valid), 0.9, 0.1, "smooth_l1")


def reconstruction_loss(recon: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """The return decoder's loss: 0.5 MSE + 0.3 L1 + 0.2 (1 - cos), per sample."""
    b, _, h, w = recon.shape
    weights = recon.new_full((b, 1, h, w), 1.0 / (h * w))
    return _cosine_and_distance(recon, original, weights, 0.2, 1.0, "mse_l1")


def relative_reconstruction_loss(recon: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """`reconstruction_loss` with both maps divided by the original's RMS per sample (a constant).

    The return decoder reconstructs a student stage, and a pretrained encoder's stages are large
    (the demo's enc3/enc4 RMS is a few units): the plain loss started near 13 against a
    segmentation loss near 0.5, and through `recon_to_student` that pull dominated the student's
    features (the study's configuration 5 cost -0.009 Dice with full labels). Measured relative to
    the stage's own scale, the term starts near 1 whatever the stage, like the other terms.
    """
    scale = original.detach().square().mean((1, 2, 3), keepdim=True).sqrt().clamp_min(1e-6)
    return reconstruction_loss(recon / scale, original / scale)
