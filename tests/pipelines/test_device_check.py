"""`bash pipelines/device_check.sh` on a machine without a GPU (CUDA hidden): one line saying so,
then the CPU smoke of the same code paths, exit 0, with the JSON and table a GPU run writes."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_device_check_without_a_gpu_says_so_and_smokes_every_path(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable,
           "FEATCACHE_CACHE_DIR": str(tmp_path / "cache")}
    out = subprocess.run(["bash", str(REPO / "pipelines" / "device_check.sh"), str(tmp_path / "out")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    first = out.stdout.splitlines()[0]
    assert first.startswith("device check: no NVIDIA GPU here") and "CPU smoke" in first
    result = json.loads((tmp_path / "out" / "device_check.json").read_text())
    assert result["smoke"] is True and result["device"] == "cpu"
    assert result["litemedsam"]["img_s"] > 0 and result["sam"]["img_s"] > 0
    stages = result["stages"]
    assert min(stages[k] for k in ("loader_img_s_w0", "device_resize_img_s", "commit_img_s_blosc",
                                   "commit_img_s_none")) > 0
    assert result["distill"]["steps_s_a"] > 0 and result["distill"]["steps_s_b"] > 0
    loader = result["loader"]
    assert min(loader[f"samples_s_{m}_w0"] for m in ("per_sample", "batched", "resident", "bare")) > 0
    assert loader["loader_speedup"] > 0 and loader["loader_over_npload"] > 0
    assert result["ddp"] == {"backend": "gloo", "ddp_allreduce_ok": 1.0}
    table = (tmp_path / "out" / "device_check.md").read_text()
    assert "| what | rate | peak GPU memory |" in table and "CPU SMOKE" in table and "gloo: ok" in table
    assert "best new ÷ per-sample" in table
