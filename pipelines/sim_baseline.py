"""`bench_distill.py --simulate-student MS --against REF`: an older commit's loader in the same run.

Issue 35 asks for the new loader against the loader featcache had when the issue was filed. That
loader's code is gone from the tree, and the per-sample path of sim_distill.py is not it: it runs
today's finishing code on batches of one, so it gained from every change the batched path brought
(the demo's slicing, the resampling as two matrix products, the noise drawn by torch). This module
checks REF out into a temporary folder (`git archive`, no worktree left behind), runs REF's own
`bench_distill.py --simulate-student` there with the same image size, batch, taps, warm-up, steps
and worker counts, and returns its loader's samples/s per worker count (its `RESULT
samples_s_featcache_wN` lines). It runs after the interleaved rounds, not between them: read its
ratios as coarser than the in-run ones.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT = re.compile(r"^RESULT samples_s_featcache_w(\d+) ([0-9.eE+-]+)$")


def baseline_rates(args, ref: str) -> dict[int, float]:
    """Samples/s of REF's training loader per worker count of args.worker_sweep."""
    with tempfile.TemporaryDirectory(prefix="bench-distill-baseline-") as tmp:
        _checkout(ref, Path(tmp))
        command = [sys.executable, "pipelines/bench_distill.py",
                   "--simulate-student", str(args.simulate_student),
                   "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
                   "--taps", args.taps, "--slices", str(args.slices), "--warmup", str(args.warmup),
                   "--steps", str(args.steps), "--worker-sweep", *map(str, args.worker_sweep)]
        env = {**os.environ, "PYTHONPATH": tmp}  # REF's featcache, not this tree's
        print(f"baseline: {ref}'s loader, its own bench_distill.py --simulate-student (a few minutes)",
              flush=True)
        done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"--against {ref}: its bench failed ({done.returncode}): {' | '.join(tail)}")
    rates = {int(m[1]): float(m[2]) for m in map(RESULT.match, done.stdout.splitlines()) if m}
    missing = [w for w in args.worker_sweep if w not in rates]
    if missing:
        raise SystemExit(f"--against {ref}: its bench printed no loader rate for {missing} worker(s); "
                         "pick a commit whose bench_distill.py has --simulate-student")
    return rates


def _checkout(ref: str, into: Path) -> None:
    """REF's tracked files under `into`, from this repository's history."""
    archive = into / "ref.tar"
    try:
        subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "-o", str(archive), ref],
                       check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as e:
        detail = getattr(e, "stderr", "") or str(e)
        raise SystemExit(f"--against {ref}: cannot check it out from {REPO} ({detail.strip()}); "
                         "it needs the repository's history (a clone, not a copy of the tree)") from e
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    archive.unlink()
