"""The `featcache` command line. Each command group lives in its own module; importing the
modules registers their commands on the one typer app."""

from featcache.cli import (  # noqa: F401
    datasets_cmd,
    distill_cmd,
    evaluate_cmd,
    extract_cmd,
    init_cmd,
    probe_cmd,
    store_cmd,
    study_cmd,
    teachers_cmd,
)
from featcache.cli.app import app, main

__all__ = ["app", "main"]
