"""`featcache ls / info / verify / rm / gc`: look after the feature store."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.measure import Measurement
from rich.table import Table

from featcache.cli.app import app, console
from featcache.errors import CorruptEntryError
from featcache.store import (
    FeatureStore,
    default_store_url,
    entry_summary,
    gc,
    last_verification,
    record_verification,
    verify_entry,
)
from featcache.store.reader import REPAIR
from featcache.store.repair import repair_command

StoreOpt = Annotated[str | None, typer.Option(
    "--store", help="Store folder or URL (file://, memory://, s3://). Default: $FEATCACHE_STORE "
                    "or ./featcache-store.")]


def _open(store: str | None, read_only: bool, create: bool = True) -> FeatureStore:
    return FeatureStore(store or default_store_url(), read_only=read_only, create=create)


def _size(n: float) -> str:
    units = ["B", "KiB", "MiB", "GiB"]
    while n >= 1024 and len(units) > 1:
        n /= 1024
        units.pop(0)
    return f"{n:.0f} {units[0]}" if units[0] == "B" else f"{n:.1f} {units[0]}"


def _verified(fs: FeatureStore, key: str) -> str:
    """The `verified` cell of `ls`: the outcome and time of the entry's last verification."""
    last = last_verification(fs.backend, key)
    if last is None:
        return "never"
    return f"{'ok' if last.get('ok') else 'FAILED'} {_minute(last.get('utc', '?'))}"


def _minute(iso: object) -> str:
    """An ISO time in UTC to the minute (2026-12-02 00:55): what fits beside the other columns."""
    return str(iso)[:16].replace("T", " ")


def _verify_now(fs: FeatureStore, key: str, reader) -> tuple[str, bool]:
    """`ls --verify`: verify the entry as it is listed; (cell, ok)."""
    report = verify_entry(reader, fs.backend)
    record_verification(fs.backend, report)
    if report.ok:
        return "ok (just now)", True
    return f"FAILED now: {len(report.bad_ids)} bad, {len(report.problems)} problems", False


def _print_whole(table: Table) -> None:
    """Print a table without cutting a column name or a cell short. Off a terminal (a log, a pipe)
    there is no width to respect: the table gets the width it needs. On a terminal too narrow
    for every column, each entry is printed as a block of `column: value` lines instead."""
    needs = Measurement.get(console, console.options.update_width(10_000), table)
    if not console.is_terminal:
        width = console.width  # print(width=) cannot widen past the console's own width
        console.width = max(width, needs.maximum)
        try:
            console.print(table)
        finally:
            console.width = width
        return
    if needs.minimum <= console.width:
        console.print(table)
        return
    names = [str(c.header) for c in table.columns]
    for row in zip(*(list(c.cells) for c in table.columns), strict=True):
        console.print(f"[bold]{row[0]}[/]", highlight=False, soft_wrap=True)
        for name, cell in zip(names[1:], row[1:], strict=True):
            console.print(f"  {name}: {cell}", highlight=False, soft_wrap=True)


@app.command("ls", epilog="Example: featcache ls --store /lab/featcache-store")
def ls(store: StoreOpt = None,
       verify_: Annotated[bool, typer.Option("--verify", help="Verify every entry as it is listed (reads "
                                             "every chunk; exit 1 if one fails).")] = False) -> None:
    """List the entries of a store: what they hold, how complete they are, when last verified."""
    fs = _open(store, read_only=not verify_, create=not verify_)
    table = Table(title=f"featcache store {fs.url}")
    for col in ("key", "dataset", "teacher", "levels", "samples", "views", "precision", "complete",
                "on disk", "created", "verified"):
        # Keys are copied into commands: never folded. A column is never narrower than its name
        # (rich would cut "precision" to "precisi…"); the long cells fold instead.
        table.add_column(col, justify="right" if col in ("samples", "views", "on disk") else "left",
                         no_wrap=col in ("key", "teacher", "complete", "verified"), min_width=len(col))
    readers, damaged = fs.scan()
    failed = bool(damaged) and verify_
    for key, reader in readers.items():
        row = entry_summary(fs, key, reader)
        done = f"{row['complete_fraction']:.0%}" + ("" if row["complete"] else " (partial)")
        if not verify_ and last_verification(fs.backend, key) is None:
            done += " (not verified)"  # the markers say committed; only verify reads the chunks
        if row["missing"]:  # named as damage below, like an entry that cannot be opened
            done += " DAMAGED"
            damaged[key] = (f"array {row['missing'][0]} has no zarr.json"
                            + (f" (and {len(row['missing']) - 1} more)" if len(row["missing"]) > 1 else "")
                            + f"; {REPAIR}")
        teacher = f"{row['teacher']} ({row['weights']})" if row["weights"] else row["teacher"]
        checked, ok = _verify_now(fs, key, reader) if verify_ else (_verified(fs, key), True)
        failed |= not ok
        if not ok:
            damaged.setdefault(key, f"its data fails verification; {REPAIR}")
        table.add_row(key, row["dataset"], teacher, ", ".join(row["levels"]), str(row["samples"]),
                      str(row["views"]), row["precision"], done, _size(row["bytes"]), _minute(row["created"]),
                      checked)
    if not table.rows and not damaged:
        console.print(f"store {fs.url} has no entries; `featcache extract` writes one")
        return
    if table.rows:
        _print_whole(table)
    for key, why in damaged.items():  # listed, not fatal: the other entries stay usable
        console.print(f"[red]DAMAGED[/] {key}: {why}", highlight=False, soft_wrap=True)
    foreign = fs.foreign()
    if foreign:
        console.print(f"not featcache entries, left alone: {', '.join(foreign)}", highlight=False)
    if failed:
        raise typer.Exit(1)


@app.command("info", epilog="Example: featcache info demo.litemedsam.32e6fb5518f8592f")
def info(entry: Annotated[str, typer.Argument(help="Entry key, as `featcache ls` prints it.")],
         store: StoreOpt = None) -> None:
    """Show an entry's provenance: teacher, dataset, layout, precision report."""
    reader = _open(store, read_only=True).open(entry, allow_incomplete=True)
    meta = dict(reader.meta)
    ids = meta.pop("sample_ids", [])
    console.print(f"[bold]{entry}[/]  {'complete' if reader.complete else 'INCOMPLETE'} "
                  f"({reader.committed_fraction:.0%} of shards committed), {len(ids)} samples")
    console.print(f"compute dtype: {_compute(meta.pop('compute', None))}", highlight=False)
    for section in ("teacher", "dataset", "layout", "precision_report"):
        if section in meta:
            console.print(f"[bold]{section}[/]")
            console.print_json(json.dumps(meta.pop(section), default=str))
    console.print("[bold]other[/]")
    console.print_json(json.dumps(meta, default=str))
    console.print(f"sample ids: {', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''}")


def _compute(recorded: dict | None) -> str:
    """The teacher's forward precision as provenance records it (extract settings compute_dtype)."""
    if not recorded:
        return ("not recorded (extracted before featcache recorded it: float32 on the CPU, "
                "bfloat16 autocast on CUDA)")
    return f"{recorded.get('dtype')} (teacher on {recorded.get('device')})"


@app.command("verify", epilog="Example: featcache verify demo.litemedsam.32e6fb5518f8592f")
def verify(entry: Annotated[str | None, typer.Argument(help="Entry key; all entries if omitted.")] = None,
           store: StoreOpt = None) -> None:
    """Read every chunk and check checksums, commit markers, shapes, ids and statistics."""
    # writable where it can be (never created): each outcome is recorded for `ls` to show
    fs = _open(store, read_only=False, create=False)
    keys = [entry] if entry else fs.keys()
    failed = False
    for key in keys:
        try:
            reader = fs.open(key, allow_incomplete=True)
        except CorruptEntryError as exc:
            if entry:
                raise
            failed = True
            console.print(f"[red]FAILED[/] {key}: {exc}", highlight=False, soft_wrap=True)
            continue
        report = verify_entry(reader, fs.backend)
        record_verification(fs.backend, report)
        if report.ok:
            console.print(f"[green]ok[/] {key}: {report.samples_checked} samples checked")
            continue
        failed = True
        console.print(f"[red]FAILED[/] {key}: {len(report.bad_ids)} bad samples, "
                      f"{len(report.problems)} problems", highlight=False)
        for problem in report.problems:
            console.print(f"  problem: {problem}", highlight=False)
        for bad in report.bad_samples:
            console.print(f"  bad sample {bad.sample_id} (index {bad.index}) {bad.what}: {bad.reason}",
                          highlight=False, soft_wrap=True)
        console.print(f"  repair: {repair_command(reader.meta)}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@app.command("rm", epilog="Example: featcache rm demo.timm.e46ddfe2444f1da7 --yes")
def rm(entry: Annotated[str, typer.Argument(help="Entry key to delete.")],
       yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
       force: Annotated[bool, typer.Option("--force", help="Remove it even while an extract holds "
                                                           "a live claim on one of its shards.")] = False,
       store: StoreOpt = None) -> None:
    """Delete an entry and all its features (also a damaged one)."""
    fs = _open(store, read_only=False, create=False)
    if not fs.exists(entry):
        fs.remove(entry)  # raises the one-line "no entry" error
    if not yes and not typer.confirm(f"delete entry {entry} from {fs.url}?"):
        raise typer.Exit(1)
    fs.remove(entry, force=force)
    console.print(f"removed {entry}")


@app.command("gc", epilog="Example: featcache gc --store /lab/featcache-store")
def gc_(store: StoreOpt = None) -> None:
    """Remove expired shard claims, data of uncommitted shards no writer holds, and abandoned
    entries (nothing committed, no live claim)."""
    report = gc(_open(store, read_only=False, create=False))
    for key in report.entries_removed:
        console.print(f"removed abandoned entry {key} (no shard committed, no live claim)")
    for key, why in report.damaged.items():
        console.print(f"[red]skipped damaged[/] {key}: {why}", highlight=False, soft_wrap=True)
    console.print(f"removed {report.claims_removed} expired claims, cleaned "
                  f"{len(report.shards_cleaned)} uncommitted shards ({_size(report.bytes_freed)} freed)")
