"""The `featcache` command line. Each command group lives in its own module; importing the
modules registers their commands on the one typer app."""

from featcache.cli import evaluate_cmd  # noqa: F401  (predict, report, export)
from featcache.cli.app import app, main

__all__ = ["app", "main"]
