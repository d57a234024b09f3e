"""Help that teaches: `featcache --help` and every command's `--help` end with one example line,
and that example is a real command line (its command exists, its options parse)."""

from __future__ import annotations

import shlex

import pytest
from typer.testing import CliRunner

from featcache.cli import app
from featcache.cli.reference import EXAMPLE_PREFIX, commands, example_of, root_command

runner = CliRunner()
ALL = [("featcache", root_command()), *commands()]


def _last_line(output: str) -> str:
    return [line.strip() for line in output.splitlines() if line.strip()][-1]


def _parse(example: str) -> None:
    """Resolve the example's command through the groups and parse its options and arguments as
    running it would (types, required options), without running it."""
    words = shlex.split(example)
    words = words[:words.index(">")] if ">" in words else words  # `featcache init … > m.yaml`
    assert words[0] == "featcache", example
    command, args = root_command(), words[1:]
    ctx = command.make_context("featcache", list(args), resilient_parsing=True)
    while hasattr(command, "list_commands") and args and not args[0].startswith("-"):
        name, args = args[0], args[1:]
        command = command.get_command(ctx, name)
        assert command is not None, f"{example}: no command {name!r}"
        ctx = command.make_context(name, list(args), parent=ctx)


def test_every_command_is_covered():
    paths = [path for path, _ in ALL]
    assert {"featcache", "featcache extract", "featcache distill", "featcache eval",
            "featcache datasets check", "featcache teachers list", "featcache ls"} <= set(paths)


@pytest.mark.parametrize("path,command", ALL, ids=[p for p, _ in ALL])
def test_help_ends_with_a_real_example(path, command):
    result = runner.invoke(app, [*path.split()[1:], "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    example = example_of(command)
    assert example.startswith(path + " ") or example.startswith("featcache "), \
        f"{path}: give the command an epilog '{EXAMPLE_PREFIX}{path} …' (one real command line)"
    if path != "featcache":
        assert example.startswith(path), f"{path}'s example runs another command: {example}"
    assert _last_line(result.output) == f"{EXAMPLE_PREFIX}{example}"
    _parse(example)


def test_a_wrong_example_would_fail():
    with pytest.raises(Exception):  # noqa: B017 (click's UsageError or NoSuchOption)
        _parse("featcache extract --no-such-option 3")
    with pytest.raises(AssertionError):
        _parse("featcache nosuchcommand")
