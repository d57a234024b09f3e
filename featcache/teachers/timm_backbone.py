"""Any timm backbone as a teacher: `--arch` names the timm model, weights come from a local file.

timm never downloads here (`pretrained=False`); weights are read from `--checkpoint` (.pth/.pt with
weights_only=True, or .safetensors), or the model is explicitly randomly initialised
(`random_init=True`, seeded) as an uninformative baseline.

Levels, declared from timm's `feature_info` before any image is seen:
- plain ViTs (every feature at the patch stride): "block{i}" for the blocks ending 1/4, 1/2, 3/4 of
  the depth and the last block (0-based i), each (B, embed_dim, S/p, S/p); default: last block.
- hierarchical models (CNNs, Swin, ...): "stage{i}" for each `feature_info` entry (i from 0),
  (B, C_i, S/r_i, S/r_i); default: the last stage. The input size must be a multiple of the largest
  reduction so every grid is exact.
- "global" (B, D, 1, 1), opt-in: pre-logits, `forward_head(features, pre_logits=True)`, the model's
  own pooling (class token or average, with fc_norm where the model has one) before the
  classifier; D is `head_hidden_size` (why it is opt-in: teachers/base.py).

Preprocessing: mean/std and input size from the model's pretrained_cfg; the image is stretched to
S x S ("resize") by default so a segmentation teacher sees every pixel (timm's centre crop would
drop image borders); option `resize` picks another policy.

RETFound-MAE (the paper's fundus teacher) loads as `--arch vit_large_patch16_224.mae --checkpoint
RETFound_cfp_weights.pth`: its weights sit under "model" in MAE's naming, which is timm's ViT-L
naming (MAE was built on timm), beside MAE's pretraining decoder ("decoder_*", "mask_token"), which
no encoder has and which loading drops, as RETFound's own fine-tuning does. The `.mae` tag gives
the ImageNet mean/std RETFound was trained with (plain `vit_large_patch16_224` says 0.5/0.5) and
the same architecture (class-token pooling after `norm`: the MAE checkpoint's final norm). A
fine-tuned RETFound file (fc_norm, no norm) takes the manifest teacher option `model_kwargs:
{global_pool: avg}` (average pooling, as RETFound fine-tunes). A file that
pickles more than tensors (an argparse Namespace of training arguments) is refused by
weights_only loading; re-save its "model" entry with torch.save from a copy you trust.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from featcache.errors import TeacherError
from featcache.teachers.base import (
    GLOBAL,
    LevelSpec,
    Preprocess,
    Teacher,
    TeacherInfo,
    global_level,
    sha256_file,
    sha256_state_dict,
)
from featcache.teachers.weights import (
    freeze,
    load_strict,
    match_keys,
    read_checkpoint,
    require_one_source,
    unwrap_state_dict,
    vit_block_indices,
)

RESIZE_POLICIES = ("resize", "longest_side_pad", "resize_center_crop")
# Keys of MAE's pretraining decoder (RETFound-MAE files keep them): no timm encoder has them.
MAE_DECODER = ("decoder_", "mask_token")


def create_backbone(arch: str, img_size: int | None, model_kwargs: dict[str, Any]) -> torch.nn.Module:
    """timm.create_model without weights and without a classifier head."""
    import timm

    if not timm.is_model(arch):
        close = timm.list_models(f"*{arch.split('_')[0]}*")[:5]
        raise TeacherError(f"timm has no model {arch!r}; similar: {', '.join(close) or 'none'} "
                           f"(see timm.list_models())")
    kwargs = {"pretrained": False, "num_classes": 0, **model_kwargs}
    if img_size is not None:
        try:
            return timm.create_model(arch, img_size=img_size, **kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise TeacherError(f"timm model {arch}: bad model_kwargs ({exc})") from None
    try:
        return timm.create_model(arch, **kwargs)  # CNNs take any input size, no img_size argument
    except TypeError as exc:
        raise TeacherError(f"timm model {arch}: bad model_kwargs ({exc})") from None


def is_plain_vit(model: torch.nn.Module) -> bool:
    infos = list(model.feature_info)
    return (hasattr(model, "patch_embed") and len({f["reduction"] for f in infos}) == 1
            and all(f["module"].startswith("blocks.") for f in infos))


def backbone_levels(model: torch.nn.Module, size: int, arch: str) -> tuple[dict[str, LevelSpec], list[int]]:
    """Level specs and the forward_intermediates indices that produce them, in the same order."""
    infos = list(model.feature_info)
    if is_plain_vit(model):
        indices = vit_block_indices(len(infos))
        names = [f"block{i}" for i in indices]
    else:
        indices = list(range(len(infos)))
        names = [f"stage{i}" for i in indices]
    step = max(infos[i]["reduction"] for i in indices)
    if size % step:
        raise TeacherError(f"timm {arch}: input size {size} is not a multiple of its stride {step}; "
                           f"pass img_size={max(step, size // step * step)}")
    levels = {n: LevelSpec(n, infos[i]["num_chs"], infos[i]["reduction"],
                           (size // infos[i]["reduction"],) * 2) for n, i in zip(names, indices, strict=True)}
    # pre-logits width: head_hidden_size where the head has a hidden layer, else num_features
    levels[GLOBAL] = global_level(int(getattr(model, "head_hidden_size", None) or model.num_features), size)
    return levels, indices


def backbone_preprocess(model: torch.nn.Module, size: int, resize: str) -> Preprocess:
    cfg = model.pretrained_cfg
    mean = tuple(float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in cfg.get("std", (0.229, 0.224, 0.225)))
    return Preprocess(resize=resize, size=size, mean=mean, std=std)


class TimmTeacher(Teacher):
    name = "timm"

    def __init__(self, arch: str, model: torch.nn.Module, size: int, resize: str,
                 weights_sha256: str, weights_source: str) -> None:
        self.arch = arch
        self.model = freeze(model)
        self.preprocess = backbone_preprocess(model, size, resize)
        self.available_levels, indices = backbone_levels(model, size, arch)
        spatial = [n for n in self.available_levels if n != GLOBAL]
        self._index = dict(zip(spatial, indices, strict=True))
        self.default_levels = (spatial[-1],)  # the last block/stage, as before `global` existed
        self.weights_sha256 = weights_sha256
        self.weights_source = weights_source

    def _forward_levels(self, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
        """x: (B, 3, S, S) -> {level: (B, C, S/r, S/r)} through timm's forward_intermediates, and
        {global: (B, D, 1, 1)} from its final features through forward_head(pre_logits=True)."""
        wanted = sorted({self._index[n] for n in names if n != GLOBAL})
        if GLOBAL not in names:
            maps = self.model.forward_intermediates(x, indices=wanted, output_fmt="NCHW",
                                                    intermediates_only=True)
            final = None
        else:  # timm's final output here is forward_features' (after the last norm)
            final, maps = self.model.forward_intermediates(
                x, indices=wanted or [max(self._index.values())], output_fmt="NCHW")
        out = {n: maps[wanted.index(self._index[n])] for n in names if n != GLOBAL}
        if final is not None:
            out[GLOBAL] = self.model.forward_head(final, pre_logits=True)[:, :, None, None]
        return out


def build_timm(checkpoint: Path | None = None, arch: str | None = None, *, random_init: bool = False,
               seed: int = 0, img_size: int | None = None, model_kwargs: dict[str, Any] | None = None,
               resize: str = "resize") -> TimmTeacher:
    """timm.create_model(arch, pretrained=False) + local weights, or a seeded random init."""
    if not arch:
        raise TeacherError("timm teacher needs arch NAME (a timm model, e.g. vit_small_patch16_224)",
                           fields=("arch",))
    if resize not in RESIZE_POLICIES:
        raise TeacherError(f"resize must be one of {', '.join(RESIZE_POLICIES)}; got {resize!r}")
    require_one_source(f"timm teacher {arch}", checkpoint, random_init, "FILE (.pth or .safetensors)")
    # Read the file first: a bad file fails before a large model is built.
    state = None if random_init else unwrap_state_dict(read_checkpoint(checkpoint))
    with torch.random.fork_rng(devices=[]):  # a seeded init must not disturb the caller's RNG
        torch.manual_seed(seed)
        model = create_backbone(arch, img_size, dict(model_kwargs or {}))
    size = img_size or int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    if not hasattr(model, "forward_intermediates"):
        raise TeacherError(f"timm model {arch} has no forward_intermediates; pick another architecture")
    if state is None:
        return TimmTeacher(arch, model, size, resize, sha256_state_dict(model.state_dict()),
                           f"random-init(seed={seed})")
    state = match_keys(state, model.state_dict().keys())
    head = model.pretrained_cfg.get("classifier") or "head"
    heads = tuple(f"{h}." for h in ([head] if isinstance(head, str) else head))
    # the classifier is not a feature; MAE's decoder is not part of the encoder (module docstring)
    load_strict(model, state, checkpoint, ignore=heads + MAE_DECODER)
    return TimmTeacher(arch, model, size, resize, sha256_file(checkpoint), str(checkpoint))


def describe() -> TeacherInfo:
    return TeacherInfo("timm", "any timm model (arch)", (), ("block{i} (ViT) / stage{i} (CNN)", GLOBAL), None,
                       "checkpoint FILE (.pth/.safetensors), or random_init",
                       "default: last ViT block / last CNN stage; e.g. vit_tiny_patch16_224: 192x14x14")
