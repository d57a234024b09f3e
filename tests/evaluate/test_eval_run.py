"""End to end on a tiny run: distill -> eval -> report through the CLI."""

import json

from typer.testing import CliRunner

from featcache.cli import app
from featcache.distill.trainer import train
from tests.distill.conftest import blob_registry, cached_store, make_manifest  # noqa: F401


def test_distill_eval_report(cached_store, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    train(make_manifest(cached_store, run))
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert "Dice" in result.output and "pooled" in result.output.lower()
    summary = json.loads((run / "eval" / "summary.json").read_text())
    group = summary["groups"][0]
    assert group["dataset"] == "blobs" and group["split"] == "test" and group["n"] >= 1
    assert 0.0 <= group["dice_mean"] <= 1.0
    assert list((run / "eval" / "overlays" / "blobs").glob("*.png"))
    result = runner.invoke(app, ["report", "--run", str(run)])
    assert result.exit_code == 0, result.output
    text = (run / "report" / "report.md").read_text()
    from featcache.runs import Run

    entries = Run(run).load_checkpoint("best").entries
    assert all(k in text for k in entries.values()) and "invalid entry key" not in result.output
