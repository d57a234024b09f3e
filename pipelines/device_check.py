"""The prepared device check (`bash pipelines/device_check.sh [OUT]`): on a machine with an NVIDIA
GPU, in one run of a few minutes, the numbers the README's projection stands in for, written to
OUT/device_check.json and OUT/device_check.md (a README-ready table):

- LiteMedSAM extraction img/s, real weights (demo slices, the distillation benchmark's taps);
- SAM ViT-B extraction img/s, random weights (timing only), 512 px PNGs resized to 1024 on the GPU;
- beside them, for SAM's input and LiteMedSAM's levels: the loader (CPU decode, uint8, per
  worker count) and the resize on the device, and the commit path alone (encoding and statistics
  on the GPU, compression and writes on the host threads), all as sim_extract.py measures them;
- distillation steps/s at 256 px, batch 16, from the cache (b) against the student alone (a)
  (bench_distill.py, reading the LiteMedSAM entry extracted above);
- the distillation loader alone at 256 px, batch 16 (bench_distill.py --simulate-student 0): the
  per-sample loader, the batched one finished on the GPU and the resident one, against a bare
  np.load of the same features, at 0 / 1 / 2 workers;
- peak GPU memory of each;
- a torchrun 1-process NCCL smoke run (ddp_smoke.py).

--smoke: the same code paths at tiny sizes on the CPU (what device_check.sh runs without a GPU;
tests/pipelines/test_device_check.py): SAM ViT-B through a zero-cost stand-in of its shapes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from bench_distill import TAPS  # beside this script (its folder is on sys.path)
from sim_extract import StandInTeacher, commit_rate, device_resize_rate, loader_rate, write_images

from featcache.data.registry import build_dataset
from featcache.extract.runner import extract
from featcache.extract.settings import ExtractSettings
from featcache.store import FeatureStore
from featcache.teachers.registry import build_teacher

HERE = Path(__file__).resolve().parent
SIZES = {
    "gpu": {"slices": 120, "batch": 32, "shard": 16, "sam_images": 64, "sam_batch": 16, "workers": [2, 4, 8],
            "distill": ["--image-size", "256", "--batch-size", "16", "--warmup", "3", "--steps", "15",
                        "--rounds", "3", "--skip-online"],
            "loader": ["--image-size", "256", "--batch-size", "16", "--rounds", "3", "--steps", "6"]},
    "smoke": {"slices": 6, "batch": 2, "shard": 2, "sam_images": 2, "sam_batch": 2, "workers": [0],
              "distill": ["--image-size", "64", "--batch-size", "2", "--warmup", "0", "--steps", "1",
                          "--rounds", "1", "--train", "2", "--skip-online", "--workers", "0"],
              "loader": ["--image-size", "64", "--batch-size", "2", "--rounds", "1", "--steps", "1",
                         "--worker-sweep", "0"]},
}


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def extraction(data, teacher, store: FeatureStore, settings: ExtractSettings, levels, device) -> dict:
    """img/s of one fresh extraction (the teacher on `device`) and its peak GPU memory."""
    _reset(device)
    start = time.perf_counter()
    result = extract(data, teacher, store, settings, levels=levels)
    seconds = time.perf_counter() - start
    assert result.status == "extracted", result.status
    return {"img_s": result.samples * result.views / seconds, "peak_gpu_mib": _peak_mib(device)}


def _results(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run a benchmark; its `RESULT name value` lines."""
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE.parent)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout[-3000:]}\n"
                         f"{out.stderr[-3000:]}")
    found = [line.split() for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    return {name: float(value) for _, name, value in found}


def check_litemedsam(size: dict, device: torch.device, store: FeatureStore) -> dict:
    """Real LiteMedSAM over the demo's train slices into `store` (the distillation reads it)."""
    teacher = build_teacher("litemedsam", None, None).to(device)
    data = build_dataset("demo", None, num_slices=size["slices"])
    settings = ExtractSettings(split="train", batch_size=size["batch"], shard_size=size["shard"])
    return extraction(data, teacher, store, settings, list(TAPS["demo"]), device)


def check_sam(size: dict, device: torch.device, tmp: Path, smoke: bool) -> tuple[dict, object, object]:
    """SAM ViT-B (random weights) over generated 512 px PNGs; smoke: a zero-cost stand-in of its
    shapes. Returns the result, the dataset and a stand-in (for the stage rates)."""
    real = build_teacher("sam", None, "vit_b", random_init=True).to(device)
    write_images(tmp / "png", size["sam_images"], 512)
    data = build_dataset("images", tmp / "png")
    specs = real.select_levels(None)
    standin = StandInTeacher(real, {s.name: torch.randn(1, s.channels, *s.grid, device=device)
                                    for s in specs}, 0.0).to(device)
    teacher = standin if smoke else real
    settings = ExtractSettings(batch_size=size["sam_batch"], shard_size=size["shard"])
    result = extraction(data, teacher, FeatureStore(tmp / "sam-store"), settings, None, device)
    return {**result, "teacher": "stand-in (smoke)" if smoke else "sam vit_b, random weights"}, data, standin


def check_stages(size: dict, data, standin, tmp: Path) -> dict:
    """The loader (CPU part of the device path) per worker count, the resize on the device and
    the commit path alone (LiteMedSAM-sized levels are not needed: SAM's neck is what it commits)."""
    out = {f"loader_img_s_w{w}": loader_rate(data, standin, w, size["sam_batch"], on_device=True)
           for w in size["workers"]}
    out["device_resize_img_s"] = device_resize_rate(data, standin, size["sam_batch"])
    args = SimpleNamespace(shard_size=size["shard"], levels=None)
    threads = os.cpu_count() or 1
    for compression in ("blosc", "none"):
        out[f"commit_img_s_{compression}"] = commit_rate(args, data, standin, tmp / "commit", threads,
                                                         compression)
    return out


def check_distill(size: dict, store: FeatureStore, env: dict[str, str]) -> dict:
    """bench_distill.py on the LiteMedSAM entry above: (a) student alone, (b) from the cache."""
    cmd = [sys.executable, str(HERE / "bench_distill.py"), "--slices", str(size["slices"]), "--store",
           store.url, *size["distill"]]
    return _results(cmd, env)


def check_loader(size: dict, env: dict[str, str]) -> dict:
    """bench_distill.py --simulate-student 0: the training loader alone (its own small store)."""
    cmd = [sys.executable, str(HERE / "bench_distill.py"), "--simulate-student", "0", "--slices",
           str(size["slices"]), *size["loader"]]
    return _results(cmd, env)


def check_ddp(env: dict[str, str]) -> dict:
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    return _results([torchrun, "--standalone", "--nproc_per_node", "1", str(HERE / "ddp_smoke.py")], env)


def _loader_rates(rates: dict) -> str:
    """The loader simulation's samples/s per worker count and its two ratios, in one cell."""
    counts = sorted({int(k.rsplit("_w", 1)[1]) for k in rates if k.startswith("samples_s_bare_w")})
    cells = [f"w{w}: " + " / ".join(f"{rates.get(f'samples_s_{m}_w{w}', 0):.0f}"
                                    for m in ("per_sample", "batched", "resident", "bare")) for w in counts]
    return (f"{'; '.join(cells)}; best new ÷ per-sample {rates.get('loader_speedup', 0):.1f}×, "
            f"÷ np.load {rates.get('loader_over_npload', 0):.2f}×")


def table(r: dict) -> str:
    """The README-ready markdown table of a device_check.json."""
    def mib(v):
        return "–" if v is None else f"{v:,.0f} MiB"

    s, d = r["stages"], r["distill"]
    loaders = ", ".join(f"{k.removeprefix('loader_img_s_w')} workers {v:.0f}" for k, v in s.items()
                        if k.startswith("loader_img_s_w"))
    rows = [
        ("LiteMedSAM extraction (real weights), embedding + stage2",
         f"{r['litemedsam']['img_s']:.1f} img/s", mib(r["litemedsam"]["peak_gpu_mib"])),
        (f"SAM ViT-B extraction ({r['sam']['teacher']}), neck, 1024 px", f"{r['sam']['img_s']:.1f} img/s",
         mib(r["sam"]["peak_gpu_mib"])),
        ("loader for SAM input (CPU decode, uint8), img/s per worker count", loaders, "–"),
        ("resize + normalise to 1024 px on the device", f"{s['device_resize_img_s']:.0f} img/s", "–"),
        ("commit path alone, SAM neck (fp16/blosc; none)",
         f"{s['commit_img_s_blosc']:.0f}; {s['commit_img_s_none']:.0f} img/s", "–"),
        ("distillation, 256 px, batch 16: (a) student alone, (b) from the cache",
         f"(a) {d.get('steps_s_a', 0):.2f}, (b) {d.get('steps_s_b', 0):.2f} steps/s, "
         f"(b)/(a) {d.get('b_over_a', 0):.2f}",
         f"(a) {mib(d.get('peak_gpu_mib_a'))}, (b) {mib(d.get('peak_gpu_mib_b'))}"),
        ("distillation loader alone, 256 px, batch 16, samples/s: per-sample / batched (finished on "
         "the device) / resident / bare np.load, per worker count", _loader_rates(r["loader"]), "–"),
        ("torchrun, 1 process, all-reduce", f"{r['ddp']['backend']}: "
         f"{'ok' if r['ddp'].get('ddp_allreduce_ok') == 1 else 'FAILED'}", "–"),
    ]
    smoke = ", CPU SMOKE at tiny sizes: not a measurement" if r["smoke"] else ""
    head = f"Device check ({r['device']}, {r['when']}, {r['seconds']:.0f} s{smoke})\n\n"
    lines = ["| what | rate | peak GPU memory |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return head + "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("device-check"))
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (no GPU needed)")
    args = p.parse_args()
    smoke = args.smoke or not torch.cuda.is_available()
    size = SIZES["smoke" if smoke else "gpu"]
    device = torch.device("cpu" if smoke else "cuda")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="device-check-") as folder:
        tmp = Path(folder)
        store = FeatureStore(tmp / "store")
        r = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", "smoke": smoke,
             "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        r["litemedsam"] = check_litemedsam(size, device, store)
        print(f"litemedsam: {r['litemedsam']}", flush=True)
        r["sam"], data, standin = check_sam(size, device, tmp, smoke)
        print(f"sam: {r['sam']}", flush=True)
        r["stages"] = check_stages(size, data, standin, tmp)
        print(f"stages: {r['stages']}", flush=True)
        r["distill"] = check_distill(size, store, env)
        print(f"distill: {r['distill']}", flush=True)
        r["loader"] = check_loader(size, env)
        print(f"loader: {r['loader']}", flush=True)
        r["ddp"] = {"backend": "gloo" if smoke else "nccl", **check_ddp(env)}
        print(f"ddp: {r['ddp']}", flush=True)
    r["seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "device_check.json").write_text(json.dumps(r, indent=2))
    (args.out / "device_check.md").write_text(table(r))
    print(table(r))
    print(f"wrote {args.out / 'device_check.json'} and {args.out / 'device_check.md'}")


if __name__ == "__main__":
    main()
