"""`featcache ls / info / verify / rm / gc` through typer's CliRunner."""

from __future__ import annotations

import random

from typer.testing import CliRunner

from featcache.cli import app
from featcache.store import FeatureStore
from tests.store.storehelpers import KEY, fill

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False, env={"COLUMNS": "250"})


def test_ls_info_verify_ok(tmp_path, monkeypatch):
    fill(FeatureStore(tmp_path / "store"))
    monkeypatch.setenv("FEATCACHE_STORE", str(tmp_path / "store"))
    res = _run("ls")
    assert res.exit_code == 0, res.output
    assert KEY in res.output and "blobs" in res.output and "tiny" in res.output and "100%" in res.output
    res = _run("info", KEY)
    assert res.exit_code == 0 and "tinyconv" in res.output and "precision_report" in res.output
    res = _run("verify", "--store", str(tmp_path / "store"))
    assert res.exit_code == 0 and f"ok {KEY}: 6 samples checked" in res.output


def test_verify_lists_bad_samples_and_exits_1(tmp_path):
    store = FeatureStore(tmp_path / "store")
    fill(store)
    chunk = f"{KEY}/levels/coarse/c/1/0/0/0/0"
    data = bytearray(store.backend.get(chunk))
    data[random.Random(0).randrange(len(data) // 2)] ^= 0x55
    store.backend.put(chunk, bytes(data))
    res = _run("verify", KEY, "--store", str(tmp_path / "store"))
    assert res.exit_code == 1
    assert "FAILED" in res.output and "bad sample case0" in res.output and "coarse" in res.output


def test_rm_gc_and_errors(tmp_path):
    url = str(tmp_path / "store")
    fill(FeatureStore(url))
    res = _run("gc", "--store", url)
    assert res.exit_code == 0 and "removed 0 expired claims" in res.output
    res = _run("rm", KEY, "--store", url, "--yes")
    assert res.exit_code == 0 and FeatureStore(url).entries() == []
    res = _run("rm", KEY, "--store", url, "--yes")
    assert res.exit_code == 1 and "has no entry" in res.output
    res = _run("ls", "--store", str(tmp_path / "nowhere"))
    assert res.exit_code == 1 and "does not exist" in res.output


def test_ls_tells_two_checkpoints_of_one_teacher_apart(tmp_path):
    """Two users' `teacher.pth`: same teacher name, different weights, both visible in ls."""
    from tests.store.storehelpers import ATTRS, make_layout, stats_for, write_all

    store = FeatureStore(tmp_path / "store")
    for key, sha in (("blobs.tiny.aaaaaaaaaaaaaaaa", "1" * 64), ("blobs.tiny.bbbbbbbbbbbbbbbb", "2" * 64)):
        attrs = {**ATTRS, "teacher": {**ATTRS["teacher"], "weights_sha256": sha,
                                      "weights_source": f"/home/{sha[0]}/teacher.pth"}}
        writer = store.create_entry(key, make_layout(), attrs)
        write_all(writer)
        writer.finalize(stats_for(writer.layout), {})
    res = _run("ls", "--store", str(tmp_path / "store"))
    assert "(11111111)" in res.output and "(22222222)" in res.output, res.output
    res = _run("info", "blobs.tiny.aaaaaaaaaaaaaaaa", "--store", str(tmp_path / "store"))
    assert "/home/1/teacher.pth" in res.output


def test_ls_never_cuts_a_column_name_or_a_cell(tmp_path, monkeypatch):
    """Off a terminal (CliRunner, a log) the table takes the width it needs; on a narrow terminal
    each entry is a block of `column: value` lines."""
    from featcache.cli.app import console

    url = str(tmp_path / "store")
    fill(FeatureStore(url))
    names = ("key", "dataset", "teacher", "levels", "samples", "views", "precision", "complete",
             "on disk", "created", "verified")
    res = _run("ls", "--store", url)
    assert res.exit_code == 0 and "…" not in res.output, res.output
    header = next(line for line in res.output.splitlines() if "precision" in line)
    assert all(f" {name} " in header for name in names)

    monkeypatch.setattr(type(console), "is_terminal", property(lambda self: True))
    monkeypatch.setattr(console, "_width", 60)
    res = _run("ls", "--store", url)
    assert res.exit_code == 0 and "…" not in res.output, res.output
    assert KEY in res.output and "  precision: " in res.output and "  verified: never" in res.output
