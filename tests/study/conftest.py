"""Tiny random teachers and a tiny student for the study pipelines (no downloads, seconds per run)."""

from __future__ import annotations

import torch

from tests.distill.conftest import TINY_STUDENT, blob_registry, cached_store  # noqa: F401 (fixtures)

torch.set_num_threads(1)

# Stand-ins with distinct registered names (the store finds entries by teacher name).
TINY_SAM = {"name": "sam", "arch": "vit_b", "levels": {"block1": "dec3"},
            "options": {"random_init": True, "embed_dim": 32, "depth": 2, "num_heads": 2, "img_size": 64,
                        "window_size": 4, "global_attn_indexes": [1]}}
TINY_TIMM = {"name": "timm", "arch": "vit_tiny_patch16_224", "levels": {"block1": "dec3"},
             "options": {"random_init": True, "img_size": 32,
                         "model_kwargs": {"depth": 2, "embed_dim": 32, "num_heads": 2}}}

__all__ = ["TINY_SAM", "TINY_STUDENT", "TINY_TIMM"]
