"""ExtractSettings: the one place extraction defaults are stated, checked once when built."""

from dataclasses import fields

import pytest
import typer
from typer.testing import CliRunner

from featcache.cli import app
from featcache.errors import StoreError
from featcache.extract.settings import ExtractSettings


@pytest.mark.parametrize("change, message", [
    ({"views": 0}, "views must be at least 1"),
    ({"shard_size": 0}, "shard_size must be at least 1"),
    ({"batch_size": 0}, "batch_size must be at least 1"),
    ({"compression": "lz9"}, "unknown compression 'lz9'; use one of blosc, zstd, none"),
    ({"precision": "fp8"}, "unknown precision 'fp8'"),
])
def test_bad_settings_are_refused_when_built(change, message):
    with pytest.raises(StoreError, match=message):
        ExtractSettings(**change)


def test_cli_defaults_are_the_settings_defaults():
    options = {p.name: p.default for p in typer.main.get_command(app).commands["extract"].params}
    defaults = ExtractSettings()
    shared = [f.name for f in fields(ExtractSettings) if f.name in options]
    assert {"precision", "compression", "shard_size", "batch_size", "views"} <= set(shared)
    assert {n: options[n] for n in shared} == {n: getattr(defaults, n) for n in shared}


def test_cli_names_the_flag_before_loading_anything(tmp_path):
    res = CliRunner().invoke(app, ["extract", "--teacher", "nope", "--dataset", "demo", "--store",
                                   str(tmp_path / "s"), "--shard-size", "0"], env={"COLUMNS": "200"})
    assert res.exit_code == 1 and res.output.strip() == "error: --shard-size must be at least 1"
    assert not (tmp_path / "s").exists()  # and the unknown teacher was never looked up
