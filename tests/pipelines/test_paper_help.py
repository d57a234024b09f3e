"""`python pipelines/paper.py --help` says what the pipeline does and writes, whole, and ends
with an example."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_paper_help_is_whole_and_ends_with_an_example():
    out = subprocess.run([sys.executable, "pipelines/paper.py", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "one jointly distilled student, evaluation per dataset, and a paper-style table" in text
    assert "OUT/table.md" in text and "manifests/paper-example.yaml" in text
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert lines[-1] == "Example: python pipelines/paper.py --config manifests/paper-example.yaml"
