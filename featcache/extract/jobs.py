"""Extraction jobs: what to run (teacher x dataset), from CLI options or a manifest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from featcache.data.registry import build_dataset
from featcache.devices import resolve_device
from featcache.extract.runner import ExtractionResult, ProgressFn, extract
from featcache.store import FeatureStore, check_compression, default_store_url
from featcache.teachers.registry import build_teacher


@dataclass
class ExtractJob:
    teacher: str
    dataset: str
    root: Path | None = None
    checkpoint: Path | None = None
    arch: str | None = None
    levels: list[str] | None = None
    teacher_options: dict[str, Any] = field(default_factory=dict)
    dataset_options: dict[str, Any] = field(default_factory=dict)
    store: str | None = None


def jobs_from_manifest(path: Path) -> list[ExtractJob]:
    from featcache.manifest import load_manifest

    m = load_manifest(path)
    return [ExtractJob(teacher=t.name, dataset=d.name, root=Path(d.root) if d.root else None,
                       checkpoint=Path(t.checkpoint) if t.checkpoint else None, arch=t.arch,
                       levels=list(t.levels), teacher_options=dict(t.options),
                       dataset_options=dict(d.options), store=m.store)
            for t in m.teachers for d in m.datasets]


def run_job(job: ExtractJob, *, store_url: str | None, split: str, views: int, precision: str,
            device: str, batch_size: int, shard_size: int, loader_workers: int,
            progress: ProgressFn | None = None, view_seed: int = 0, workers: int | None = None,
            scheduler: str | None = None, compression: str = "blosc") -> ExtractionResult:
    """Run one job in this process, or on dask (`workers` local processes or a `scheduler`)."""
    check_compression(compression)  # before loading a teacher or starting a cluster
    if workers is not None or scheduler is not None:
        from featcache.extract.distributed import WorkerSpec, extract_distributed

        spec = WorkerSpec(job, store_url or job.store or default_store_url(), split, views, view_seed,
                          precision, shard_size, device, batch_size, loader_workers, compression)
        return extract_distributed(spec, workers=workers, scheduler=scheduler, progress=progress)
    dataset = build_dataset(job.dataset, job.root, **job.dataset_options)
    teacher = build_teacher(job.teacher, job.checkpoint, job.arch, **job.teacher_options)
    dev = resolve_device(device)
    teacher.to(dev)
    store = FeatureStore(store_url or job.store)
    return extract(dataset, teacher, store, levels=job.levels, split=split, views=views,
                   view_seed=view_seed, precision=precision, compression=compression,
                   batch_size=batch_size, shard_size=shard_size,
                   loader_workers=loader_workers, progress=progress,
                   autocast_dtype=torch.bfloat16 if dev.type == "cuda" else None)
