"""Distributed extraction on dask: shards are the unit of work, one teacher per worker.

The client never builds the teacher. It sends picklable recipes (`WorkerSpec`: an ExtractJob and
its ExtractSettings) and each worker builds the dataset and teacher once, keeps them in a worker-local cache
keyed by the recipe, and extracts the shards it is given (one task per shard: claim, extract,
commit, release). A worker that dies loses only its uncommitted shard: dask reruns the task
elsewhere and the store's claim of a dead process expires. Statistics come back with each task
(mergeable sums) and the client finalizes the entry once, after every shard is committed.

`workers=N` starts a LocalCluster on 127.0.0.1 (N processes, 1 thread each; with several GPUs,
worker i uses cuda:i mod #GPUs); `scheduler="tcp://host:port"` uses an existing cluster, whose
workers must reach the same store URL.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from featcache.errors import ConfigError
from featcache.events import ImagesExtracted, ProgressFn, ShardsCommitted
from featcache.extract.adopt import adopt_shards
from featcache.extract.pipeline import run_shards
from featcache.extract.runner import (
    EntryPlan,
    ExtractionResult,
    finalize_once,
    is_complete,
    plan_entry,
)
from featcache.extract.settings import ExtractJob, ExtractSettings
from featcache.extract.stats import ChannelStats
from featcache.store import FeatureStore


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to rebuild the job and fill its entry."""

    job: ExtractJob
    store_url: str
    settings: ExtractSettings

    def resources_key(self) -> str:
        j = self.job
        return repr((j.teacher, j.dataset, str(j.root), str(j.checkpoint), j.arch, j.levels,
                     sorted(j.teacher_options.items()), sorted(j.dataset_options.items()),
                     self.settings.device))


@dataclass
class ShardOutcome:
    shard: int
    feature_bytes: int
    stats: dict[str, ChannelStats]
    seconds: float
    worker: str


_CACHE: dict[str, Any] = {}  # worker-local: one (dataset, teacher, device, plans) at a time


def _worker_device(name: str) -> torch.device:
    """cuda:<rank mod #GPUs> when several GPUs and the worker has an integer name (LocalCluster)."""
    from featcache.devices import resolve_device

    device = resolve_device(name)
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if count > 1 and device.index is None:
        try:
            from distributed import get_worker

            rank = int(get_worker().name)
        except (ValueError, TypeError):
            rank = 0
        device = torch.device("cuda", rank % count)
    return device


def _resources(spec: WorkerSpec) -> dict[str, Any]:
    from featcache.data.registry import build_dataset
    from featcache.teachers.registry import build_teacher

    key = spec.resources_key()
    if _CACHE.get("key") != key:
        _CACHE.clear()  # one teacher per worker: drop the previous job's model first
        job = spec.job
        device = _worker_device(spec.settings.device)
        teacher = build_teacher(job.teacher, job.checkpoint, job.arch, **job.teacher_options).to(device)
        _CACHE.update(key=key, device=device, teacher=teacher, plans={},
                      dataset=build_dataset(job.dataset, job.root, **job.dataset_options))
    return _CACHE


def _plan(spec: WorkerSpec) -> EntryPlan:
    res = _resources(spec)
    if spec.settings not in res["plans"]:
        res["plans"][spec.settings] = plan_entry(res["dataset"], res["teacher"], spec.settings,
                                                 levels=spec.job.levels)
    return res["plans"][spec.settings]


def plan_task(spec: WorkerSpec) -> EntryPlan:
    """Runs on a worker: the entry plan (builds and caches the teacher there)."""
    return _plan(spec)


def shard_task(shard: int, spec: WorkerSpec, poll_s: float = 0.5) -> ShardOutcome:
    """Runs on a worker: claim `shard`, extract and commit it. Returns its statistics (empty when
    someone else committed it meanwhile)."""
    start = time.perf_counter()
    res, plan = _resources(spec), _plan(spec)
    writer = FeatureStore(spec.store_url).create_entry(plan.key, plan.layout, plan.attrs)
    while not writer.claim(shard):
        if writer.committed()[shard]:
            return ShardOutcome(shard, 0, {}, time.perf_counter() - start, _worker_name())
        time.sleep(poll_s)  # held by a live writer elsewhere: wait for its commit or its expiry
    # DataLoader processes cannot start inside a daemonic dask worker process
    # automatic (-1) means none here: the dask workers are the parallelism
    loaders = 0 if multiprocessing.current_process().daemon else max(0, spec.settings.loader_workers)
    run = run_shards(res["dataset"], res["teacher"], writer, plan.indices, plan.names,
                     view_seed=plan.view_seed, batch_size=spec.settings.batch_size, loader_workers=loaders,
                     compute_dtype=spec.settings.compute_dtype, shards=[shard],
                     writer_threads=spec.settings.writer_threads)
    return ShardOutcome(shard, run.feature_bytes, run.stats, time.perf_counter() - start, _worker_name())


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except ValueError:
        return "local"


@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None,
                loader_workers: int = 0) -> Iterator[Any]:
    """A dask Client on a new loopback LocalCluster (`workers`) or an existing `scheduler`."""
    import dask
    from distributed import Client, LocalCluster

    if (workers is None) == (scheduler is None):
        raise ConfigError("pass either workers N or scheduler ADDRESS", fields=("workers", "scheduler"))
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise ConfigError(f"cannot reach dask scheduler {scheduler} ({exc}); start one with "
                              "`dask scheduler` or use workers N", fields=("workers",)) from None
        with client:
            yield client
        return
    if workers < 1:
        raise ConfigError("workers must be at least 1", fields=("workers",))
    # non-daemonic workers may start DataLoader processes of their own
    with dask.config.set({"distributed.worker.daemon": loader_workers == 0}), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                         dashboard_address=None, silence_logs=50) as cluster, Client(cluster) as client:
        yield client


def extract_distributed(spec: WorkerSpec, *, workers: int | None = None, scheduler: str | None = None,
                        progress: ProgressFn | None = None) -> ExtractionResult:
    """Fill one entry with every missing shard extracted by dask workers; finalize on the client."""
    from distributed import as_completed

    start = time.perf_counter()
    store = FeatureStore(spec.store_url)
    views = spec.settings.views
    with dask_client(workers, scheduler, max(0, spec.settings.loader_workers)) as client:
        plan: EntryPlan = client.submit(plan_task, spec, pure=False).result()
        n = len(plan.indices)
        skipped = len(plan.attrs["dataset"]["skipped"])
        count = len(client.scheduler_info().get("workers", {}))
        if is_complete(store, plan.key):
            return ExtractionResult(plan.key, "cached", n, views, 0, 0.0, 0, skipped, count)
        writer = store.create_entry(plan.key, plan.layout, plan.attrs)
        status = "resumed" if writer.committed().any() else "extracted"
        adopted = adopt_shards(store, writer, plan.attrs)
        status = "resumed" if adopted.shards else status
        missing = writer.missing_shards()
        stats: dict[str, ChannelStats] = dict(adopted.stats)
        covered, written = set(adopted.shards), adopted.feature_bytes
        done = (n - sum(len(range(*plan.layout.shard_range(k))) for k in missing)) * views
        futures = client.map(shard_task, missing, spec=spec, pure=False)
        for future in as_completed(futures):
            out: ShardOutcome = future.result()
            done += len(range(*plan.layout.shard_range(out.shard))) * views
            if out.stats:
                covered.add(out.shard)
                written += out.feature_bytes
                for name, acc in out.stats.items():
                    stats[name] = stats[name].merge(acc) if name in stats else acc
            if progress:
                progress(ImagesExtracted(done, n * views))
                progress(ShardsCommitted(plan.layout.num_shards - len(missing) + len(covered),
                                         plan.layout.num_shards))
    finalize_once(store, writer, plan, stats, covered, time.perf_counter() - start, progress)
    return ExtractionResult(plan.key, status, n, views, len(covered), time.perf_counter() - start,
                            written, skipped, count)
