"""Extraction jobs: what to run (teacher x dataset), from CLI options or a manifest, and running one."""

from __future__ import annotations

from pathlib import Path

from featcache.data.registry import build_dataset
from featcache.devices import resolve_device
from featcache.errors import ConfigError
from featcache.extract.runner import ExtractionResult, ProgressFn, extract
from featcache.extract.settings import ExtractJob, ExtractSettings
from featcache.manifest import Manifest, load_manifest
from featcache.store import FeatureStore, default_store_url
from featcache.teachers.registry import build_teacher


def manifest_jobs(manifest: Manifest, store: str | None = None) -> list[ExtractJob]:
    """Every (teacher, dataset) of the manifest, teacher-major; `store` overrides the manifest's."""
    return [ExtractJob(teacher=t.name, dataset=d.name, root=Path(d.root) if d.root else None,
                       checkpoint=Path(t.checkpoint) if t.checkpoint else None, arch=t.arch,
                       levels=list(t.levels), teacher_options=dict(t.options),
                       dataset_options=dict(d.options), store=store or manifest.store)
            for t in manifest.teachers for d in manifest.datasets]


def jobs_from_manifest(path: Path) -> list[ExtractJob]:
    return manifest_jobs(load_manifest(path))


def run_job(job: ExtractJob, settings: ExtractSettings, *, store_url: str | None = None,
            workers: int | None = None, scheduler: str | None = None,
            progress: ProgressFn | None = None, repair: bool = False) -> ExtractionResult:
    """Run one job in this process, or on dask (`workers` local processes or a `scheduler`).
    `repair`: verify the entry first and extract again the shards that fail (in this process)."""
    if repair and (workers is not None or scheduler is not None):
        raise ConfigError("repair runs in one process: drop workers/scheduler (a repair re-extracts only "
                          "the damaged shards)", fields=("repair", "workers", "scheduler"))
    if workers is not None or scheduler is not None:
        from featcache.extract.distributed import WorkerSpec, extract_distributed

        spec = WorkerSpec(job, store_url or job.store or default_store_url(), settings)
        return extract_distributed(spec, workers=workers, scheduler=scheduler, progress=progress)
    dataset = build_dataset(job.dataset, job.root, **job.dataset_options)
    teacher = build_teacher(job.teacher, job.checkpoint, job.arch, **job.teacher_options)
    teacher.to(resolve_device(settings.device))
    store = FeatureStore(store_url or job.store)
    return extract(dataset, teacher, store, settings, levels=job.levels, progress=progress,
                   repair=repair)
