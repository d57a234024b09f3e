"""`featcache extract`: run a teacher once over a dataset into the feature store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, ClassVar

import typer

from featcache.cli.app import app, console
from featcache.cli.common import progress_bar, sigterm_as_interrupt, table
from featcache.cli.events import Display
from featcache.errors import ConfigError
from featcache.events import Event, ImagesExtracted, ShardsCommitted, StatisticsRead
from featcache.extract.settings import ExtractJob, ExtractSettings

DEFAULTS = ExtractSettings()  # the option defaults below are these


class _Reporter(Display):
    """Extraction's events as rich bars: images/s and shards committed while extracting (the bar's
    own columns give elapsed time and ETA), then the statistics pass if one is needed."""

    renders: ClassVar[dict[type[Event], str]] = {
        ImagesExtracted: "images", ShardsCommitted: "shards", StatisticsRead: "statistics"}

    def __init__(self, bar, label: str) -> None:
        self.bar, self.label, self.tasks = bar, label, {}
        self.started = time.perf_counter()
        self.first: int | None = None  # images already committed before this run (resume)
        self.shards_info = ""

    def shards(self, e: ShardsCommitted) -> None:  # shown beside the images bar, with its next update
        self.shards_info = f"{e.done}/{e.total} shards"

    def images(self, e: ImagesExtracted) -> None:
        if "images" not in self.tasks:
            self.tasks["images"] = self.bar.add_task(self.label, total=e.total, info="")
        self.first = e.done if self.first is None else self.first
        rate = (e.done - self.first) / max(time.perf_counter() - self.started, 1e-9)
        info = f"{rate:.2f} img/s  {self.shards_info}".rstrip()
        self.bar.update(self.tasks["images"], completed=e.done, info=info)

    def statistics(self, e: StatisticsRead) -> None:
        if "stats" not in self.tasks:
            self.tasks["stats"] = self.bar.add_task("feature statistics", total=e.total, info="")
        self.bar.update(self.tasks["stats"], completed=e.done, info="")


def _say(result, repair: bool) -> None:
    """The lines above the summary table: cache hit, what a repair did, skipped files."""
    if result.status == "cached" and repair:
        console.print(f"[green]verified:[/] entry {result.key} is intact; nothing to repair")
    elif result.status == "cached":
        console.print(f"[green]cache hit:[/] entry {result.key} is complete; nothing to extract "
                      "(if `featcache verify` finds it damaged, --repair re-extracts what fails)")
    if result.repaired is not None:
        shards = ", ".join(map(str, result.repaired)) or "none (statistics or array nodes only)"
        console.print(f"[yellow]repaired[/] entry {result.key}: re-extracted shard(s) {shards}")
    if result.skipped:
        console.print(f"[yellow]{result.skipped} bad file(s) skipped[/]; they are listed in the entry's "
                      "provenance (attrs featcache.dataset.skipped)")


@app.command(epilog="Example: featcache extract --teacher litemedsam --dataset demo")
def extract(
    teacher: Annotated[str | None, typer.Option(help="Teacher name (`featcache teachers list`).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name (`featcache datasets list`).")] = None,
    root: Annotated[Path | None, typer.Option(help="Dataset folder (not needed for `demo`).")] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Local teacher weights file.")] = None,
    arch: Annotated[str | None, typer.Option(help="Teacher architecture, e.g. vit_b or a timm name.")] = None,
    random_init: Annotated[bool, typer.Option(
        "--random-init", help="Seeded random weights: an uninformative baseline teacher.")] = False,
    levels: Annotated[str | None, typer.Option(help="Comma-separated level names; default: the "
                                               "teacher's default levels.")] = None,
    store: Annotated[str | None, typer.Option(help="Store path or URL; default $FEATCACHE_STORE or "
                                              "./featcache-store.")] = None,
    split: Annotated[str, typer.Option(help="all, train, val or test.")] = DEFAULTS.split,
    views: Annotated[int, typer.Option(
        help="Views per image (view 0 = the image itself).")] = DEFAULTS.views,
    precision: Annotated[str, typer.Option(help="Stored precision: fp32, fp16, int8 (per-channel "
                                           "scale/offset) or fp16-brN / fp32-brN (N mantissa bits "
                                           "kept, e.g. fp16-br7); part of the entry key."
                                           )] = DEFAULTS.precision,
    compression: Annotated[str, typer.Option(help="Lossless codec of the stored features: blosc (lz4, "
                                             "bitshuffle; fastest reads), zstd or none; not part of "
                                             "the entry key.")] = DEFAULTS.compression,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = DEFAULTS.device,
    compute_dtype: Annotated[str, typer.Option(
        help="The teacher's forward precision, part of the entry key: float32 (also on CUDA: no "
             "TF32), tf32 (CUDA), bfloat16 or float16 (autocast).")] = DEFAULTS.compute_dtype,
    batch_size: Annotated[int, typer.Option(
        help="Images per teacher forward pass.")] = DEFAULTS.batch_size,
    shard_size: Annotated[int, typer.Option(
        help="Samples per shard (the unit of commit).")] = DEFAULTS.shard_size,
    loader_workers: Annotated[int, typer.Option(
        help="Decoding/preprocessing processes; -1: automatic (half the cores beyond one, 1 to 8; "
             "none for under 8 batches); 0: in the main process.")] = DEFAULTS.loader_workers,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip unreadable samples and record "
                                           "them instead of stopping.")] = False,
    manifest: Annotated[Path | None, typer.Option(help="Extract every (teacher, dataset) a "
                                                  "distillation manifest needs.")] = None,
    view_seed: Annotated[int, typer.Option(help="Seed of the augmentation views (part of the entry "
                                           "key).")] = DEFAULTS.view_seed,
    workers: Annotated[int | None, typer.Option(help="Run on a local dask cluster of N processes on "
                                                "127.0.0.1 (one teacher each; one GPU each when "
                                                "there are several).")] = None,
    scheduler: Annotated[str | None, typer.Option(help="Run on an existing dask cluster, e.g. "
                                                  "tcp://host:8786 (workers must reach --store).")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Verify the entry first and extract again "
                                         "only the shards that fail (what `featcache verify` reports "
                                         "as corrupt); a verified entry is left as it is.")] = False,
) -> None:
    """Run a teacher once over a dataset and cache its multi-scale features.

    Resumable (re-run the same command after a crash), a cache hit when the entry is complete, and
    safe to run in several processes or on a dask cluster at once: shards are claimed, then committed.
    """
    from featcache.extract.jobs import jobs_from_manifest, run_job

    if workers is not None and scheduler is not None:
        raise ConfigError("use either --workers N or --scheduler ADDRESS, not both")
    settings = ExtractSettings(split=split, views=views, view_seed=view_seed, precision=precision,
                               compression=compression, shard_size=shard_size, batch_size=batch_size,
                               device=device, loader_workers=loader_workers, compute_dtype=compute_dtype)

    if manifest is not None:
        if teacher or dataset:
            raise ConfigError("use either --manifest or --teacher/--dataset, not both")
        if skip_bad:  # skip_bad is part of the dataset's fingerprint: distill must see it too
            raise ConfigError("--skip-bad does not apply to --manifest; set `options: {skip_bad: true}` "
                              "on the dataset in the manifest so extraction and distillation agree")
        jobs = jobs_from_manifest(manifest)
    else:
        if not teacher or not dataset:
            raise ConfigError("pass --teacher NAME and --dataset NAME (or --manifest FILE)")
        options = {"random_init": True} if random_init else {}
        jobs = [ExtractJob(teacher=teacher, dataset=dataset, root=root, checkpoint=checkpoint, arch=arch,
                           teacher_options=options, dataset_options={"skip_bad": True} if skip_bad else {},
                           levels=levels.split(",") if levels else None)]
    rows = []
    for job in jobs:
        try:
            with sigterm_as_interrupt(), progress_bar() as bar:
                result = run_job(job, settings, store_url=store, workers=workers, scheduler=scheduler,
                                 progress=_Reporter(bar, f"{job.teacher} × {job.dataset}"), repair=repair)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: claims were released on the way out
            console.print("[yellow]interrupted: committed shards are kept; the same command resumes "
                          "the entry[/yellow]")
            raise typer.Exit(130) from None
        _say(result, repair)
        rows.append((job.teacher, job.dataset, result.key, result.status,
                     f"{result.samples}×{result.views}", result.shards_written,
                     f"{result.seconds:.1f}", f"{result.images_per_s:.2f}",
                     f"{result.feature_bytes / 2**20:.1f}"))
    console.print(table("extraction", ["teacher", "dataset", "entry", "status", "samples×views",
                                       "shards written", "seconds", "img/s", "feature MiB"], rows))
