"""Helpers for the hostile-input reproductions (issue 36): the CLI as a user runs it, checked for
the one thing every case shares: no traceback, and at most one error line."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from featcache.cli import app

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def cli(*args: str, env: dict[str, str] | None = None):
    """(result, error lines) of `featcache ARGS`; fails the test on a traceback."""
    res = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250", **(env or {})})
    assert res.exception is None or isinstance(res.exception, SystemExit), (res.output, res.exception)
    assert "Traceback" not in res.output, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1, res.output
    return res, errors


def child_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a featcache subprocess: this worktree first, no downloads."""
    return {**os.environ, "PYTHONPATH": str(REPO), "FEATCACHE_CACHE_DIR": str(tmp_path / "cache"),
            "COLUMNS": "250"}


PYTHON = sys.executable


@pytest.fixture
def tiny_registry(monkeypatch):
    """The tests' tiny teacher as `tiny` and the blob dataset as `blobs`, for CLI commands."""
    from featcache.data.registry import DATASETS
    from featcache.registry import Entry
    from featcache.teachers.registry import TEACHERS, TeacherEntry
    from tests.conftest import BlobDataset, TinyTeacher

    monkeypatch.setitem(TEACHERS, "tiny", TeacherEntry(
        lambda checkpoint=None, arch=None, **o: TinyTeacher(**o), TEACHERS["timm"].describe))
    monkeypatch.setitem(DATASETS, "blobs", Entry(lambda root, **o: BlobDataset(**o), "test blobs"))


from tests.distill.conftest import blob_registry, cached_store  # noqa: E402, F401  (fixtures)
