"""Exporting the student for edge devices (ONNX or TorchScript), with a parity and latency check.

The exported graph takes images (B, C, S, S) at the one size S it was exported for (the batch is
dynamic) and returns mask logits (B, M, S, S), exactly as `Student.forward` (M = 1 for a binary
student, K + 1 softmax channels for K mask classes). Classification heads are not in the file:
the result names them (`heads_left_out`) so nobody ships a classifier believing it is there.
Parity: on random inputs the exported logits must match PyTorch within
TOLERANCE · max(1, max |logits|) (absolute difference).
ONNX uses torch's TorchScript-based exporter (dynamo=False): it needs only the `onnx` package, not
onnxscript, and handles the student's fixed-size interpolations.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from featcache.errors import CheckpointError, ConfigError
from featcache.runs import Run
from featcache.student import Student, count_params

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
TOLERANCE = 1e-4
OPSET = 17


@dataclass
class ExportResult:
    path: Path
    format: str
    image_size: int
    params: int
    file_bytes: int
    max_abs_diff: float
    tolerance: float  # the absolute bound the diff was checked against
    torch_ms: float  # median CPU latency per image, batch 1
    runtime_ms: float
    runtime: str  # "onnxruntime <version>" or "torchscript"
    threads: int
    heads_left_out: list[str] = field(default_factory=list)  # classification heads not exported


def export_student(student: Student, image_size: int, fmt: str, path: Path) -> Path:
    """Write `student` (eval mode) as ONNX or TorchScript for (B, C, image_size, image_size) inputs."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use {' or '.join(FORMATS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    student = student.eval()
    x = torch.rand(1, student.config.in_channels, image_size, image_size)
    with warnings.catch_warnings():
        # Tracing warns that shape checks become constants: intended, the size is fixed at export.
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            torch.onnx.export(student, (x,), str(path), input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
        else:
            with torch.no_grad():
                torch.jit.trace(student, x).save(str(path))
    return path


def load_runtime(path: Path, fmt: str) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """A function float32 (B, C, S, S) -> logits (B, 1, S, S) running the exported file, and its name."""
    if fmt == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return (lambda x: session.run(None, {"image": x})[0]), f"onnxruntime {ort.__version__}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run, "torchscript"


def median_ms(fn: Callable[[], object], runs: int = 20, warmup: int = 3) -> float:
    """Median wall time of fn() in milliseconds after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def check_parity(student: Student, run: Callable[[np.ndarray], np.ndarray], image_size: int,
                 batches: tuple[int, ...] = (1, 2), seed: int = 0) -> tuple[float, float]:
    """(max abs logit difference, the bound it must stay under) on seeded random inputs."""
    gen = torch.Generator().manual_seed(seed)
    worst, scale = 0.0, 1.0
    for b in batches:
        x = torch.rand(b, student.config.in_channels, image_size, image_size, generator=gen)
        with torch.no_grad():
            ref = student(x).numpy()
        worst = max(worst, float(np.abs(run(x.numpy()) - ref).max()))
        scale = max(scale, float(np.abs(ref).max()))
    return worst, TOLERANCE * scale


def export_run(run_dir: Path, fmt: str, out: Path | None = None, image_size: int | None = None,
               which: str = "best", runs: int = 20) -> ExportResult:
    """Export a run's student, check parity (CheckpointError when it fails) and time both runtimes."""
    run_files = Run(run_dir)
    student, checkpoint = run_files.load_student(which)
    size = int(image_size or checkpoint.image_size)
    stride = student.stride
    if size < stride or size % stride:
        raise ConfigError(f"image_size {size} must be a positive multiple of {stride} (the encoder's stride)",
                          fields=("image_size",))
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use {' or '.join(FORMATS)}")
    path = Path(out) if out else run_files.export_file(which, size, SUFFIX[fmt])
    export_student(student, size, fmt, path)
    run, runtime = load_runtime(path, fmt)
    diff, bound = check_parity(student, run, size)
    if not diff <= bound:
        raise CheckpointError(f"{path}: exported {fmt} logits differ from PyTorch by {diff:.3g} "
                              f"(allowed {bound:.3g}); do not deploy this file")
    x = torch.rand(1, student.config.in_channels, size, size)
    with torch.no_grad():
        torch_ms = median_ms(lambda: student(x), runs)
    xn = x.numpy()
    return ExportResult(path, fmt, size, count_params(student), path.stat().st_size, diff, bound,
                        torch_ms, median_ms(lambda: run(xn), runs), runtime, torch.get_num_threads(),
                        sorted(student.config.classifiers))
