"""`featcache teachers list` through typer's CliRunner."""

from __future__ import annotations

from typer.testing import CliRunner

from featcache.cli import app
from featcache.teachers.registry import TEACHERS


def test_teachers_list_shows_every_teacher_with_shapes():
    result = CliRunner().invoke(app, ["teachers", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in sorted(TEACHERS):
        assert name in result.output
    assert "embedding 256x64x64" in result.output  # litemedsam default level
    assert "neck 256x64x64" in result.output  # sam / medsam
    assert "block11 768x14x14" in result.output  # clip ViT-B-16
    # The descriptions name settings; the listing prints them as extract's flags.
    assert "--random-init" in result.output and "--checkpoint FILE" in result.output
    assert "random_init" not in result.output
