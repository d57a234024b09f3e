"""The precision a teacher's forward pass computes in: part of the recipe, so of the entry key.

float32   IEEE float32 everywhere (the default). On CUDA this also turns off TF32, which cuDNN
          convolutions use by default: a float32 entry is float32 on every device.
tf32      float32 tensors, TF32 tensor-core matmuls and convolutions (10 mantissa bits; CUDA only).
bfloat16  autocast to bfloat16 (8 mantissa bits: fewer than the fp16 the store keeps).
float16   autocast to float16.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from featcache.errors import ConfigError

if TYPE_CHECKING:
    import torch

COMPUTE_DTYPES = ("float32", "tf32", "bfloat16", "float16")
_AUTOCAST = ("bfloat16", "float16")  # torch dtype names; torch loads with the forward pass, not
# with the CLI (whose option defaults check a compute dtype name: `predict --model` runs without it)


def check_compute_dtype(name: str) -> str:
    if name not in COMPUTE_DTYPES:
        raise ConfigError(f"compute_dtype {name!r}: use one of {', '.join(COMPUTE_DTYPES)}",
                          fields=("compute_dtype",))
    return name


def check_compute_device(name: str, device: torch.device) -> None:
    """Refuse a compute dtype `device` cannot run, before any entry is created."""
    check_compute_dtype(name)
    if name == "tf32" and device.type != "cuda":
        raise ConfigError(f"compute_dtype tf32 is a CUDA tensor-core mode; on {device.type} use "
                          "float32, bfloat16 or float16", fields=("compute_dtype",))


@contextmanager
def compute_context(name: str, device: torch.device) -> Iterator[None]:
    """Run the enclosed forward pass in compute dtype `name` on `device`. The TF32 switches are
    process-wide in torch: they are set for the forward pass and restored after it."""
    import torch

    check_compute_device(name, device)
    if name in _AUTOCAST:
        with torch.autocast(device.type, dtype=getattr(torch, name)):
            yield
        return
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = name == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
