"""Shared fixtures: a tiny deterministic teacher and a tiny synthetic dataset (no downloads)."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest
import torch
import torch.nn as nn

from featcache.data.base import Sample, SampleInfo, SegmentationDataset, assign_splits
from featcache.teachers.base import LevelSpec, Preprocess, Teacher, sha256_state_dict

torch.set_num_threads(1)
_BUILD_LOCK = threading.Lock()


class TinyTeacher(Teacher):
    """Two conv levels on a 32 px input: 'fine' (8 ch, 16x16) and 'coarse' (16 ch, 8x8)."""

    def __init__(self, seed: int = 0, name: str = "tiny") -> None:
        self.name, self.arch = name, "tinyconv"
        self.preprocess = Preprocess(resize="longest_side_pad", size=32)
        # The seeded init uses torch's global RNG: builds in concurrent threads must not interleave,
        # or two "identical" teachers get different weights (and different fingerprints).
        with _BUILD_LOCK, torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(),
                                       nn.Conv2d(8, 16, 3, 2, 1)).eval()
        self.available_levels = {"fine": LevelSpec("fine", 8, 2, (16, 16)),
                                 "coarse": LevelSpec("coarse", 16, 4, (8, 8))}
        self.default_levels = ("fine", "coarse")
        self.weights_sha256 = sha256_state_dict(self.model.state_dict())
        self.weights_source = f"random-init(seed={seed})"

    def _forward_levels(self, x, names):
        fine = self.model[1](self.model[0](x))
        return {"fine": fine, "coarse": self.model[2](fine)}


class BlobDataset(SegmentationDataset):
    """Bright discs on noise: the mask is learnable from the image in a few steps."""

    name = "blobs"
    modality = "synthetic"

    def __init__(self, n: int = 10, size: int = 40, seed: int = 0) -> None:
        split = assign_splits([f"g{i}" for i in range(n)], seed, (0.6, 0.2, 0.2))
        super().__init__([SampleInfo(f"blob{i:02d}", split[f"g{i}"], f"g{i}") for i in range(n)],
                         {"n": n, "size": size, "seed": seed})
        self.size, self.seed = size, seed

    def _arrays(self, index):
        rng = np.random.default_rng([self.seed, index])
        yy, xx = np.mgrid[: self.size, : self.size]
        cy, cx = rng.uniform(10, self.size - 10, 2)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(25, 64)).astype(np.uint8)
        image = np.clip(0.2 + 0.6 * mask + 0.1 * rng.standard_normal(mask.shape), 0, 1)
        return image.astype(np.float32)[:, :, None], mask

    def _load(self, index):
        image, mask = self._arrays(index)
        return Sample(self.samples[index].id, image, mask)

    def content_digest(self, index):
        image, mask = self._arrays(index)
        return hashlib.sha256(image.tobytes() + mask.tobytes()).hexdigest()


@pytest.fixture
def tiny_teacher():
    return TinyTeacher()


@pytest.fixture
def blobs():
    return BlobDataset()
