"""What a newcomer met, through the CLI as a log file sees it (CliRunner's output is not a
terminal): distill logs a line per epoch instead of a silent live bar; every surface numbers
epochs the same way (console, metrics.csv, summary.json, report.md); `eval --split val` writes
its own folder and leaves the test scores the report reads alone."""

from __future__ import annotations

import csv
import json
import re

import yaml
from typer.testing import CliRunner

from featcache.cli import app
from tests.distill.conftest import make_manifest

runner = CliRunner()


def _invoke(*args):
    result = runner.invoke(app, list(args), env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.output


def test_a_run_through_the_cli_reads_the_same_everywhere(cached_store, tmp_path):
    run = tmp_path / "run"
    manifest = make_manifest(cached_store, run, training={"epochs": 3})
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(manifest.model_dump(mode="json")))

    out = _invoke("distill", "--manifest", str(path))
    # One line per epoch, numbered from 1, the last one at 100%.
    epochs = [int(n) for n in re.findall(r"^training: .*epoch (\d+) val score", out, flags=re.M)]
    assert epochs == [1, 2, 3], out
    best = int(re.search(r"^│ [^│]*│ \d+\s+│ 3\s+│ [\d.]+\s+│ (\d+)\s+│", out, flags=re.M).group(1))

    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert sorted({int(r["epoch"]) for r in rows}) == [1, 2, 3]
    val = {int(r["epoch"]): float(r["val_score"]) for r in rows if r["split"] == "val"}
    assert max(val, key=lambda e: (val[e], -e)) == best  # the best epoch is the one the csv says

    out = _invoke("eval", "--run", str(run), "--split", "val")
    assert (run / "eval-val" / "summary.json").is_file() and not (run / "eval").exists()
    assert "eval-val" in out
    _invoke("eval", "--run", str(run))
    summary = json.loads((run / "eval" / "summary.json").read_text())
    assert summary["info"]["split"] == "test" and summary["info"]["epoch"] == best
    assert json.loads((run / "eval-val" / "summary.json").read_text())["info"]["split"] == "val"
    _invoke("eval", "--run", str(run), "--split", "val")  # scoring val again leaves test alone
    assert json.loads((run / "eval" / "summary.json").read_text())["info"]["split"] == "test"

    _invoke("report", "--run", str(run))
    assert f"(epoch {best}, best val Dice" in (run / "report" / "report.md").read_text()
