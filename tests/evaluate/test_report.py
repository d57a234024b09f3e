"""`featcache report`: the Markdown page, its plots, cases and store provenance."""

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from featcache.cli import app
from featcache.data.overlay import overlay_png
from featcache.evaluate.accumulator import MetricAccumulator
from featcache.evaluate.outputs import eval_overlay_path, write_eval_outputs, write_metric_files
from featcache.evaluate.report import build_report
from featcache.runs import Run
from featcache.store import EntryLayout, FeatureStore, LevelLayout
from tests.evaluate.conftest import make_run

runner = CliRunner()


def _evaluated(run_dir):
    acc = MetricAccumulator()
    rng = np.random.default_rng(0)
    for i in range(5):
        gt = np.zeros((16, 16), bool)
        gt[4:12, 4:12] = True
        pred = np.roll(gt, i, axis=1)  # dice falls with i: s0 best, s4 worst
        acc.add(f"s{i}", "demo", "test", pred, gt)
        overlay_png(rng.uniform(size=(16, 16)), pred, gt, eval_overlay_path(run_dir, "demo", f"s{i}"))
    write_eval_outputs(run_dir, acc)


def test_report_has_metrics_plots_cases_and_student(tmp_path):
    run = make_run(tmp_path / "run")
    _evaluated(run)
    result = build_report(run)
    text = result.path.read_text()
    assert result.path == run / "report" / "report.md"
    for png in ("curves.png", "gates.png"):
        with Image.open(run / "report" / png) as im:
            assert im.size[0] >= 800 and im.size[1] >= 300  # 11x4 in and 9x6.4 in at 100 dpi
        assert f"]({png})" in text
    assert "| demo | test | 5 |" in text and "pooled Dice" in text
    assert "**best** `demo/s0`: Dice 1.000" in text and "**worst** `demo/s4`" in text
    assert (run / "report" / "cases" / "worst_demo_s4.png").is_file()
    assert "parameters:" in text and "test_efficientnet" in text
    assert "names no feature store entries" in text


def test_report_without_eval_or_csvs_says_what_is_missing(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "gates.csv").unlink()
    result = build_report(run)
    assert any("featcache eval" in n for n in result.notes)
    assert any("gates.csv" in n for n in result.notes)
    assert len(result.plots) == 1 and "The test split is not evaluated yet" in result.path.read_text()


def test_provenance_from_a_real_store_and_an_unreachable_one(tmp_path):
    store = FeatureStore(tmp_path / "store")
    layout = EntryLayout(sample_ids=("a",), views=1, levels=(LevelLayout("emb", 2, 2, 2),))
    store.create_entry("demo.tiny.0123", layout, {"teacher": {"name": "tiny", "sha256": "ab12"}})
    run = make_run(tmp_path / "run", store=str(tmp_path / "store"), entries={"demo/tiny": "demo.tiny.0123"})
    text = build_report(run).path.read_text()
    assert "### `demo.tiny.0123`" in text and "teacher.sha256: `ab12`" in text
    gone = make_run(tmp_path / "run2", store=str(tmp_path / "nowhere"),
                    entries={"demo/tiny": "demo.tiny.0123"})
    result = build_report(gone)
    assert "store unreachable: key only" in result.path.read_text()
    assert any("does not exist" in n for n in result.notes)


def test_cli_report_and_bad_checkpoints(tmp_path):
    run = make_run(tmp_path / "run")
    ok = runner.invoke(app, ["report", "--run", str(run)])
    assert ok.exit_code == 0 and "report.md" in ok.output
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = runner.invoke(app, ["report", "--run", str(empty)])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    import torch

    (empty / "checkpoints").mkdir()
    torch.save({"format": "someone-else/3", "state": {}}, empty / "checkpoints" / "best.pt")
    other = runner.invoke(app, ["report", "--run", str(empty)])
    assert other.exit_code == 1 and "someone-else/3" in other.output


def test_html_report_is_self_contained_with_every_table_and_picture(tmp_path):
    import base64
    import re
    from html.parser import HTMLParser

    class Collect(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.srcs, self.links, self.tables, self.headers = [], [], 0, []

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "img":
                self.srcs.append(attrs.get("src", ""))
            if tag in ("link", "script", "a") and (attrs.get("href") or attrs.get("src")):
                self.links.append(attrs)
            self.tables += tag == "table"

        def handle_data(self, data):
            self.headers.append(data)

    run = make_run(tmp_path / "run")
    _evaluated(run)
    result = build_report(run)
    markdown = result.path.read_text()
    parser = Collect()
    parser.feed(result.html.read_text(encoding="utf-8"))
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(parser.srcs) == len(pictures) == 2 + 5  # curves, gates, the 5 cases (3 worst, 2 best)
    for src in parser.srcs:  # every picture embedded, none fetched from anywhere
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not parser.links
    assert parser.tables == markdown.count("\n|---") >= 1
    text = " ".join(parser.headers)
    for heading in ("Metrics", "Training curves", "Gate weights", "Best and worst cases", "Student",
                    "Feature store entries (provenance)", "pooled Dice"):
        assert heading in text


def test_a_report_reports_the_split_it_is_asked_for(tmp_path):
    """`eval --split val` writes RUN/eval-val; the report stays the test report unless asked for
    another split, and says what it has when the test split was never scored."""
    run = make_run(tmp_path / "run")
    acc = MetricAccumulator()
    acc.add("a", "blobs", "val", np.ones((4, 4), bool), np.ones((4, 4), bool))
    write_metric_files(Run(run).eval_of("val").path, acc, {"split": "val"})
    result = build_report(run)
    text = result.path.read_text()
    assert "## Metrics: the test split" in text and "The test split is not evaluated yet" in text
    assert any("evaluated: eval-val" in n and "--split SPLIT" in n for n in result.notes)
    text = build_report(run, split="val").path.read_text()
    assert "## Metrics: the val split" in text and "| blobs | val |" in text
