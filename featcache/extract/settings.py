"""What to extract (`ExtractJob`: a teacher over a dataset) and how (`ExtractSettings`).

Both are plain frozen values: the CLI builds them from its options, the study pipelines from their
configs, and `run_job`, `plan_entry`, `extract` and the dask `WorkerSpec` pass them along as they
are. The defaults below are the only place the extraction defaults are stated, and a settings value
is checked once, when it is built: before any teacher is loaded or store touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featcache.errors import StoreError
from featcache.store.layout import check_compression
from featcache.store.precision import parse_precision
from featcache.teachers.compute import check_compute_dtype


@dataclass(frozen=True)
class ExtractJob:
    """One (teacher, dataset) pair and how to build each; `levels` None: the teacher's defaults."""

    teacher: str
    dataset: str
    root: Path | None = None
    checkpoint: Path | None = None
    arch: str | None = None
    levels: list[str] | None = None
    teacher_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    store: str | None = None  # the manifest's store; an explicit store URL wins over it


@dataclass(frozen=True)
class ExtractSettings:
    """How every job of one extraction runs. `split`, `views`, `view_seed`, `precision` and
    `compute_dtype` are part of the entry key; the rest change how fast it is filled (or its codec),
    never what it holds."""

    split: str = "all"  # all, train, val or test
    views: int = 1  # views per image; view 0 is the image itself
    view_seed: int = 0  # seed of the augmentation views
    precision: str = "fp16"  # see featcache/store/precision.py
    # the teacher's forward precision: float32, tf32, bfloat16 or float16 (teachers/compute.py)
    compute_dtype: str = "float32"
    compression: str = "blosc"  # lossless, so not part of the key; see store.layout.COMPRESSIONS
    shard_size: int = 16  # samples per shard: the unit of claim and commit
    batch_size: int = 8  # images per teacher forward pass
    device: str = "auto"  # where run_job puts the teacher: auto, cpu, cuda or cuda:N
    # decoding/preprocessing processes; -1: automatic (pipeline.default_loader_workers: half the
    # cores beyond the main process's, at least 1, none for under 8 batches); 0: in the main process
    loader_workers: int = -1
    # threads encoding, compressing, checksumming and committing shards and computing their
    # statistics; 0: one per core (what limits extraction once the teacher is fast)
    writer_threads: int = 0

    def __post_init__(self) -> None:
        check_compression(self.compression)
        parse_precision(self.precision)
        check_compute_dtype(self.compute_dtype)
        # messages name fields; the CLI prints each as its flag (views -> --views)
        if self.views < 1:
            raise StoreError("views must be at least 1 (view 0 is the image itself)", fields=("views",))
        for name in ("shard_size", "batch_size"):
            if getattr(self, name) < 1:
                raise StoreError(f"{name} must be at least 1", fields=(name,))
        if self.loader_workers < -1:
            raise StoreError("loader_workers must be -1 (automatic), 0 (in the main process) or more",
                             fields=("loader_workers",))
        if self.writer_threads < 0:
            raise StoreError("writer_threads must be 0 (one per core) or more", fields=("writer_threads",))
