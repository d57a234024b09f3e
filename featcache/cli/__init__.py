"""The `featcache` command line. Each command group lives in its own module; importing the
modules registers their commands on the one typer app."""

from featcache.cli import store_cmd  # noqa: F401
from featcache.cli.app import app, main

__all__ = ["app", "main"]
