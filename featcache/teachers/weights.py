"""Loading teacher weights from local files, safely, with helpful errors.

Checkpoints come in many wrappings: a bare state dict, {"model": ...}, {"state_dict": ...}, keys
prefixed by "module." (DataParallel), "backbone." or "encoder." (self-supervised repos). We unwrap
them, and a mismatch names a few missing and unexpected keys so the user sees which file is wrong.
Pickles are always read with weights_only=True: a checkpoint that needs arbitrary code is refused.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from featcache.errors import TeacherError

WRAPPER_KEYS = ("model", "state_dict", "model_state", "module", "teacher", "net")
STRIP_PREFIXES = ("module.", "backbone.", "encoder.", "model.")


def require_one_source(who: str, checkpoint: Path | None, random_init: bool, wanted: str) -> None:
    """Exactly one of a local checkpoint or an explicit random init; `wanted` names the file."""
    if checkpoint is None and not random_init:
        raise TeacherError(f"{who} needs weights: pass checkpoint {wanted} (nothing is downloaded), "
                           "or random_init for an uninformative baseline",
                           fields=("checkpoint", "random_init"))
    if checkpoint is not None and random_init:
        raise TeacherError("pass either checkpoint or random_init, not both",
                           fields=("checkpoint", "random_init"))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Read a .pth/.pt/.bin pickle (weights only) or a .safetensors file into a dict."""
    if not path.is_file():
        raise TeacherError(f"{path} does not exist; set checkpoint to a local weights file",
                           fields=("checkpoint",))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise TeacherError(f"checkpoint {path} is not a valid safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as exc:
        raise TeacherError(f"checkpoint {path} cannot be loaded as plain weights: {_why_refused(exc)}. "
                           "featcache only reads tensors (torch.load with weights_only=True) and never "
                           "runs code from a checkpoint; where you trust the file, re-save it with "
                           "torch.save(model.state_dict(), FILE) or as .safetensors") from None
    if not isinstance(obj, dict):
        raise TeacherError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict; "
                           f"re-save it with torch.save(model.state_dict(), FILE)")
    return obj


def _why_refused(exc: Exception) -> str:
    """A complete clause for why torch refused a file. torch's own message is long, tells the user
    to re-run torch.load with weights_only=False (which featcache never does), and cut short
    it read as if featcache had done so."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"it holds pickled code or objects ({found.group(1)}), not only tensors"
    if "Weights only load failed" in text:
        return "it holds pickled objects other than tensors"
    first = text.strip().splitlines()[0].strip().rstrip(".") if text.strip() else type(exc).__name__
    return f"it is not a readable torch file ({first[:160]})"


def describe_source(source: str) -> str:
    """What `weights_source` records: the absolute, resolved path when `source` is a file (two
    users' `teacher.pth` are then told apart in `featcache ls`/`info`), else `source` as is
    (a random initialisation, a packaged checkpoint)."""
    path = Path(source).expanduser()
    return str(path.resolve()) if path.is_file() else source


def unwrap_state_dict(obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside common wrappers ({"model": sd}, {"state_dict": sd}, ...)."""
    for _ in range(3):  # wrappers nest at most a couple of levels deep in practice
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def select_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys under `prefix` with the prefix removed; the state unchanged if none carries it."""
    sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return sub if sub else state


def match_keys(state: dict[str, torch.Tensor], expected: Iterable[str],
               prefixes: Iterable[str] = STRIP_PREFIXES) -> dict[str, torch.Tensor]:
    """Strip up to three wrapper prefixes ("module.backbone.") to best overlap the model's keys."""
    expected, prefixes = set(expected), tuple(prefixes)
    frontier, best = [state], state
    for _ in range(3):
        frontier = [sub for s in frontier for p in prefixes if (sub := select_prefix(s, p)) is not s]
        for cand in frontier:
            if len(expected & cand.keys()) > len(expected & best.keys()):
                best = cand
    return best


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path | str,
                ignore: tuple[str, ...] = ()) -> None:
    """Load `state` into `module`; any missing/unexpected key (outside `ignore`) is a TeacherError."""
    own = module.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(ignore) or k in own}
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    wrong = sorted(k for k in own if k in state and own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:4])})")
        if wrong:
            parts.append(f"{len(wrong)} with another shape (e.g. {wrong[0]}: checkpoint "
                         f"{tuple(state[wrong[0]].shape)} vs model {tuple(own[wrong[0]].shape)})")
        raise TeacherError(f"checkpoint {source} does not match the architecture: {'; '.join(parts)}; "
                           "check arch and that the file holds this model's weights", fields=("arch",))
    module.load_state_dict(state, strict=True)


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """Eval mode, no gradients: teachers are never trained."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def vit_block_indices(depth: int) -> list[int]:
    """Blocks ending 1/4, 1/2, 3/4 of the depth and the last one (0-based, deduplicated)."""
    picks = [max(1, depth * k // 4) - 1 for k in (1, 2, 3, 4)]
    return sorted(set(picks))
