"""Turning a device option (auto, cpu, cuda, cuda:N) into a torch device, for extract and distill."""

from __future__ import annotations

import torch

from featcache.errors import ConfigError


def resolve_device(name: str, field: str = "device") -> torch.device:
    """`auto` is CUDA when available, else the CPU; asking for CUDA without one is a user error.
    `field` names the setting in errors (the CLI prints `device` as --device)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"{field} {name!r}: no CUDA device is available here; use auto or cpu",
                          fields=(field,))
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{field} {name!r}: not a device; use auto, cpu, cuda or cuda:N",
                          fields=(field,)) from None
