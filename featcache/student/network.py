"""The student: a timm encoder (ImageNet-pretrained EfficientNet-Lite0 by default) with a U-Net
decoder.

The student is what ships to the edge device, so it is a plain nn.Module whose forward takes
images (B, C, S, S) in [0, 1] and returns mask logits (B, M, S, S): M = 1 (a sigmoid channel) for
a binary student, K + 1 softmax channels (0 = background) for K >= 2 mask classes. Classification
heads, one linear layer per classification dataset on the globally pooled last encoder stage, sit
beside the decoder (`classify`, `predict_classes`). The input normalisation the
encoder's weights expect is its first operation (buffers from the config), so training,
evaluation, prediction and the exported ONNX/TorchScript model all apply it the same way.
Distillation taps its intermediate stages by name through `forward_features`.
"""

from __future__ import annotations

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from featcache.errors import ConfigError
from featcache.manifest import StudentConfig
from featcache.student.encoder_weights import load_encoder_weights, timm_architecture


def resolve_normalisation(config: StudentConfig, encoder: nn.Module) -> StudentConfig:
    """`config` with input_mean/std fixed: given ones, else the encoder's pretrained config
    (ImageNet or Inception statistics), averaged for a grey input."""
    if config.input_mean is not None and config.input_std is not None:
        return config
    cfg = getattr(encoder, "pretrained_cfg", None) or {}
    mean, std = list(cfg.get("mean", (0.0,) * 3)), list(cfg.get("std", (1.0,) * 3))
    if config.in_channels != len(mean):
        mean = [sum(mean) / len(mean)] * config.in_channels
        std = [sum(std) / len(std)] * config.in_channels
    return config.model_copy(update={"input_mean": config.input_mean or mean,
                                     "input_std": config.input_std or std})


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DecoderBlock(nn.Module):
    """Upsample x2, concatenate the skip, two conv-bn-relu."""

    def __init__(self, cin: int, cskip: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn_relu(cin + cskip, cout), _conv_bn_relu(cout, cout))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        size = skip.shape[-2:] if skip is not None else tuple(2 * s for s in x.shape[-2:])
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.body(x)


class Student(nn.Module):
    def __init__(self, config: StudentConfig) -> None:
        super().__init__()
        try:
            self.encoder = timm.create_model(timm_architecture(config.encoder), pretrained=False,
                                             features_only=True, in_chans=config.in_channels)
        except RuntimeError as exc:
            raise ConfigError(f"student.encoder {config.encoder!r}: {exc}") from None
        if config.encoder_weights:
            load_encoder_weights(self.encoder, config.encoder, config.encoder_weights)
        self.config = config = resolve_normalisation(config, self.encoder)
        shape = (1, config.in_channels, 1, 1)
        # Not in the state dict: they follow from the config, which every checkpoint carries.
        self.register_buffer("input_mean", torch.tensor(config.input_mean).view(shape), persistent=False)
        self.register_buffer("input_std", torch.tensor(config.input_std).view(shape), persistent=False)
        enc_ch = self.encoder.feature_info.channels()
        enc_red = self.encoder.feature_info.reduction()
        dec = list(config.decoder_channels)
        if len(dec) != len(enc_ch):
            raise ConfigError(f"student.decoder_channels needs {len(enc_ch)} values for encoder "
                              f"{config.encoder}, got {len(dec)}")
        skips = enc_ch[:-1][::-1] + [0] * (len(dec) - len(enc_ch) + 1)
        blocks, cin = [], enc_ch[-1]
        for cout, cskip in zip(dec, skips, strict=False):
            blocks.append(DecoderBlock(cin, cskip, cout))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        # `head` keeps its name: state dicts of binary students saved before heads existed load.
        self.head = nn.Conv2d(cin, self.mask_channels, 1)
        self.classifiers = nn.ModuleDict({name: nn.Linear(enc_ch[-1], n)
                                          for name, n in config.classifiers.items()})
        self._last_stage = f"enc{len(enc_ch)}"
        # Named stages that distillation can tap: channels and stride w.r.t. the input.
        self.stages: dict[str, tuple[int, int]] = {
            f"enc{i + 1}": (c, r) for i, (c, r) in enumerate(zip(enc_ch, enc_red, strict=True))}
        stride = enc_red[-1]
        for i, cout in enumerate(dec):
            stride //= 2
            self.stages[f"dec{i + 1}"] = (cout, max(stride, 1))

    @property
    def mask_channels(self) -> int:
        """Channels of the mask logits: 1 (binary, sigmoid) or mask_classes + 1 (softmax)."""
        k = self.config.mask_classes
        return 1 if k == 1 else k + 1

    def classify(self, named: dict[str, torch.Tensor], head: str) -> torch.Tensor:
        """Stages from `forward_features` -> (B, n) class logits of classification head `head`,
        from the global average pool of the last encoder stage (B, C_last)."""
        if head not in self.classifiers:
            have = ", ".join(self.classifiers) or "none"
            raise ConfigError(f"student has no classification head {head!r}; it has {have}")
        return self.classifiers[head](named[self._last_stage].mean(dim=(2, 3)))

    def predict_classes(self, x: torch.Tensor, head: str) -> torch.Tensor:
        """x (B, C, S, S) in [0, 1] -> (B, n) class logits of head `head` (the encoder only: the
        decoder is not run)."""
        last = self.encoder((x - self.input_mean) / self.input_std)[-1]
        return self.classify({self._last_stage: last}, head)

    @property
    def stride(self) -> int:
        """The encoder's total stride: the input size must be a multiple of it."""
        return max(r for _, r in self.stages.values())

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (B, C, S, S) in [0, 1] -> mask logits (B, mask_channels, S, S) and
        {stage: (B, C_s, S/stride, S/stride)}."""
        feats = self.encoder((x - self.input_mean) / self.input_std)
        named = {f"enc{i + 1}": f for i, f in enumerate(feats)}
        skips = feats[:-1][::-1]
        y = feats[-1]
        for i, block in enumerate(self.decoder):
            y = block(y, skips[i] if i < len(skips) else None)
            named[f"dec{i + 1}"] = y
        logits = self.head(y)
        if logits.shape[-2:] != x.shape[-2:]:
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits, named

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, S, S) -> mask logits (B, mask_channels, S, S): what export writes."""
        return self.forward_features(x)[0]


def count_params(module: nn.Module) -> int:
    """Every parameter, so a student's count includes its decoder and all classification heads."""
    return sum(p.numel() for p in module.parameters())


def student_input(image: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """float32 (H, W, C) in [0, 1] -> (channels, size, size): plain resize, grey replicated.

    The student's frame is the whole image stretched to a square; teacher features are resampled
    onto this frame with the box stored at extraction.
    """
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
    if x.shape[0] != channels:
        if x.shape[0] == 1:
            x = x.expand(channels, -1, -1)
        elif channels == 1:
            x = x.mean(0, keepdim=True)
        else:
            raise ConfigError(f"image has {x.shape[0]} channels; the student takes {channels}")
    x = F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False,
                      antialias=True)[0]
    return x.contiguous()
