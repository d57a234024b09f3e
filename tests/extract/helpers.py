"""Tiny on-disk datasets and a registered tiny teacher recipe reachable by name in any process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# A 2-block, 32-dim ViT on 32 px inputs: registered as `timm`, so dask workers can build it by name.
TINY_VIT = {"random_init": True, "img_size": 32,
            "model_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2}}
TINY_VIT_ARCH = "vit_tiny_patch16_224"


def write_folder(root: Path, n: int = 8, size: int = 24, seed: int = 0) -> Path:
    """images/ + masks/ of n small RGB PNGs with disc masks; returns root."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        cy, cx = rng.uniform(6, size - 6, 2)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < 16).astype(np.uint8)
        image = np.clip(60 + 150 * mask[..., None] + rng.normal(0, 20, (size, size, 3)), 0, 255)
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"case{i:02d}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"case{i:02d}.png")
    return root


def truncate(path: Path) -> bytes:
    """Cut a file in half (a broken copy); returns the original bytes to restore it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return data


def count_forwards(teacher) -> list[int]:
    """Wrap the teacher's forward; the returned list gets the batch size of every call."""
    calls: list[int] = []
    original = teacher._forward_levels
    teacher._forward_levels = lambda x, names: calls.append(len(x)) or original(x, names)
    return calls
