"""Per-sample loss terms. Each returns a (B,) tensor so gates can weight samples individually."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def seg_loss(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """0.5 BCE + 0.5 soft Dice; logits, mask: (B, 1, H, W) -> (B,)."""
    bce = F.binary_cross_entropy_with_logits(logits, mask, reduction="none").mean((1, 2, 3))
    prob = torch.sigmoid(logits)
    inter = (prob * mask).sum((1, 2, 3))
    dice = 1 - (2 * inter + 1) / (prob.sum((1, 2, 3)) + mask.sum((1, 2, 3)) + 1)
    return 0.5 * bce + 0.5 * dice


def _masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x (B, C, H, W), valid (B, 1, H, W) weights -> (B,) mean over channels and valid positions.
    Channels are averaged first: the weights then touch C times fewer values."""
    per_position = x.mean(1, keepdim=True) if x.shape[1] > 1 else x
    num = (per_position * valid).flatten(1).sum(1)
    return num / valid.flatten(1).sum(1).clamp_min(1e-6)


def _cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine similarity over channels: (B, C, H, W) twice -> (B, 1, H, W).

    Written out from sums of squares: on these 256 x 32 x 32 maps F.cosine_similarity (which
    normalises both inputs first) took twice as long, and torch.linalg.vector_norm over the
    channel dimension runs about 10x slower on the CPU than square-then-sum."""
    dot = (x * y).sum(1, keepdim=True)
    squares = x.square().sum(1, keepdim=True) * y.square().sum(1, keepdim=True)
    return dot / squares.clamp_min(1e-12).sqrt()


def feature_loss(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, kind: str) -> torch.Tensor:
    """Student projection vs (normalised) teacher features, only where the teacher saw the image.

    "cosine_l1": RADIO's 0.9 * (1 - cos) + 0.1 * smooth-L1; "mse": the paper's plain MSE.
    """
    if kind == "mse":
        return _masked_mean((pred - target) ** 2, valid)
    l1 = F.smooth_l1_loss(pred, target, reduction="none")
    return 0.9 * _masked_mean(1 - _cosine(pred, target), valid) + 0.1 * _masked_mean(l1, valid)


def reconstruction_loss(recon: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """The return decoder's loss: 0.5 MSE + 0.3 L1 + 0.2 (1 - cos), per sample."""
    diff = recon - original
    mse = diff.square().mean((1, 2, 3))
    l1 = diff.abs().mean((1, 2, 3))
    cos = _cosine(recon, original).mean((1, 2, 3))
    return 0.5 * mse + 0.3 * l1 + 0.2 * (1 - cos)
