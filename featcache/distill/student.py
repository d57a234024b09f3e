"""The student: a timm encoder (ImageNet-pretrained EfficientNet-Lite0 by default) with a U-Net
decoder.

The student is what ships to the edge device, so it is a plain nn.Module whose forward takes
images (B, C, S, S) in [0, 1] and returns mask logits (B, 1, S, S). The input normalisation the
encoder's weights expect is its first operation (buffers from the config), so training,
evaluation, prediction and the exported ONNX/TorchScript model all apply it the same way.
Distillation taps its intermediate stages by name through `forward_features`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from featcache.distill.encoder_weights import load_encoder_weights, timm_architecture
from featcache.errors import ConfigError

if TYPE_CHECKING:
    from featcache.manifest import StudentSpec


@dataclass(frozen=True)
class StudentConfig:
    """The student as every checkpoint stores it: what it is built from and the input size it was
    trained at. The manifest's `student:` (StudentSpec, what a user writes) becomes one with
    `from_spec`; the input normalisation is resolved when the student is built."""

    encoder: str = "efficientnet_lite0"  # a timm name; efficientnet_lite0 = timm's tf_efficientnet_lite0
    in_channels: int = 3
    decoder_channels: tuple[int, ...] = (464, 232, 116, 58, 29)  # 8.75M params with Lite0
    # "imagenet" (weights a pip package ships, see encoder_weights.py), a local file, or None for
    # random init. Never downloads.
    encoder_weights: str | None = None
    encoder_kwargs: dict = field(default_factory=dict)
    # Per-channel input normalisation, (x - mean) / std on [0, 1] images; None = the encoder's
    # own (timm's pretrained config for the architecture), fixed when the student is built.
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    # The input size S it was trained at (images are resized to S x S); None where nothing fixed it.
    # The network itself takes any multiple of its stride.
    image_size: int | None = None

    @classmethod
    def from_spec(cls, spec: StudentSpec, with_weights: bool = True) -> StudentConfig:
        """The manifest's student; with_weights=False builds it randomly initialised (nothing read)."""
        return cls(encoder=spec.encoder, in_channels=spec.in_channels,
                   decoder_channels=tuple(spec.decoder_channels),
                   encoder_weights=spec.encoder_weights if with_weights else None,
                   image_size=spec.image_size)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("decoder_channels", "input_mean", "input_std"):
            d[key] = None if d[key] is None else list(d[key])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> StudentConfig:
        d = dict(d)
        d["decoder_channels"] = tuple(d.get("decoder_channels", cls.decoder_channels))
        # Checkpoints from before the normalisation existed fed [0, 1] images unchanged.
        for key, identity in (("input_mean", 0.0), ("input_std", 1.0)):
            value = d.get(key, [identity] * d.get("in_channels", cls.in_channels))
            d[key] = tuple(float(v) for v in value)
        return cls(**d)

    def with_normalisation(self, encoder: nn.Module) -> StudentConfig:
        """This config with input_mean/std fixed: given ones, else the encoder's pretrained config
        (ImageNet or Inception statistics), averaged for a grey input."""
        if self.input_mean is not None and self.input_std is not None:
            return self
        cfg = getattr(encoder, "pretrained_cfg", None) or {}
        mean, std = tuple(cfg.get("mean", (0.0,) * 3)), tuple(cfg.get("std", (1.0,) * 3))
        if self.in_channels != len(mean):
            mean = (sum(mean) / len(mean),) * self.in_channels
            std = (sum(std) / len(std),) * self.in_channels
        return replace(self, input_mean=self.input_mean or mean, input_std=self.input_std or std)


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
                                             features_only=True, in_chans=config.in_channels,
                                             **config.encoder_kwargs)
        except RuntimeError as exc:
            raise ConfigError(f"student.encoder {config.encoder!r}: {exc}") from None
        if config.encoder_weights:
            load_encoder_weights(self.encoder, config.encoder, config.encoder_weights)
        self.config = config = config.with_normalisation(self.encoder)
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
        self.head = nn.Conv2d(cin, 1, 1)
        # Named stages that distillation can tap: channels and stride w.r.t. the input.
        self.stages: dict[str, tuple[int, int]] = {
            f"enc{i + 1}": (c, r) for i, (c, r) in enumerate(zip(enc_ch, enc_red, strict=True))}
        stride = enc_red[-1]
        for i, cout in enumerate(dec):
            stride //= 2
            self.stages[f"dec{i + 1}"] = (cout, max(stride, 1))

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """x (B, C, S, S) in [0, 1] -> logits (B, 1, S, S) and {stage: (B, C_s, S/stride, S/stride)}."""
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
        return self.forward_features(x)[0]


def count_params(module: nn.Module) -> int:
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
